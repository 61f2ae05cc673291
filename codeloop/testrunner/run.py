"""Running the project's test command in the sandbox, and reading its results.

Owns the process (a shell in a session of its own, under `reaper.py` on Linux: every process
it started is ended when it exits, at the timeout or on a cancel), bounded output (head and
tail kept, the middle elided with a count), and the results: for pytest from its JUnit XML
(`junit.py`), other runners' from their reports (`reports.py`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import shlex
import signal
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from codeloop.core.bounded import BoundedText
from codeloop.core.events import TestFailure
from codeloop.testrunner.impact import Selection, hand_over, read_back
from codeloop.testrunner.junit import WithoutJunitNotice, parse_junit, pytest_extras
from codeloop.workspace.git import git_environment

REAPER = Path(__file__).with_name("reaper.py")
NO_TESTS_RAN = 5  # pytest's exit code when nothing was collected or everything deselected
DRAIN_GRACE_S = 1.0  # after the test command exits: for its output still on the way
T = TypeVar("T")
_PYTEST_CMD = re.compile(r"^\s*(\S*python[\d.]*\s+-m\s+pytest|\S*pytest|uv\s+run\s+pytest)(\s|$)")
_SUMMARY = re.compile(  # (pytest 9 counts unittest's subTest as "N subtests passed")
    r"(?:\d+ (?:subtests )?(?:passed|failed|errors?|skipped|xfailed|xpassed|deselected|"
    r"warnings?)"
    r"(?:, )?)+(?: in [\d.]+s)?"
)



@dataclass
class TestResult:
    """What one run of the test command produced."""

    __test__ = False  # not a pytest test class

    exit_code: int
    summary: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[TestFailure] = field(default_factory=list)
    duration_ms: float = 0.0
    timed_out: bool = False
    output: str = ""
    ran: list[str] = field(default_factory=list)  # the node ids of every test that ran
    # per test: the project files it ran, and in each the functions (codeloop's pytest plugin);
    # `traced_all`: every test that ran was traced
    trace: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    traced_all: bool = False
    # what the run covered: "full" (the suite), else the stages it went through before it
    # stopped at a failure ("failing", "failing+affected", ...)
    scope: str = "full"

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def is_pytest(command: str) -> bool:
    return bool(_PYTEST_CMD.match(command)) and not re.search(r"[;&|<>`$]", command)


def _summary_line(output: str) -> str:
    for line in reversed(output.splitlines()):
        match = _SUMMARY.search(line.strip("= "))
        if match and match.group(0):
            return match.group(0).strip()
    return ""


class RunningTests(Protocol):
    """A started test run: the process that runs it, its output, its exit code."""

    async def read(self) -> bytes:
        """The next piece of output; b"" at the end."""

    async def wait(self) -> int:
        """The exit code, once the test command has exited (its output may still be open)."""

    def kill(self) -> None:
        """End the run now, with every process it started."""

    def close(self) -> None:
        """Release the output, read to its end or not."""


class _ColdRun(asyncio.SubprocessProtocol):
    """The test command as a shell in a session of its own. On Linux it runs under reaper.py,
    which ends every process the command started once it exits (daemons in sessions of their
    own too); elsewhere the shell's process group is killed when it exits."""

    def __init__(self, supervised: bool) -> None:
        self.supervised = supervised
        self.pid = 0
        self._transport: asyncio.SubprocessTransport | None = None
        self._output = asyncio.StreamReader()
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @classmethod
    async def start(cls, command: str, cwd: Path, env: dict[str, str]) -> _ColdRun:
        supervised = sys.platform == "linux" and bool(sys.executable)
        argv = ([sys.executable, "-I", "-S", str(REAPER), command] if supervised
                else ["/bin/sh", "-c", command])
        _, run = await asyncio.get_running_loop().subprocess_exec(
            lambda: cls(supervised), *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True, env=env)
        return run

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport
        self.pid = transport.get_pid()
        pipe = transport.get_pipe_transport(1)
        assert isinstance(pipe, asyncio.ReadTransport)
        self._output.set_transport(pipe)  # a reader that falls behind pauses the pipe

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._output.feed_data(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._output.feed_eof()

    def process_exited(self) -> None:
        assert self._transport is not None
        if not self.supervised:  # what the test left in the shell's group goes with it
            # The shell is reaped already (asyncio reports no exit before), yet this is the
            # only way to end its background children here. A group id lives as long as any
            # process in the group (POSIX): while one of the run's is left, this kills only
            # the run's (who alone can join a group of the run's own session). With none
            # left, it would hit a stranger only if, since the reap moments ago, the id had
            # been given to a new process that also made itself a group leader.
            kill_group(self.pid)
        self._exit.set_result(self._transport.get_returncode())

    async def read(self) -> bytes:
        return await self._output.read(65536)

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def kill(self) -> None:
        # Never once asyncio has reaped the process: its pid and group id may be another's.
        # (Its watcher reaps just before the return code is set: for the id to be reused in
        # those moments, the kernel, which hands pids out in turn, would have to wrap round.)
        if self._transport is None or self._transport.get_returncode() is not None:
            return
        if not self.supervised:
            kill_group(self.pid)
        else:  # reaper.py ends the whole run on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def environment_without(hidden: tuple[str, ...]) -> dict[str, str]:
    """codeloop's environment minus the named variables (the API keys tests must not see), and
    minus those that would point a git the tests run at another repository than the sandbox."""
    return {k: v for k, v in git_environment().items() if k not in hidden}


def warm_wanted(mode: str, command: str) -> bool:
    """Whether `warm_tests` asks for a warm runner for this test command at all."""
    return mode != "off" and is_pytest(command)


class WarmStarter(Protocol):
    async def start(self, command: str, extras: list[str], cwd: Path, env: dict[str, str]
                    ) -> RunningTests: ...


async def run_tests(command: str, cwd: Path, timeout_s: float,
                    on_output: Callable[[str], None], hidden_env: tuple[str, ...] = (),
                    warm: WarmStarter | None = None, selection: Selection | None = None
                    ) -> TestResult:
    """Run `command` in `cwd` in a session of its own; at its exit, at the timeout or on a
    cancel, every process it started is killed (its output is read for `DRAIN_GRACE_S` more
    after it exits, for what is still on the way).

    With `warm`, a pytest command runs in a child forked from the warm runner instead (same
    arguments, same results). A pytest command runs only the tests `selection` selects, and
    traces what they run where it says so (`TestResult.trace`); the warm runner's child loads
    the plugin when the environment names a selection.
    """
    started = time.perf_counter()
    junit_dir = tempfile.TemporaryDirectory(prefix="codeloop-junit-")
    junit = Path(junit_dir.name) / "report.xml"
    extras = pytest_extras(command, junit) if is_pytest(command) else []
    env = environment_without(hidden_env)
    env["PYTHONUNBUFFERED"] = "1"
    selected = extras and selection is not None and not selection.plain
    if selected:
        extras += hand_over(selection, cwd, Path(junit_dir.name), env, warm is not None)
    if warm is not None and extras:
        start = warm.start(command, extras, cwd, env)
    else:
        start = _ColdRun.start(" ".join([command, *map(shlex.quote, extras)]), cwd, env)
    # a cancel while the process is being started waits for it, then kills all it started
    starting = asyncio.ensure_future(start)
    try:
        run: RunningTests = await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # a start that failed left nothing to stop
            await _follow(await _finish(starting), BoundedText(), lambda _: None, 0)
        raise
    output = BoundedText()
    exit_code, timed_out = await _follow(run, output, on_output, timeout_s,
                                         junit if extras else None)
    text = output.text()
    result = TestResult(exit_code=exit_code, summary="", timed_out=timed_out, output=text,
                        duration_ms=round((time.perf_counter() - started) * 1000, 3))
    if junit.is_file():
        with contextlib.suppress(ET.ParseError):
            result.counts, result.failures, result.ran = parse_junit(
                junit.read_text(encoding="utf-8"), cwd.resolve())
    if selected:
        result.trace, result.traced_all, result.scope = read_back(selection,
                                                                  Path(junit_dir.name))
        if result.exit_code == NO_TESTS_RAN and result.scope != "full" and not result.ran:
            result.exit_code = 0  # a selection with nothing to run (nothing the change affects)
    report = None
    if not extras and not timed_out:
        from codeloop.testrunner.reports import read_report  # other runners: imported on use

        report = read_report(text, cwd.resolve())
    junit_dir.cleanup()
    if timed_out:
        result.summary = f"timed out after {timeout_s:g}s (every process it started killed)"
    elif report is not None:  # their summary lines differ; the counts say it one way
        result.counts, result.failures = report
        result.summary = _counts_summary(result)
    else:
        result.summary = _summary_line(text) or _counts_summary(result)
    return result


def _counts_summary(result: TestResult) -> str:
    if result.counts:
        return ", ".join(f"{n} {k}" for k, n in result.counts.items() if n) or "no tests ran"
    return f"exit code {result.exit_code}"


async def _finish(work: Awaitable[T]) -> T:
    """Await `work` to its end through any further cancel (a second Ctrl-C while the first
    is being handled): what it does is short, and stopping half-way would leave things
    behind."""
    task = asyncio.ensure_future(work)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    return task.result()


async def _follow(run: RunningTests, output: BoundedText, on_output: Callable[[str], None],
                  timeout_s: float, junit: Path | None = None) -> tuple[int, bool]:
    """Read the run's output into `output` until the command exits, and then for
    `DRAIN_GRACE_S` at most; returns (exit code, whether it timed out). At the timeout or on
    a cancel, everything the run started is killed first; once the command has exited, its
    supervisor (or the warm runner) has already ended the rest, and nothing is signalled (its
    ids may be someone else's by then) — output still open after the grace period is cut."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    clean = WithoutJunitNotice(junit)

    async def read_all() -> None:
        while chunk := await run.read():
            if shown := output.add(clean(decoder.decode(chunk))):
                on_output(shown)
        if shown := output.add(clean(decoder.decode(b"", final=True), final=True)):
            on_output(shown)

    reading = asyncio.ensure_future(read_all())
    exiting = asyncio.ensure_future(run.wait())
    try:
        await asyncio.wait({exiting}, timeout=timeout_s)
    finally:  # (`_end` drains what is left, for DRAIN_GRACE_S at most)
        timed_out = not exiting.done()
        await _finish(_end(run, exiting, reading))
        # retrieved here, on a cancel too: a failure the cancel supersedes is not reported
        # later as never retrieved
        failures = [task.exception() for task in (reading, exiting) if not task.cancelled()]
    failure = next((failure for failure in failures if failure is not None), None)
    if failure is not None:
        raise failure
    return exiting.result(), timed_out


async def _end(run: RunningTests, exiting: asyncio.Task[int], reading: asyncio.Task[None]
               ) -> None:
    """Unless the command has exited: kill what the run started, wait for its exit. Read its
    output to the end (for `DRAIN_GRACE_S` at most: something out of reach could hold it
    open). Then release the output.

    An exit reported means what the run started is ended (by reaper.py, by the warm runner,
    or with the shell's group) and the process is reaped: a kill then could end nothing of the
    run's, and could hit a stranger that got its pid."""
    if not exiting.done():
        run.kill()
    await asyncio.wait({exiting})
    if not reading.done():
        await asyncio.wait({reading}, timeout=DRAIN_GRACE_S)
        reading.cancel()
        await asyncio.wait({reading})
    run.close()


def kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads (or led), where there is one."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
