"""Which tests a change can affect, and the stages of one pytest run.

Owns the coverage map: per test, the project's files it executed, each with the digest of its
content when the test ran (collected by `pytest_plugin/codeloop_select.py` during warm runs); what
the map says the files now affect (the tests whose files changed since they ran; nothing it can
tell when a changed file is one no test is known to run); and the selection each stage of a run
hands the plugin: the tests that failed last time, then those the change can affect (and the
tests the map has never seen), then the rest. Reads the sandbox's files; runs nothing.
"""

from __future__ import annotations

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
class Selection:
    """What one stage of a run runs, as the pytest plugin reads it."""

    stage: str  # "failing", "affected", "rest" (the tests not run yet) or "full"
    only: tuple[str, ...] | None = None  # these node ids (None: every collected test) ...
    unknown: bool = False  # ... and every test the map does not know
    known: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # never these: they ran already, on these files
    exitfirst: bool = False
    trace: str = ""  # "always", "cheap" (only where sys.monitoring makes it nearly free), ""

    @property
    def plain(self) -> bool:
        """The whole suite as the user's command runs it: no plugin needed."""
        return (self.only is None and not self.exclude and not self.exitfirst
                and not self.trace)

    def spec(self, root: Path, trace_to: Path | None) -> str:
        """The plugin's instructions, as JSON."""
        return json.dumps({"only": self.only, "unknown": self.unknown, "known": self.known,
                           "exclude": self.exclude, "exitfirst": self.exitfirst,
                           "trace": str(trace_to) if trace_to else None,
                           "trace_mode": self.trace, "root": str(root)})


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


@dataclass
class CoverageMap:
    """Per test: the project's files it executed, with their digests when it ran."""

    tests: dict[str, dict[str, str]] = field(default_factory=dict)
    # every project file's digest when the whole suite last ran on them (the map is complete)
    snapshot: dict[str, str] | None = None
    digests: Digests = field(default_factory=Digests)

    def record(self, root: Path, covered: dict[str, list[str]], whole_suite: bool) -> None:
        """What the plugin traced in a run on the files now; `whole_suite`: every test ran."""
        for test, files in covered.items():
            self.tests[test] = {rel: self.digests.of(root, rel) for rel in files}
        if whole_suite:
            self.snapshot = self.digests.project(root)

    def affected(self, root: Path) -> set[str] | None:
        """The tests the files now may affect: those that executed a file that changed since.
        None when the map cannot tell (no whole-suite trace yet, or a file changed that no
        test is known to execute: a module-level constant, a conftest.py, a new module)."""
        if self.snapshot is None:
            return None
        now = self.digests.project(root)
        changed = {rel for rel in now.keys() | self.snapshot.keys()
                   if now.get(rel) != self.snapshot.get(rel)}
        stale = {test for test, files in self.tests.items()
                 if any(now.get(rel, "-") != digest for rel, digest in files.items())}
        covered = {rel for files in self.tests.values() for rel in files}
        if any(rel not in covered or Path(rel).name == "conftest.py" for rel in changed):
            return None
        return stale


def read_trace(path: Path) -> dict[str, list[str]]:
    """The plugin's trace file ({} when there is none, or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): [str(f) for f in v] for k, v in data.items() if isinstance(v, list)} \
        if isinstance(data, dict) else {}
