"""One pytest run after a change, in stages, each stopping the run when it fails: the tests that
failed last time (their verdict goes back at once), then the tests the change can affect (the
coverage map's, and the tests it has never seen), then the rest of the suite, unless `verify`
is "affected". Together the stages run every test once, so a run that goes through all of them
has the results of a full run.

Owns the choice of each stage's selection and tracing, the coverage map's updates from the
traces, and the merging of the stages' results into one `TestResult`. Running a stage is the
test service's (`TestService._one`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from codeloop.testrunner.impact import CoverageMap, Selection
from codeloop.testrunner.run import TestResult

NO_TESTS_RAN = 5  # pytest's exit code when nothing was collected or everything deselected
STAGES = ("failing", "affected", "rest")


def _passed(result: TestResult) -> bool:
    """A stage that failed ends the run; one that selected nothing did not fail."""
    return result.passed or (result.exit_code == NO_TESTS_RAN and not result.ran
                             and not result.failures)


class Stages:
    """The session's failing tests and coverage map, and the stages of each run."""

    def __init__(self, fail_fast: bool, verify: str) -> None:
        self.fail_fast = fail_fast
        self.verify = verify
        self.failed_last: list[str] = []
        self.coverage = CoverageMap()

    def selection(self, stage: str, root: Path, ran: set[str], baseline: bool
                  ) -> Selection | None:
        """The selection of `stage` after the tests in `ran` (None: the stage is skipped)."""
        whole = "always" if self.coverage.snapshot is None and not baseline else "cheap"
        if stage == "failing":
            if not self.failed_last:
                return None
            return Selection("failing", only=tuple(self.failed_last), exitfirst=self.fail_fast,
                             trace="always")
        affected = self.coverage.affected(root) if stage == "affected" or self.verify == \
            "affected" else None
        if stage == "affected":
            if affected is None:
                return None
            return Selection("affected", only=tuple(sorted(affected - ran)), unknown=True,
                             known=tuple(sorted(self.coverage.tests)), exclude=tuple(sorted(ran)),
                             trace="always")
        if self.verify == "affected" and affected is not None:
            return None  # the change's tests ran: with verify = "affected", that is enough
        return Selection("rest" if ran else "full", exclude=tuple(sorted(ran)), trace=whole)

    async def run(self, root: Path, run_one: Callable[[Selection], Awaitable[TestResult]],
                  baseline: bool) -> TestResult:
        """The stages in order, each with `run_one`, stopping at the first that fails."""
        done: list[tuple[Selection, TestResult]] = []
        ran: set[str] = set()
        for stage in STAGES:
            selection = self.selection(stage, root, ran, baseline)
            if selection is None:
                continue
            result = await run_one(selection)
            done.append((selection, result))
            ran |= set(result.ran)
            if result.trace:
                self.coverage.record(root, result.trace, whole_suite=False)
            if not _passed(result) or result.timed_out:
                break
        merged = merge(done)
        if merged.scope == "full" and all(r.trace or not r.ran for _, r in done):
            self.coverage.record(root, {}, whole_suite=True)  # every test traced on these files
        self.failed_last = [f.id for f in merged.failures]
        return merged


def merge(done: list[tuple[Selection, TestResult]]) -> TestResult:
    """The stages' results as one: counts added up, failures and output in order; `scope` says
    how far the run went ("full" when it reached the end of the suite)."""
    last_selection, last = done[-1]
    stages = [s.stage for s, _ in done]
    scope = "full" if last_selection.stage in ("full", "rest") and _passed_or_last(done) \
        else "+".join(stages)
    failed = next((r for _, r in done if not _passed(r) or r.timed_out), None)
    if len(done) == 1:
        last.scope = scope
        if failed is None and last_selection.stage != "full":
            last.exit_code = 0  # (a selection that had nothing to run)
        return last
    counts: dict[str, int] = dict.fromkeys(("failed", "errors", "passed", "skipped"), 0)
    for _, result in done:  # (in the order pytest's summary line names them)
        for kind, count in result.counts.items():
            counts[kind] = counts.get(kind, 0) + count
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no tests ran"
    duration = sum(r.duration_ms for _, r in done)
    return TestResult(
        exit_code=failed.exit_code if failed else 0, counts=counts,
        summary=f"{summary} in {duration / 1000:.2f}s ({', then '.join(stages)})",
        failures=[f for _, r in done for f in r.failures], duration_ms=round(duration, 3),
        timed_out=any(r.timed_out for _, r in done),
        output="\n".join(r.output for _, r in done), ran=[t for _, r in done for t in r.ran],
        trace={k: v for _, r in done for k, v in r.trace.items()}, scope=scope)


def _passed_or_last(done: list[tuple[Selection, TestResult]]) -> bool:
    """Every stage before the last passed (so the last one's tests complete the suite)."""
    return all(_passed(r) for _, r in done[:-1])
