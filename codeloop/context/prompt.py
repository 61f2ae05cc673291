"""What the model is told: system instructions, project context, the task, test feedback.

Owns the wording and the layout of the conversation: a stable opening (system text, project
instructions, repo map) followed by append-only turns. Reads files from the sandbox; never writes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path, PurePosixPath

from codeloop.context.repomap import repo_map, tracked_files
from codeloop.context.windows import Focus, focus_of, windows
from codeloop.core.bounded import bound
from codeloop.testrunner.run import TestResult

FILE_CHARS = 24_000
FILE_TAIL = 2000  # a file up to FILE_CHARS + FILE_TAIL is shown whole; that is also the budget
CONTEXT_FILES_CHARS = 60_000

SYSTEM_TOOLS = """\
You are codeloop, a coding agent working in a git sandbox of the user's repository. Your job is \
to make the user's task done and the project's tests pass, with the smallest correct change.

Edit files with the `apply_patch` tool, or write the patch in your reply in a fenced block. \
A patch is a V4A patch (*** Begin Patch, then *** Update File: PATH with @@ lines naming the \
def or class of each change, lines of context, - and + lines; *** Add File: PATH or *** Delete \
File: PATH; then *** End Patch) or a unified diff (--- a/PATH, +++ b/PATH, @@ headers and about \
3 lines of unchanged context; --- /dev/null creates a file, +++ /dev/null deletes one). Copy \
context exactly from the file and use paths relative to the repository root. You may also use \
`read_file`, `search` and `list_files` to look before you edit. After each patch the tests run \
and you get the result. Do not change tests unless the task asks for it. When the task is done, \
reply without a patch."""

SYSTEM_TEXT = """\
You are codeloop, a coding agent working in a git sandbox of the user's repository. Your job is \
to make the user's task done and the project's tests pass, with the smallest correct change.

