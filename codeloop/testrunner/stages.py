"""One pytest run after a change, in stages, each stopping the run when it fails: the tests that
failed last time (their verdict goes back at once), then the tests the change can affect (the
coverage map's, and the tests it has never seen), then the rest of the suite, unless `verify`
is "affected". Together the stages run every test once, so a run that goes through all of them
has the results of a full run.

Owns the choice of each stage's selection and tracing, the coverage map's updates from the
traces (kept per project and command across sessions), and the merging of the stages' results
into one `TestResult`. Running a stage is the
test service's (`TestService._one`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from codeloop.core.dirs import cache_dir
from codeloop.testrunner.impact import CoverageMap, Group, Selection
from codeloop.testrunner.run import TestResult


class Stages:
    """The session's failing tests and coverage map, and the stages of each run."""

    def __init__(self, fail_fast: bool, verify: str, command: str) -> None:
        self.fail_fast = fail_fast
        self.verify = verify
        self.command = command
        self.failed_last: list[str] = []
        self.coverage = CoverageMap()
        self._memo: Path | None = None

    def recall(self, project: Path) -> None:
        """Start from the map an earlier session left for this project and command (its
        digests say what of it still holds); from now on it is kept there too."""
        if self._memo is not None:
            return
        key = hashlib.sha1(json.dumps([self.command, str(project.resolve())]).encode())
        self._memo = cache_dir() / "coverage" / f"{key.hexdigest()}.json"
        with contextlib.suppress(OSError, ValueError, TypeError):
            self.coverage = CoverageMap.from_json(self._memo.read_text(encoding="utf-8"))

    def _keep(self) -> None:
        if self._memo is not None:  # best effort: a map not kept is traced again next time
            with contextlib.suppress(OSError):
                self._memo.parent.mkdir(parents=True, exist_ok=True)
                self._memo.write_text(self.coverage.to_json(), encoding="utf-8")

    def selection(self, root: Path, baseline: bool) -> Selection:
        """The stages of the next run on the files now."""
        groups: list[Group] = []
        if self.failed_last and not baseline:
            groups.append(Group("failing", only=tuple(self.failed_last), trace="always"))
        affected = None if baseline else self.coverage.affected(root)
        if affected is not None:
            groups.append(Group("affected", only=tuple(sorted(affected)), unknown=True,
                                known=tuple(sorted(self.coverage.tests)), trace="always"))
        if self.verify == "full" or affected is None:
            # the whole suite traced once where tracing is dear (3.11), to make the map whole
            whole = "always" if self.coverage.snapshot is None and not baseline else "cheap"
            groups.append(Group("rest" if groups else "full", trace=whole))
        return Selection(tuple(groups), exitfirst=self.fail_fast and bool(self.failed_last))

    async def run(self, root: Path, run_one: Callable[[Selection], Awaitable[TestResult]],
                  baseline: bool) -> TestResult:
        """The run, its map updated from what it traced."""
        result = await run_one(self.selection(root, baseline))
        if result.trace:
            self.coverage.record(root, result.trace,
                                 whole_suite=result.scope == "full" and result.traced_all)
            self._keep()
        self.failed_last = [f.id for f in result.failures]
        return result
