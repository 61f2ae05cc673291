"""A file too large to show whole, shown as numbered windows around what matters.

Owns the choice of which lines of a large file the model sees: the lines the failures point to
with the function or class around each, the failing tests' own functions, the definitions the
task (or a failing test) names, and the file's top; merged in file order within a character
budget, each window marked with its line range and every gap said. Reads the sandbox's files
only to learn what the failing tests call; never writes, never decides which files are shown.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from codeloop.core.events import TestFailure

# Window sizes, measured on more-itertools 10.5.0 (more.py: 4,400 lines, 41 characters a line
# on average, about 47 with the number in front). The budget is today's (24,000 + 2,000
# characters a file), about 550 numbered lines, so every size below is a fraction of it:
SCOPE_LINES = 80  # a whole function or class up to 80 lines: about 3,800 characters
AROUND = 15  # in a larger scope, 15 lines each side of the line: about 1,500 characters
NARROW = 4  # when even that does not fit: 4 lines each side, about 430 characters
HEAD_LINES = 30  # a named definition too large to show whole: its first 30 lines, 1,400
HEADER_LINES = 4  # the `def`/`class` lines of a scope shown in part: about 200 characters
TOP_LINES = 30  # the file's docstring and imports: at most 30 lines, about 1,000 characters
GAP_FILL = 3  # a gap this small is shown: its marker would cost about as much
MAX_NAMES = 30  # names a failing test calls that are looked up as definitions

# Python's frames, and the `file:line` of JS/TS, Go and Rust reports (those files are not parsed:
# they get windows around their lines)
_FRAME = re.compile(r'([\w./-]+\.(?:py|[cm]?[jt]sx?|go|rs))(?::(\d+)|", line (\d+))')
_WORD = re.compile(r"[A-Za-z_]\w{2,}")


@dataclass(frozen=True)
class Focus:
    """What matters in the files shown: per file, the lines the failures point to (most
    important first) and the failing tests' qualified names (`Class.test`); the names the task
    mentions; the names the failing tests call."""

    lines: dict[str, list[int]] = field(default_factory=dict)
    tests: dict[str, list[str]] = field(default_factory=dict)
    task_names: frozenset[str] = frozenset()
    called: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Scope:
    name: str  # qualified: Class.method
    start: int  # the first decorator's line
    body: int  # the first line of the body
    end: int


def _relative(root: Path, path: str) -> str | None:
    real_root = root.resolve()
    full = (root / path).resolve()
    if not full.is_relative_to(real_root) or ".git" in full.relative_to(real_root).parts:
        return None
    return full.relative_to(real_root).as_posix()


def focus_of(root: Path, failures: list[TestFailure], task: str = "") -> Focus:
    """The lines, tests and names that matter, from the failures (innermost frame first) and the
    task's text."""
    lines: dict[str, list[int]] = {}
    tests: dict[str, list[str]] = {}
    for failure in failures:
        frames = [m.groups() for m in _FRAME.finditer(failure.details + "\n" + failure.location)]
        for path, colon, quoted in reversed(frames):
            rel = _relative(root, path)
            if rel is not None and int(colon or quoted) not in lines.setdefault(rel, []):
                lines[rel].append(int(colon or quoted))
        path, _, rest = failure.id.partition("::")
        rel = _relative(root, path) if rest else None
        if rel is not None:
            tests.setdefault(rel, []).append(re.sub(r"\[.*\]$", "", rest).replace("::", "."))
    return Focus(lines, tests, frozenset(_WORD.findall(task)), _called(root, tests))


def _called(root: Path, tests: dict[str, list[str]]) -> frozenset[str]:
    """The names the failing tests' functions call: the code under test is among them."""
    names: list[str] = []
    for rel, wanted in tests.items():
        path = root / rel
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        tree = _parse(text)
        scopes = [s for s in _scopes(tree) if s.name in wanted]
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)] if tree else []
        for call in calls:
            if any(s.start <= call.lineno <= s.end for s in scopes):
                func = call.func
                names.append(func.attr if isinstance(func, ast.Attribute) else
                             getattr(func, "id", ""))
    return frozenset(list(dict.fromkeys(n for n in names if n))[:MAX_NAMES])


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError):
        return None


def _scopes(tree: ast.Module | None) -> list[_Scope]:
    """Every function and class of a module, outermost first, with its qualified name."""
    found: list[_Scope] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                found.append(_Scope(prefix + child.name, start, child.body[0].lineno,
                                    child.end_lineno or child.lineno))
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    if tree is not None:
        visit(tree, "")
    return found


