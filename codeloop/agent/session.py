"""The session: one run of codeloop on one repo, a small façade over its lifecycle and commands.

(a) create the sandbox, (b) run the baseline tests, then per user message, turn after turn
(`turn.py`: (c) prompt, (d) reply, (e) edits, (f) apply, (g) test, (h) feed back) until a stop
condition; at the end the `session.end` event. Owns the order of that lifecycle, what a Ctrl-C
leaves, and the slash commands' effects; every step lives in the part that owns it, built once
the sandbox and the baseline exist. Implements `core.port.Agent`; never imports a front end.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from codeloop import __version__
from codeloop.agent import commands, startup
from codeloop.agent.applier import Applier
from codeloop.agent.clock import Totals, ms_since
from codeloop.agent.compactor import Compactor
from codeloop.agent.conversation import Conversation
from codeloop.agent.model import ModelLink
from codeloop.agent.results import Results, TestRuns
from codeloop.agent.turn import TurnRunner, stop_condition
from codeloop.agent.view import ModelView
from codeloop.config import Config
from codeloop.context import prompt
from codeloop.context.layout import BYTES_PER_TOKEN, window_for
from codeloop.core.events import (
    ErrorEvent,
    Notice,
    SandboxReady,
    SessionEnd,
    SessionStart,
    UserMessage,
)
from codeloop.core.kinds import ErrorKind, ExitCode, NoticeKind, SessionOutcome
from codeloop.core.port import Answer, Status
from codeloop.core.stream import EventStream
from codeloop.edits.errors import PatchError
from codeloop.edits.paths import check_path
from codeloop.testrunner.run import TestResult
from codeloop.testrunner.service import TestService
from codeloop.testrunner.warm import WarmRunner
from codeloop.transport import ModelClient, TransportError
from codeloop.workspace.errors import SandboxError
from codeloop.workspace.sandbox import Sandbox, start_sandbox


@dataclass
class SessionSettings:
    """What one session is asked to do, beyond the configuration."""

    session_id: str
    task: str
    test_command: str
    apply_at_end: bool = False
    pinned_files: list[str] = field(default_factory=list)
    hidden_env: tuple[str, ...] = ()
    at: str = ""  # start the sandbox at this revision instead of HEAD + uncommitted work


@dataclass
class _Opened:
    """The parts that need the sandbox and the baseline result, built once both exist."""

    sandbox: Sandbox
    results: Results
    view: ModelView
    compactor: Compactor
    turns: TurnRunner


class Session:
    """One run of codeloop on one task, from sandbox creation to the final result."""

    def __init__(self, repo_root: Path, config: Config, settings: SessionSettings,
                 client: ModelClient, events: EventStream, runner: WarmRunner | None = None,
                 sandbox_start: Future[Sandbox] | None = None) -> None:
        self.repo_root = repo_root
        self.config = config
        self.settings = settings
        self.client = client
        self._events = events
        self._creating = sandbox_start  # by the CLI (`start_sandbox`), else `open` starts it
        self.sandbox: Sandbox | None = None  # once made, even if `open` is cut short after
        self.turn = 0
        self._window = window_for(config.model, config.context_window)
        self._totals = Totals()
        self._model = ModelLink(client, config.edit_tool, config.builtin_patch_models, events)
        self._conversation = Conversation(settings.task)
        self._tests = TestService(settings.test_command, config.test_timeout_s,
                                  settings.hidden_env, config.warm_tests, config.fail_fast,
                                  events.emit, runner, config.verify)
        self._opened: _Opened | None = None
        self._pinned = list(settings.pinned_files)  # (/add works as soon as the sandbox exists)

    @property
    def events(self) -> EventStream:
        return self._events

    @property
    def result(self) -> TestResult | None:
        """The latest test result, of the files now (None before the baseline)."""
        return self._opened.results.latest if self._opened else None

    @property
    def _open(self) -> _Opened:
        if self._opened is None:
            raise RuntimeError("the session is not open: `open` has not finished")
        return self._opened

    async def run(self) -> ExitCode:
        """Headless: the whole session for `settings.task`. Returns the exit code."""
        outcome, exit_code, applied = SessionOutcome.FAILED, ExitCode.FAILED, False
        try:
            await self.open()
            outcome = await self.ask(self.settings.task)
            await self._open.results.settle()  # the verdict is never a remembered one
            exit_code = ExitCode.of_tests(self._open.results.latest.passed)
            if self.settings.apply_at_end:
                applied = self._apply_at_end()
        except asyncio.CancelledError:
            outcome, exit_code = SessionOutcome.INTERRUPTED, ExitCode.INTERRUPTED
        except TransportError as exc:  # (each error says which exit code it means)
            outcome, exit_code = SessionOutcome.MODEL_ERROR, exc.exit_code
            self._events.emit(ErrorEvent(kind=ErrorKind.TRANSPORT, message=str(exc)))
        except SandboxError as exc:
            outcome, exit_code = SessionOutcome.SANDBOX_ERROR, exc.exit_code
            self._events.emit(ErrorEvent(kind=ErrorKind.SANDBOX, message=str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug must still end the recording cleanly
            outcome, exit_code = SessionOutcome.INTERNAL_ERROR, ExitCode.FAILED
            self._events.emit(ErrorEvent(kind=ErrorKind.INTERNAL,
                                         message=f"{type(exc).__name__}: {exc}"))
        closing = asyncio.ensure_future(self._close(outcome, exit_code, applied))
        while not closing.done():  # a Ctrl-C now does not cut the end short: it is recorded
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(closing)
        closing.result()
        return exit_code

    async def open(self) -> None:
        """(a) the sandbox (started by the CLI, or now), (b) the baseline tests, while the
        connection opens and the warm runner gets ready."""
        self._totals.restart()
        self._events.emit(SessionStart(
            session_id=self.settings.session_id, task=self.settings.task,
            repo=str(self.repo_root), model=self.config.model, base_url=self.config.base_url,
            transport=self.client.name, edit_tool=self.config.edit_tool,
            test_command=self.settings.test_command, max_iterations=self.config.max_iterations,
            version=__version__, service_tier=self.config.service_tier,
        ))
        creating = self._creating or start_sandbox(
            self.repo_root, self.settings.session_id, self.settings.at)
        try:
            sandbox = await startup.sandbox_from(creating, self._sandbox_ready)
            runs = TestRuns(self._tests, sandbox, self.settings.test_command, self._events,
                            self._totals)
            baseline = await startup.baseline(sandbox, self._tests, runs, self._connect_and_warm)
        except asyncio.CancelledError:
            self._interrupted()
            raise
        self._opened = self._assemble(sandbox, Results(runs, baseline.result,
                                                       sandbox.base_commit, baseline.confirming))

    def _sandbox_ready(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._events.emit(SandboxReady(
            path=str(sandbox.path), branch=sandbox.branch, base_commit=sandbox.base_commit,
            head_commit=sandbox.base_commit, elapsed_ms=ms_since(self._totals.started)))

    def _connect_and_warm(self) -> asyncio.Task[None]:
        """Open the model connection and warm the test runner, each in a task of its own (the
        runner reads only the dependency files, the same in the repo as in the sandbox);
        returns the runner's."""
        self._model.start_connecting()
        return asyncio.create_task(self._tests.prepare(self.repo_root))

    def _assemble(self, sandbox: Sandbox, results: Results) -> _Opened:
        limit = self.config.tool_output_tokens * BYTES_PER_TOKEN
        view = ModelView(sandbox.path, self._pinned, limit)
        applier = Applier(sandbox, results, self._tests, view, self._events, limit)
        compactor = Compactor(self._conversation, self._model, view, applier, self._events,
                              self.config.compact_at, self.config.keep_recent_turns,
                              self._window)
        turns = TurnRunner(self._conversation, self._model, view, applier, self._events,
                           self._totals)
        return _Opened(sandbox, results, view, compactor, turns)

    async def ask(self, text: str) -> SessionOutcome:
        """Work on one user message: turns until a stop condition (`turn.stop_condition`) or
        `max_iterations` turns. Cancelling it (Ctrl-C) stops the stream and the test process and
        leaves the sandbox at its last commit."""
        self._events.emit(UserMessage(text=text))
        self._conversation.pending = text
        opened = self._open
        try:
            for _ in range(self.config.max_iterations):
                if opened.compactor.due():
                    await opened.compactor.compact("auto", self.turn)  # only ever between turns
                self.turn += 1
                outcome = await opened.turns.run(self.turn)
                if (stop := stop_condition(outcome, opened.results.latest.passed)) is not None:
                    return stop
        except asyncio.CancelledError:
            await opened.results.abandon()  # its processes are gone before the files reset
            self._interrupted()
            raise
        return SessionOutcome.MAX_ITERATIONS

    def _interrupted(self) -> None:
        """After a cancel: files back to the last commit, every tool call answered."""
        self._events.emit(ErrorEvent(kind=ErrorKind.INTERRUPTED, message="interrupted by the "
                                     "user; the sandbox is at its last commit"))
        if self.sandbox:
            self.sandbox.discard_uncommitted()
        self._conversation.pending = None
        self._conversation.answer_open_calls("cancelled by the user")

    async def command(self, line: str) -> Answer:
        return await commands.run(self, line)

    def status(self) -> Status:
        return self._totals.status(self.config.model, self.client.name)

    async def finish(self, outcome: SessionOutcome) -> ExitCode:
        """End the session; the exit code is the latest test result's."""
        if self._opened is not None:
            await self._opened.results.settle()
        exit_code = ExitCode.of_tests(self.result is not None and self.result.passed)
        await self._close(outcome, exit_code)
        return exit_code

    async def _close(self, outcome: SessionOutcome, exit_code: ExitCode,
                     applied: bool = False) -> None:
        """The connection, the test runner, the `session.end` event, git handles."""
        if self._opened is not None:
            await self._opened.results.abandon()
        await self._model.close()
        await self._tests.shut_down()
        totals = self._totals.final()
        diffstat = ""
        if self.sandbox:
            try:
                diffstat = self.sandbox.diffstat()
            except SandboxError as exc:  # removed from under the session: it still ends
                self._events.emit(ErrorEvent(
                    kind=ErrorKind.SANDBOX,
                    message=f"the sandbox {self.sandbox.path} is gone: {exc}"))
        self._events.emit(SessionEnd(
            outcome=outcome, exit_code=exit_code, applied_to_worktree=applied, totals=totals,
            branch=self.sandbox.branch if self.sandbox else "", diffstat=diffstat))
        if self.sandbox:
            self.sandbox.close()

    def _apply_at_end(self) -> bool:
        try:
            return bool(self._open.sandbox.apply_to_worktree())
        except SandboxError as exc:
            self._events.emit(ErrorEvent(kind=ErrorKind.APPLY, message=str(exc)))
            return False

    # commands from an interactive user (the TUI and the line REPL), run by `commands.run`

    def undo(self) -> str:
        """Sandbox back to the previous turn's commit; the model hears of it next time. The
        test result is again that commit's (known unless its test run was interrupted: then
        the next patch, or /test, runs them)."""
        head = self._open.sandbox.undo()
        self._open.results.back_at(head)
        self._conversation.notes.append(f"The user undid your last change: the files are back "
                                        f"at commit {head[:10]}.")
        self._events.emit(Notice(kind=NoticeKind.UNDO,
                                 message=f"sandbox back at commit {head[:10]}"))
        return head

    def diff(self) -> str:
        """The whole session's diff (base snapshot to the sandbox head)."""
        return self._open.sandbox.diff()

    def apply(self) -> list[str]:
        """Apply the session's diff to the user's working tree, as `--apply` does."""
        files = self._open.sandbox.apply_to_worktree()
        self._events.emit(Notice(kind=NoticeKind.APPLY, message="applied to your working tree: "
                                 + (", ".join(files) or "nothing to apply")))
        return files

    async def rerun_tests(self) -> TestResult:
        """Run the tests now; the model sees the result with the next message."""
        opened = self._open
        result = await opened.results.run(self.turn)
        opened.results.tested(opened.sandbox.head())
        self._conversation.notes.append("The user re-ran the tests. " + prompt.test_report(result))
        return result

    def pin(self, rel: str) -> str:
        """Put a file into the model's context (now if nothing was asked yet, else next time);
        from the moment the sandbox exists, while the baseline may still run."""
        if self.sandbox is None:
            raise SandboxError("the sandbox is still being made: /add the file again in a moment")
        path = check_path(self.sandbox.path, rel)
        if not (self.sandbox.path / path).is_file():
            raise PatchError(f"{path}: no such file in the sandbox")
        if path not in self._pinned:  # (the list the model's view reads)
            self._pinned.append(path)
        self._events.emit(Notice(kind=NoticeKind.PIN, message=f"pinned {path} into the context"))
        return path

    def set_model(self, name: str) -> None:
        self.client.model = self.config.model = name
        self._events.emit(Notice(kind=NoticeKind.MODEL, message=f"model is now {name}"))

    async def compact(self, reason: str) -> bool:
        """Replace the older turns by a summary now; False when there is nothing to replace."""
        return await self._open.compactor.compact(reason, self.turn)

    def clear(self) -> None:
        """Forget the conversation; the next message starts a fresh one on the current files."""
        self._conversation.clear()
        if self._opened is not None:  # (before that, the model has seen nothing)
            self._opened.view.forget()
        self._events.emit(Notice(kind=NoticeKind.CLEAR, message="conversation cleared"))
