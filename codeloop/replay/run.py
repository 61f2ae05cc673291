"""`codeloop replay FILE` (watch, --re-execute, --ask) and `codeloop demo`.

Owns wiring recorded sessions to the consumers and to a real Session (re-executed, or driven by
the demo's app); watching needs no Session, only the events played into a stream. The recording
logic lives in `codeloop.replay.playback`. The demo ends saying what it showed and how to run
codeloop on one's own repository (`demo_epilogue`), rather than waiting for a reply it has not.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from concurrent.futures import Future
from pathlib import Path

from codeloop.agent.session import Session, SessionSettings
from codeloop.config import Config
from codeloop.core.events import Event, Notice, SandboxReady, UserMessage
from codeloop.core.kinds import EditTool, ExitCode, NoticeKind, SessionOutcome
from codeloop.core.port import Answer, Status
from codeloop.core.stream import EventStream
from codeloop.frontends.headless import ProgressPrinter
from codeloop.replay.ask import ask
from codeloop.replay.playback import (
    Recording,
    RecordingError,
    ReplayClient,
    divergences,
    load,
    play,
)
from codeloop.replay.recorder import Recorder, event_line
from codeloop.workspace.clean import clean
from codeloop.workspace.errors import SandboxError
from codeloop.workspace.projects import copy_project
from codeloop.workspace.repo import exclude_from_git
from codeloop.workspace.sandbox import Sandbox, start_sandbox

DEMO_PROJECT = "offbyone"


def _error(message: str, exit_code: int = ExitCode.USAGE) -> int:
    print(f"codeloop: error: {message}", file=sys.stderr)
    return exit_code


def run_replay(args: argparse.Namespace, repo_root: Path | None) -> int:
    try:
        recording = load(Path(args.file))
    except RecordingError as exc:
        return _error(str(exc))
    for notice in recording.notices():
        print(f"codeloop: {notice}", file=sys.stderr)
    if args.ask:
        return ask(recording, args, repo_root)
    if args.re_execute:
        if repo_root is None:
            return _error("--re-execute runs in a git repository: cd into the recorded project")
        return re_execute(recording, repo_root, args.at or _base_commit(recording),
                          args.speed, args.json, diffs=not args.quiet)
    if args.json or args.headless or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return watch(recording, args.speed, args.json, diffs=not args.quiet)
    from codeloop.frontends.tui.watch import WatchApp

    return WatchApp(recording.events, EventStream(), args.speed).run() or 0


def _base_commit(recording: Recording) -> str:
    ready = next((e for e in recording.events if isinstance(e, SandboxReady)), None)
    return ready.base_commit if ready else "HEAD"


def watch(recording: Recording, speed: float | None, as_json: bool, diffs: bool = True) -> int:
    if as_json:
        def emit(event: Event) -> None:
            sys.stdout.write(event_line(event) + "\n")
            sys.stdout.flush()
    else:
        emit = ProgressPrinter(diffs=diffs)
    asyncio.run(play(recording.events, speed if not as_json else None, emit))
    return 0


def _session(recording: Recording, repo_root: Path, at: str, speed: float | None,
             events: EventStream, *, session_id: str = "",
             sandbox_start: Future[Sandbox] | None = None) -> Session:
    """A real Session answered by the recorded replies (`sandbox_start`: its sandbox, already
    being created for `session_id`)."""
    start = recording.start
    task = next((e.text for e in recording.events if isinstance(e, UserMessage)), start.task)
    client = ReplayClient(recording, speed)
    # the tools the recorded requests offered: the built-in apply_patch tool if they did
    config = Config(model=start.model, base_url=start.base_url,
                    edit_tool=EditTool.BUILTIN if client.builtin_tools else start.edit_tool,
                    test_command=start.test_command,
                    max_iterations=max(len(recording.turns()), 1))
    from codeloop.core.ids import new_session_id

    settings = SessionSettings(session_id=session_id or new_session_id(), task=task,
                               test_command=start.test_command, at=at)
    return Session(repo_root, config, settings, client, events, sandbox_start=sandbox_start)


def re_execute(recording: Recording, repo_root: Path, at: str, speed: float | None,
               as_json: bool, diffs: bool = True) -> int:
    """The recorded replies, a fresh sandbox at `at`, real patches, real tests; then where it
    diverged. Exit 0 when nothing did, 1 when something did, 2 when `at` is no commit here."""
    from codeloop.core.ids import new_session_id

    exclude_from_git(repo_root, ".codeloop/")
    session_id = new_session_id()
    # the sandbox first: a revision that is no commit here is a usage error, not a divergence,
    # and a session that cannot start leaves no recording behind
    creating = start_sandbox(repo_root, session_id, at)
    if isinstance(failed := creating.exception(), SandboxError):
        return _error(str(failed))
    events = EventStream()
    replayed: list[Event] = []
    events.subscribe(replayed.append)
    session = _session(recording, repo_root, at, speed, events, session_id=session_id,
                       sandbox_start=creating)
    recorder = Recorder(repo_root, session.settings.session_id,
                        mirror=sys.stdout if as_json else None)
    events.subscribe(recorder)
    if not as_json:
        events.subscribe(ProgressPrinter(diffs=diffs))
    try:
        exit_code = asyncio.run(session.run())
    finally:
        recorder.close()
    if exit_code == ExitCode.INTERRUPTED:  # (cut short: nothing to compare; its end said where)
        return exit_code
    found = divergences(recording.events, replayed)
    out = sys.stderr if as_json else sys.stdout
    if found:
        print("re-execution diverged from the recording:", file=out)
        for line in found:
            print(f"  {line}", file=out)
        return 1
    print(f"re-execution matched the recording: {len(recording.turns())} turn(s), same patches "
          "and test results", file=out)
    return 0


def source_sandbox() -> Path:
    return Path(__file__).resolve().parents[2] / "sandbox"


def run_demo(args: argparse.Namespace) -> int:
    """Offline: a copy of a bundled project, and the bundled recording of codeloop fixing it,
    re-executed for real (patches applied, tests run) in the TUI, or headless without a TTY."""
    sandbox = source_sandbox()
    project = sandbox / DEMO_PROJECT
    session_file = sandbox / "sessions" / f"{DEMO_PROJECT}.jsonl"
    if not session_file.is_file():
        return _error(f"the demo needs codeloop's source checkout ({session_file} not found)")
    recording = load(session_file)
    with tempfile.TemporaryDirectory(prefix="codeloop-demo-") as tmp:
        repo = copy_project(project, Path(tmp) / DEMO_PROJECT)
        try:
            if args.headless or not (sys.stdin.isatty() and sys.stdout.isatty()):
                exit_code = re_execute(recording, repo, "HEAD", args.speed, False,
                                       diffs=not args.quiet)
                if exit_code == ExitCode.PASSED:
                    print(f"\n{demo_epilogue(recording)}")
                return exit_code
            return demo_tui(recording, repo, args.speed)
        finally:
            clean(repo)


def demo_epilogue(recording: Recording) -> str:
    """What the demo showed, and how to run codeloop on one's own repository."""
    turns = len(recording.turns())
    return (f"That was the demo: codeloop asked a model (its recorded replies, offline) to fix "
            f"the failing tests of the bundled `{DEMO_PROJECT}` project; it applied each patch "
            f"in a git sandbox, ran the tests and fed the failures back: {turns} turn(s), until "
            "they passed.\n"
            "On your own repository: cd into it, set OPENAI_API_KEY (or use --base-url "
            "http://127.0.0.1:8080/v1 for a local server), and run\n"
            "  codeloop                                        the full-screen app\n"
            "  codeloop --plain                                the line REPL\n"
            "  codeloop --task \"make the failing tests pass\"   headless\n"
            "`codeloop --help` lists every flag.")