def _top_end(tree: ast.Module | None, count: int) -> int:
    """The last line of the file's leading docstring and imports (at most TOP_LINES)."""
    end = 0
    for node in tree.body if tree else []:
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr)):
            break
        end = node.end_lineno or node.lineno
    return min(end or 10, TOP_LINES, count)


# A candidate: the lines it wants, and a smaller set to try when those do not fit.
_Want = tuple[range, range | None]


def _span(first: int, last: int) -> range:
    return range(max(first, 1), last + 1)


def _whole_or_part(scope: _Scope, line: int) -> list[_Want]:
    """A scope whole when it is small; else its header and the lines around `line`."""
    if scope.end - scope.start < SCOPE_LINES:
        return [(_span(scope.start, scope.end), _span(line - NARROW, line + NARROW))]
    header = _span(scope.start, min(scope.body - 1, scope.start + HEADER_LINES - 1))
    return [(_span(line - AROUND, line + AROUND), _span(line - NARROW, line + NARROW)),
            (header, None)]


def _wants(rel: str, tree: ast.Module | None, count: int, focus: Focus
           ) -> tuple[list[_Want], bool]:
    """What this file should show, most important first; and whether anything beyond its top
    matters."""
    scopes = _scopes(tree)
    wants: list[_Want] = []
    for line in focus.lines.get(rel, []):
        inner = [s for s in scopes if s.start <= line <= s.end]
        if inner:
            wants += _whole_or_part(inner[-1], line)
        else:
            wants.append((_span(line - AROUND, line + AROUND), _span(line - NARROW, line + NARROW)))
    by_name = {s.name: s for s in scopes}
    for qualname in focus.tests.get(rel, []):
        scope = by_name.get(qualname)
        if scope is not None:
            wants += [_definition(scope)] + [
                (_span(by_name[outer].start, by_name[outer].start), None)
                for outer in _outer_names(qualname) if outer in by_name]
    wants += _named(scopes, focus.task_names)
    wants.append((_span(1, _top_end(tree, count)), None))
    wants += _named(scopes, focus.called)
    return [(span, part) for span, part in wants if len(span)], len(wants) > 1


def _outer_names(qualname: str) -> list[str]:
    parts = qualname.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _definition(scope: _Scope) -> _Want:
    """A definition from its first line: whole up to SCOPE_LINES, else its first lines."""
    return (_span(scope.start, min(scope.end, scope.start + SCOPE_LINES - 1)),
            _span(scope.start, min(scope.end, scope.start + HEAD_LINES - 1)))


def _named(scopes: list[_Scope], names: frozenset[str]) -> list[_Want]:
    return [_definition(s) for s in scopes if s.name.rsplit(".", 1)[-1] in names]


def _runs(shown: set[int], count: int) -> list[tuple[int, int]]:
    """`shown` as (first, last) runs in file order, small gaps filled."""
    runs: list[tuple[int, int]] = []
    for line in sorted(n for n in shown if 1 <= n <= count):
        if runs and line - runs[-1][1] <= GAP_FILL + 1:
            runs[-1] = (runs[-1][0], line)
        else:
            runs.append((line, line))
    return runs


def _gap(first: int, last: int) -> str:
    return f"… lines {first:,}–{last:,} not shown …"


def render(lines: list[str], shown: set[int]) -> str:
    """The windows over `lines` (1-based `shown`), numbered as `read_file` numbers lines."""
    parts: list[str] = []
    after = 1
    for first, last in _runs(shown, len(lines)):
        if first > after:
            parts.append(_gap(after, first - 1))
        parts.append(f"[lines {first:,}–{last:,}]" if last > first else f"[line {first:,}]")
        parts += [f"{n:>5}  {lines[n - 1]}" for n in range(first, last + 1)]
        after = last + 1
    if after <= len(lines):
        parts.append(_gap(after, len(lines)))
    return "\n".join(parts)


def windows(rel: str, text: str, focus: Focus, budget: int) -> str | None:
    """`text` as windows of at most `budget` characters around what `focus` says matters in
    `rel`; None when nothing in it does beyond its top (then the caller's default is better)."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if text.endswith("\n"):
        lines.pop()
    tree = _parse(text) if rel.endswith(".py") else None
    wants, focused = _wants(rel, tree, len(lines), focus)
    if not focused:
        return None
    shown: set[int] = set()
    for span, part in wants:
        for lines_wanted in (span, part):
            if lines_wanted is not None and len(render(lines, shown | set(lines_wanted))) <= budget:
                shown |= set(lines_wanted)
                break
    return render(lines, shown) if shown else None
