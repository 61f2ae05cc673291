"""Which tests a change can affect, and the stages of one pytest run.

Owns the coverage map: per test, the project's functions it ran, each with the digest of its
source when the test ran (collected by `pytest_plugin/codeloop_select.py` during warm runs); what
the map says the files now affect (the tests that ran a function that changed since; nothing it
can tell when a changed file is one no test is known to run); and the selection each stage of a run
hands the plugin: the tests that failed last time, then those the change can affect (and the
tests the map has never seen), then the rest. Reads the sandbox's files; runs nothing.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

PLUGIN_DIR = Path(__file__).with_name("pytest_plugin")
PLUGIN = "codeloop_select"
# directories that hold no project module (a venv is told by its pyvenv.cfg)
_NOT_PROJECT = {"__pycache__", "node_modules", "site-packages"}


@dataclass(frozen=True)
class Group:
    """One stage of a run: the tests it runs, as the pytest plugin reads it."""

    name: str  # "failing", "affected", "rest" (the tests no earlier group took) or "full"
    only: tuple[str, ...] | None = None  # these node ids (None: every test) ...
    unknown: bool = False  # ... and every test the map does not know
    known: tuple[str, ...] = ()
    trace: str = ""  # "always", "cheap" (only where sys.monitoring makes it nearly free), ""


@dataclass(frozen=True)
class Selection:
    """What one pytest run runs: its groups in order, each stopping the run if it fails."""

    groups: tuple[Group, ...]
    exitfirst: bool = False

    @property
    def plain(self) -> bool:
        """The whole suite as the user's command runs it: no plugin needed."""
        return (len(self.groups) == 1 and self.groups[0].only is None
                and not self.groups[0].trace and not self.exitfirst)

    def untraced(self) -> Selection:
        """The same stages, tracing nothing (a cold run: tracing is the warm runner's)."""
        return Selection(tuple(dataclasses.replace(g, trace="") for g in self.groups),
                         self.exitfirst)

    def spec(self, root: Path, trace_to: Path, report_to: Path) -> str:
        """The plugin's instructions, as JSON."""
        return json.dumps({"groups": [dataclasses.asdict(g) for g in self.groups],
                           "exitfirst": self.exitfirst, "trace": str(trace_to),
                           "report": str(report_to), "root": str(root)})

    def scope(self, report: dict) -> str:
        """How far a run went, from the plugin's report: "full" when it reached the end of the
        suite, else the groups that ran ("failing", "failing+affected", ...)."""
        ran = [g for g in report.get("groups") or () if isinstance(g, str)]
        whole = self.groups[-1].only is None and not report.get("stopped")
        return "full" if whole else "+".join(ran or [self.groups[0].name])