class DemoAgent:
    """The demo's session, through the port: the recorded task runs for real; then, instead of
    a model reply the recording has not, every message is answered by `demo_epilogue`."""

    def __init__(self, session: Session, events: EventStream, epilogue: str) -> None:
        self._session, self._events, self._epilogue = session, events, epilogue
        self._shown = False

    @property
    def events(self) -> EventStream:
        return self._events

    async def open(self) -> None:
        await self._session.open()

    async def ask(self, text: str) -> str:
        if self._shown:
            self._events.emit(UserMessage(text=text))
            self._tell("The demo's recording has no more model replies. ")
            return SessionOutcome.INTERACTIVE
        try:
            return await self._session.ask(text)
        finally:
            self._shown = True
            self._tell("")

    def _tell(self, first: str) -> None:
        self._events.emit(Notice(kind=NoticeKind.DEMO, message=f"{first}{self._epilogue}\n"
                                 "Ctrl+C or /quit leaves the demo."))

    async def command(self, line: str) -> Answer:
        return await self._session.command(line)

    def status(self) -> Status:
        return self._session.status()

    async def finish(self, outcome: SessionOutcome) -> ExitCode:
        return await self._session.finish(outcome)


def demo_tui(recording: Recording, repo: Path, speed: float | None) -> int:
    from codeloop.frontends.tui.app import CodeloopApp

    events = EventStream()
    session = _session(recording, repo, "HEAD", speed, events)
    # typed for you: the recorded task
    return CodeloopApp(DemoAgent(session, events, demo_epilogue(recording)),
                       first_message=session.settings.task).run() or 0
