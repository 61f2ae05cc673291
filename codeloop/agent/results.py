"""The session's test runs as events, and which commit's files the latest result is of.

Owns `test.start`/`test.output`/`test.done` for each run in the sandbox, and the results by
commit, so that after an /undo the result is again that of the files now, never that of the
undone ones; and a baseline still confirming the remembered one, which every later run waits
for but a patch's, which stops it. How a run runs (cold, warm, failures first) is the test
service's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from codeloop.agent.baselines import same_verdict
from codeloop.agent.clock import Totals
from codeloop.context.prompt import test_report
from codeloop.core.events import Notice, TestDone, TestOutput, TestStart
from codeloop.core.kinds import NoticeKind
from codeloop.core.stream import EventStream
from codeloop.testrunner.run import TestResult
from codeloop.testrunner.service import TestService
from codeloop.workspace.sandbox import Sandbox


class TestRuns:
    """Runs the session's test command in the sandbox, for a turn (0: the baseline)."""

    __test__ = False  # not a pytest test class

    def __init__(self, tests: TestService, sandbox: Sandbox, command: str,
                 events: EventStream, totals: Totals) -> None:
        self.tests = tests
        self.sandbox = sandbox
        self.command = command
        self.events = events
        self.totals = totals

    async def run(self, turn: int, meanwhile: Callable[[], None] | None = None) -> TestResult:
        """One run; `meanwhile` is called once the tests are under way (at their first output,
        or at their end if they print nothing), beside them."""
        self.events.emit(TestStart(turn=turn, command=self.command))
        mode = self.tests.label
        pending = [meanwhile] if meanwhile else []

        def output(text: str) -> None:
            self.events.emit(TestOutput(turn=turn, text=text))
            while pending:
                pending.pop()()

        with self.sandbox.test_run():  # (what it writes there is the session's own)
            result = await self.tests.run(self.sandbox.path, output, baseline=turn == 0)
        while pending:
            pending.pop()()
        if turn == 0:
            self.totals.baseline_ran(result.duration_ms)
        self.events.emit(TestDone(
            turn=turn, exit_code=result.exit_code, passed=result.passed, summary=result.summary,
            counts=result.counts, failures=result.failures, duration_ms=result.duration_ms,
            timed_out=result.timed_out, output=result.output, mode=mode, scope=result.scope))
        return result


class Results:
    """The latest test result, and the results of the commits tested so far."""

    def __init__(self, runs: TestRuns, baseline: TestResult, commit: str,
                 confirming: asyncio.Future[TestResult] | None = None) -> None:
        self.runs = runs
        self.latest = baseline
        self._base = commit
        self._tested_at = commit  # the commit `latest` is of
        self._by_commit = {commit: baseline}
        # the baseline still running, `baseline` being the last session's on the same files
        self.confirming = confirming
        self.note = ""  # what the model is told of it, with its next feedback
        if confirming is not None:
            runs.events.emit(Notice(kind=NoticeKind.BASELINE, message=(
                f"tests: the last baseline on these files ({baseline.summary}) goes to the "
                "model now; this session's baseline runs meanwhile to confirm it")))

    async def settle(self) -> None:
        """Wait for a baseline still running (no run or change may overlap it); when it tells
        the model something else than the remembered result did, `note` says what."""
        if self.confirming is None:
            return
        result = await self.confirming
        self.confirming = None
        if not same_verdict(result, self._by_commit[self._base]):
            self.note = ("The baseline test run, which was still going when you were first "
                         "asked (you were shown the last session's result on the same files), "
                         "has finished with another result: " + test_report(result))
        self._by_commit[self._base] = result
        if self._tested_at == self._base:
            self.latest = result

    async def give_way(self) -> None:
        """A patch is ready: a baseline still confirming the remembered one is stopped, not
        waited for. The patch's own run is what the turn's verdict rests on, and the remembered
        result (of the same files and command) stands as the baseline; a confirmation that
        finished first was free, and is taken as `settle` takes it; one that the warm runner's
        self-check compares with (a runner not yet trusted) is waited for."""
        if (self.confirming is not None and not self.confirming.done()
                and not self.runs.tests.self_checking):
            await self.abandon()
            self.runs.events.emit(Notice(kind=NoticeKind.BASELINE, message=(
                "tests: this session's baseline was stopped before it finished, so that the "
                "patch's run goes first; the last baseline on these files "
                f"({self._by_commit[self._base].summary}) stands")))
        await self.settle()

    def take_note(self) -> str:
        note, self.note = self.note, ""
        return note

    async def abandon(self) -> None:
        """The session ends or is interrupted: a baseline still running is stopped."""
        if self.confirming is not None:
            running, self.confirming = self.confirming, None
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running

    async def run(self, turn: int, meanwhile: Callable[[], None] | None = None) -> TestResult:
        """A run of the files now; `latest` until `tested` says which commit they are."""
        await self.settle()
        self.latest = await self.runs.run(turn, meanwhile)
        return self.latest

    def tested(self, commit: str) -> None:
        """`latest` is that of `commit`'s files: remembered, for an /undo back to it."""
        self._tested_at = commit
        self._by_commit[commit] = self.latest

    def known_for(self, commit: str) -> bool:
        """Whether `latest` is the result of `commit`'s files."""
        return commit == self._tested_at

    def back_at(self, commit: str) -> None:
        """After an /undo: the result of that commit's files, when a run of them finished."""
        if commit in self._by_commit:
            self.latest = self._by_commit[commit]
            self._tested_at = commit