Edit files only with unified diffs in fenced ```diff blocks. Use paths relative to the \
repository root (--- a/PATH, +++ b/PATH), hunks with @@ headers and about 3 lines of unchanged \
context copied exactly from the file. Create a file with --- /dev/null; delete one with \
+++ /dev/null. Several files may be changed in one reply. After your reply the patch is applied \
and the tests run; you get the result. Do not change tests unless the task asks for it. When \
the task is done, reply without a diff."""


def system_prompt(with_tools: bool) -> str:
    return SYSTEM_TOOLS if with_tools else SYSTEM_TEXT


def local_imports(root: Path, rel: str) -> list[str]:
    """Repository files that the Python file `rel` imports (absolute and relative imports)."""
    try:
        tree = ast.parse((root / rel).read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    package = PurePosixPath(rel).parent.parts
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[:len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            if base:
                modules.append(base)
                modules.extend(f"{base}.{alias.name}" for alias in node.names)
    found = [_module_file(root, module) for module in modules]
    return list(dict.fromkeys(f for f in found if f and f != rel))


def _module_file(root: Path, module: str) -> str | None:
    base = module.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py", f"src/{base}.py",
                      f"src/{base}/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def files_for_failures(root: Path, result: TestResult) -> list[str]:
    """Repository files the failures point to: traceback locations (Python, JS/TS, Go, Rust),
    then the project modules the failing tests import (through a package's `__init__.py` to the
    module behind it; a JS/TS test's relative imports; a Go test's package files)."""
    real_root = root.resolve()
    chosen: list[str] = []
    texts = [f.details + "\n" + f.location for f in result.failures] or [result.output]
    for text in texts:
        for match in re.finditer(r"([\w./-]+\.(?:py|[cm]?[jt]sx?|go|rs))(?::\d+|\", line \d+)",
                                 text):
            path = (root / match.group(1)).resolve()
            if path.is_file() and path.is_relative_to(real_root):
                rel = path.relative_to(real_root).as_posix()
                if rel not in chosen and ".git" not in Path(rel).parts:
                    chosen.append(rel)
    for test_file in [c for c in chosen if "test" in Path(c).name]:
        found_files = local_imports(root, test_file) if test_file.endswith(".py") else []
        source = (root / test_file).read_text(encoding="utf-8", errors="replace")
        for spec in re.findall(r"""(?:require\(|from|import)\s*['"](\.\.?/[^'"]+)['"]""",
                               source if re.search(r"\.[cm]?[jt]sx?$", test_file) else ""):
            base = (root / test_file).parent / spec
            found_files += [(c.resolve().relative_to(real_root).as_posix()) for c in (
                base, *(base.with_name(base.name + s) for s in (".js", ".ts", ".mjs", ".tsx")),
                base / "index.js", base / "index.ts") if c.is_file()
                and c.resolve().is_relative_to(real_root)][:1]
        if test_file.endswith("_test.go"):  # the code under test is in the same package
            found_files += sorted(p.relative_to(real_root).as_posix() for p in (
                real_root / test_file).parent.glob("*.go") if not p.name.endswith("_test.go"))[:5]
        for found in found_files:
            following = local_imports(root, found) if found.endswith("__init__.py") else []
            for rel in (found, *following):
                if rel not in chosen:
                    chosen.append(rel)
    return chosen


def file_block(root: Path, rel: str, focus: Focus | None = None) -> str:
    """A file as the model reads it: whole when it fits, else numbered windows around what
    `focus` says matters (head and tail when nothing in it does)."""
    text = (root / rel).read_text(encoding="utf-8", errors="replace")
    shown = None
    if focus is not None and len(text) > FILE_CHARS + FILE_TAIL:
        shown = windows(rel, text, focus, FILE_CHARS + FILE_TAIL)
    if shown is None:
        return f"### {rel}\n```\n{bound(text, FILE_CHARS, FILE_TAIL)}\n```"
    return (f"{window_header(rel, text)} shown as windows around what matters; each line "
            "follows its number and two spaces, which are not part of the file)\n"
            f"```\n{shown}\n```")


def window_header(rel: str, text: str) -> str:
    """The start of a windowed file's block: its path and current size."""
    count = text.count("\n") + (not text.endswith("\n"))
    return f"### {rel}\n({count:,} lines, {len(text):,} characters:"


def files_section(root: Path, rels: list[str], focus: Focus | None = None) -> str:
    blocks, used = [], 0
    for rel in rels:
        block = file_block(root, rel, focus)
        if used + len(block) > CONTEXT_FILES_CHARS:
            blocks.append(f"(further files left out for size: {', '.join(rels[len(blocks):])})")
            break
        blocks.append(block)
        used += len(block)
    return "\n\n".join(blocks)


# the stages of a run that did not reach the end of the suite (`TestResult.scope`)
_STAGE_WORDS = {"failing": "the tests that failed last time",
                "affected": "the tests the change can affect"}


def _partial(result: TestResult) -> str:
    ran = " and then ".join(_STAGE_WORDS.get(stage, stage) for stage in result.scope.split("+"))
    if result.passed:  # (verify = "affected")
        return f" Only {ran} ran, and they pass; the rest of the suite was not run."
    return f" Only {ran} ran; the rest of the suite runs once they pass."


def test_report(result: TestResult, limit: int = 20_000) -> str:
    """The test result as the model reads it: failures with messages, not 10,000 lines; at most
    about `limit` characters, head and tail kept."""
    head = f"Test command result: {result.summary} (exit code {result.exit_code})."
    if result.scope != "full":
        head += _partial(result)
    if result.timed_out:
        return head + "\nThe test run was killed at its timeout. Output so far:\n" + bound(
            result.output, limit // 2, limit // 2)
    if result.passed:
        return head
    if result.failures:
        shown = result.failures[:20]
        parts = [head, "Failing tests:"]
        for failure in shown:
            parts.append(f"- {failure.id} ({failure.location}): {failure.message}\n"
                         f"{failure.details}")
        if len(result.failures) > len(shown):
            parts.append(f"... and {len(result.failures) - len(shown)} more failures")
        return bound("\n".join(parts), limit * 3 // 4, limit // 4)
    return head + "\nOutput:\n" + bound(result.output, limit // 2, limit // 2)


def opening_messages(root: Path, task: str, baseline: TestResult, with_tools: bool,
                     pinned_files: list[str]) -> list[dict[str, str]]:
    """The first request: stable system text and project context, then the task."""
    files = tracked_files(root)
    context = []
    agents = root / "AGENTS.md"
    if agents.is_file():
        context.append("Project instructions (AGENTS.md):\n"
                       + bound(agents.read_text(encoding="utf-8", errors="replace"), 8000, 2000))
    context.append("Repository map (files, top-level definitions):\n" + repo_map(root))
    task_text = [f"Task: {task}", "", "Baseline test run before any change:",
                 test_report(baseline)]
    mentioned = [f for f in files if f in task][:10]  # paths the task names
    relevant = files_for_failures(root, baseline) + [
        p for p in [*pinned_files, *mentioned] if p in files]
    if relevant:
        task_text += ["", "Files the failures point to (current content):",
                      files_section(root, list(dict.fromkeys(relevant)),
                                    focus_of(root, baseline.failures, task))]
    return [
        {"role": "system", "content": system_prompt(with_tools)},
        {"role": "user", "content": "\n\n".join(context)},
        {"role": "user", "content": "\n".join(task_text)},
    ]