class Digests:
    """Content digests of the project's Python files, recomputed only when a file's size or
    modification time changed."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, int, str]] = {}

    def of(self, root: Path, rel: str) -> str:
        path = root / rel
        try:
            stat = path.stat()
        except OSError:
            return "-"  # gone
        seen = self._known.get(rel)
        if seen and seen[:2] == (stat.st_size, stat.st_mtime_ns):
            return seen[2]
        try:
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
        except OSError:
            return "-"
        self._known[rel] = (stat.st_size, stat.st_mtime_ns, digest)
        return digest

    def project(self, root: Path) -> dict[str, str]:
        """Every Python file of the project (not a venv's, not a dot directory's)."""
        found: dict[str, str] = {}
        for top, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _NOT_PROJECT
                       and not (Path(top) / d / "pyvenv.cfg").exists()]
            for name in files:
                if name.endswith(".py"):
                    rel = (Path(top) / name).relative_to(root).as_posix()
                    found[rel] = self.of(root, rel)
        return found


MODULE = "<module>"  # a file's code outside its functions and methods (run at import)
FILE = "<file>"


def units_of(text: str) -> dict[str, str]:
    """A digest of each function's and method's source (decorators included), named as the
    plugin names what runs ("f", "C.m", "C.Inner.m"), and of the rest of the file (`MODULE`):
    a function that moved but did not change keeps its digest. A file that does not parse is
    one unit."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {MODULE: _digest(text)}
    lines = text.splitlines(keepends=True)
    units: dict[str, str] = {}
    inside: set[int] = set()

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                last = node.end_lineno or node.lineno
                units[prefix + node.name] = _digest("".join(lines[first - 1:last]))
                inside.update(range(first, last + 1))

    visit(tree.body, "")
    # (blank lines are no code: a function moved down by one changes no module code)
    units[MODULE] = _digest("".join(line for n, line in enumerate(lines, 1)
                                    if n not in inside and line.strip()))
    return units


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class CoverageMap:
    """Per test, per project file it executed: the file's digest when the test ran, and the
    digests of the functions it ran there and of the file's module-level code."""

    tests: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    # every project file's digest when the whole suite last ran on them (the map is complete)
    snapshot: dict[str, str] | None = None
    digests: Digests = field(default_factory=Digests)
    _units: dict[str, dict[str, str]] = field(default_factory=dict)  # file digest -> units

    def units(self, root: Path, rel: str) -> tuple[str, dict[str, str]]:
        """(the file's digest, its units' digests), parsed once per content."""
        digest = self.digests.of(root, rel)
        if digest not in self._units:
            try:
                text = (root / rel).read_text(encoding="utf-8", errors="surrogateescape")
            except OSError:
                text = ""
            self._units[digest] = units_of(text)
        return digest, self._units[digest]

    def record(self, root: Path, covered: dict[str, dict[str, list[str]]],
               whole_suite: bool) -> None:
        """What the plugin traced in a run on the files now; `whole_suite`: every test ran."""
        for test, files in covered.items():
            entry: dict[str, dict[str, str]] = {}
            for rel, ran in files.items():
                digest, units = self.units(root, rel)
                # (a unit the parse does not name, a module-level lambda, is module code)
                entry[rel] = {FILE: digest, MODULE: units[MODULE],
                              **{u: units.get(u, units[MODULE]) for u in ran}}
            self.tests[test] = entry
        if whole_suite:
            self.snapshot = self.digests.project(root)

    def _stale(self, root: Path, entry: dict[str, dict[str, str]]) -> bool:
        for rel, seen in entry.items():
            digest, units = self.units(root, rel)
            if digest != seen[FILE] and any(
                    units.get(u, units[MODULE]) != d for u, d in seen.items() if u != FILE):
                return True
        return False

    def affected(self, root: Path) -> set[str] | None:
        """The tests the files now may affect: those that ran a function (or a file's module
        code) that changed since. None when the map cannot tell (no whole-suite trace yet, or
        a file changed that no test is known to run: a conftest.py, a new module)."""
        if self.snapshot is None:
            return None
        now = self.digests.project(root)
        changed = {rel for rel in now.keys() | self.snapshot.keys()
                   if now.get(rel) != self.snapshot.get(rel)}
        covered = {rel for files in self.tests.values() for rel in files}
        if any(rel not in covered or Path(rel).name == "conftest.py" for rel in changed):
            return None
        return {test for test, entry in self.tests.items() if self._stale(root, entry)}

    def to_json(self) -> str:
        return json.dumps({"tests": self.tests, "snapshot": self.snapshot})

    @classmethod
    def from_json(cls, text: str) -> CoverageMap:
        """A saved map (raises ValueError when it is not one)."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
            raise ValueError("not a coverage map")
        return cls(tests=data["tests"], snapshot=data.get("snapshot"))


def read_trace(path: Path) -> dict[str, dict[str, list[str]]]:
    """The plugin's trace file ({} when there is none, or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(test): {str(rel): [str(u) for u in units] for rel, units in files.items()}
            for test, files in data.items() if isinstance(files, dict)}


def hand_over(selection: Selection, cwd: Path, scratch: Path, env: dict[str, str],
              warm: bool) -> list[str]:
    """The pytest arguments and environment (`env`, changed) that hand `selection` to the
    plugin (the warm runner's child loads it itself); its trace and report go to `scratch`."""
    spec = scratch / "select.json"
    spec.write_text(selection.spec(cwd.resolve(), scratch / "trace.json",
                                   scratch / "stages.json"), encoding="utf-8")
    env["CODELOOP_SELECT"] = str(spec)
    if warm:
        return []
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_DIR), *filter(None, [
        env.get("PYTHONPATH")])])
    return ["-p", PLUGIN]


def read_back(selection: Selection, scratch: Path
              ) -> tuple[dict[str, dict[str, list[str]]], bool, str]:
    """What the plugin wrote of a run: (the trace, whether every test that ran was traced, how
    far the run went: `Selection.scope`)."""
    trace = read_trace(scratch / "trace.json")
    try:
        report = json.loads((scratch / "stages.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # no report: the run ended before pytest did (a timeout, a crash): it went no further
        # than its first stage, for all codeloop knows
        return trace, False, selection.groups[0].name
    return trace, bool(report.get("traced_all")) and bool(trace), selection.scope(report)
