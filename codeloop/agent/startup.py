"""Start-up, overlapped: (a) the sandbox, (b) the baseline tests, while the model connection
opens and the warm test runner gets ready beside them; with the baseline remembered from the
last session on the same files, the first request need not wait for this one's.

Owns the order of the overlap and what a Ctrl-C during it leaves: a sandbox that git was making
is still reported, a baseline run is stopped before the files are reset. Never emits events of
its own: the callbacks do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from codeloop.agent import baselines
from codeloop.agent.results import TestRuns
from codeloop.testrunner.run import TestResult
from codeloop.testrunner.service import TestService
from codeloop.workspace.git import preload_gitpython
from codeloop.workspace.sandbox import Sandbox


async def sandbox_from(creating: Future[Sandbox], ready: Callable[[Sandbox], None]) -> Sandbox:
    """The sandbox being made (started by the CLI, it usually is by now), handed to `ready`."""
    if not creating.done():
        try:
            await asyncio.wrap_future(creating)  # (it cannot be cancelled)
        except asyncio.CancelledError:  # let git finish: the sandbox is then reported
            ready(creating.result())
            raise
    ready(creating.result())
    return creating.result()


@dataclass
class Baseline:
    """What the first request is built on: the baseline result, or (`confirming`) the last
    session's on the same files and command while this session's own run confirms it."""

    result: TestResult
    confirming: asyncio.Future[TestResult] | None = None


async def baseline(sandbox: Sandbox, tests: TestService, runs: TestRuns,
                   connect_and_warm: Callable[[], asyncio.Task[None]]) -> Baseline:
    """The baseline run; `connect_and_warm` (which returns the runner's warm-up) overlaps it,
    or goes first when a self-check passed before, so that the baseline itself runs warm. With
    a remembered result for these files and this command, it returns at once with that result,
    the run going on (`Baseline.confirming`; the caller stops it if it ends first)."""
    warming: asyncio.Task[None] | None = None
    running: asyncio.Future[TestResult] | None = None
    known = baselines.remembered(sandbox.path, runs.command)
    try:
        trusted = tests.trusted_before(sandbox.path)
        if trusted:
            warming = connect_and_warm()
            if known is None:
                await warming
        running = asyncio.ensure_future(_once_warm(warming, runs) if trusted else runs.run(0))
        running.add_done_callback(
            lambda done: done.cancelled() or done.exception() is not None
            or baselines.remember(sandbox.path, runs.command, done.result()))
        await asyncio.sleep(0)  # the tests' process starts, then (unless the baseline waited
        # for the runner) connecting and warming, which overlap the run
        warming = warming or connect_and_warm()
        if not trusted and tests.wanted:  # the baseline runs cold; beside it, once warm, the
            # runner runs it too (in a copy) and must match it to be trusted
            tests.begin_self_check(warming, running, sandbox)
        preload_gitpython()  # the first commit's import, while the main thread idles
        if known is not None:
            return Baseline(known, running)
        return Baseline(await running)
    except asyncio.CancelledError:
        if warming is not None:
            warming.cancel()
        if running is not None:  # its process group is gone before the files are reset
            await stop(running)
        raise


async def _once_warm(warming: asyncio.Task[None] | None, runs: TestRuns) -> TestResult:
    if warming is not None:
        await asyncio.shield(warming)
    return await runs.run(0)


async def stop(running: asyncio.Future[TestResult]) -> None:
    """Stop a test run and wait until its processes are gone."""
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
