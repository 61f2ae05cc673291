"""The interactive Textual app: the loop's events on screen, the user's input back to it.

Owns the screen layout, the mapping from events to transcript items, the message queue (the user
can type while a turn runs), Ctrl-C (cancel the running turn; quit when idle) and slash commands.
The session runs on the app's own event loop as a worker; nothing here decides anything the
loop owns.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer
from textual.worker import Worker

from codeloop.agent import commands
from codeloop.agent.session import EXIT_FAILED, EXIT_PASSED, Session
from codeloop.core.events import (
    Compaction,
    ErrorEvent,
    Event,
    ModelDone,
    ModelRetry,
    ModelTextDelta,
    ModelToolCall,
    Notice,
    PatchApplied,
    PatchRejected,
    SandboxReady,
    TestDone,
    TestRunnerChange,
    TestStart,
    ToolResult,
    TransportChange,
    TurnEnd,
    TurnStart,
    UserMessage,
)
from codeloop.edits.extract import patch_argument
from codeloop.frontends.headless import clip, format_spans
from codeloop.frontends.history import History
from codeloop.frontends.latency import LatencyModel
from codeloop.frontends.tui.panel import LatencyPanel
from codeloop.frontends.tui.prompt_input import PromptInput
from codeloop.frontends.tui.status import StatusLine
from codeloop.frontends.tui.transcript import Transcript
from codeloop.transport import TransportError

# Python's cyclic GC, walking every rendered line, was the cause of 100-200 ms frame stalls while
# streaming (benchmarks/render_throughput.py: lag p95 126 ms -> 32 ms at 5k tok/s). Long-lived
# objects are frozen out of collection at start-up and after each turn; young collections are
# rarer.
GC_THRESHOLDS = (20_000, 50, 100)

# commands that touch the sandbox or run tests: one thing at a time, and Ctrl+C cancels them
IDLE_ONLY = ("/test", "/undo", "/apply", "/clear", "/diff", "/compact")
KEYS_HELP = ("keys: Enter send · Ctrl+J new line · Up/Down history · Tab complete · "
             "Ctrl+C cancel turn (quit when idle) · F2 latency panel · Ctrl+O test output")


class CodeloopApp(App[int]):
    """`codeloop` without `--task`: the full-screen interactive front end."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "codeloop"
    BINDINGS = [
        Binding("ctrl+c", "interrupt", "Cancel / quit", priority=True),
        Binding("f2", "toggle_panel", "Latency panel"),
        Binding("ctrl+o", "toggle_output", "Test output"),
    ]

    def __init__(self, session: Session, history: History | None = None) -> None:
        super().__init__()
        self.session = session
        self.history = history or History()
        self.latency = LatencyModel(session.events.now)
        self.queue: list[str] = []
        self.busy: Worker | None = None
        self.opened = False
        self.exit_code = EXIT_FAILED
        self._branch = ""
        self._turn = 0
        self._t0 = time.perf_counter()
        session.events.subscribe(self.latency)
        session.events.subscribe(self.on_session_event)

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Transcript(on_display_lag=self.latency.record_display_lag, id="transcript")
                yield PromptInput(self.history, id="input",
                                  placeholder="Describe the task · /help for commands")
            yield LatencyPanel(self.latency, id="panel")
        yield StatusLine(id="status")
        yield Footer()

    @property
    def transcript(self) -> Transcript:
        return self.query_one(Transcript)

    def on_mount(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self.query_one(PromptInput).focus()
        self.set_interval(1.0, self.refresh_status)
        self.refresh_status()
        # pre-warm: sandbox, connection and baseline tests while the user types
        self.busy = self.run_worker(self._open(), group="session")

    async def _open(self) -> None:
        try:
            await self.session.open()
            self.opened = True
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app stays up
            self.transcript.add_text("could not start the session: "
                                     + self.session.events.redact(str(exc)), "error")
        self.busy = None
        self._next()

    # the user's side

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        text = message.text
        if text.startswith("/"):
            name = text.split(" ", 1)[0]
            if name in IDLE_ONLY and (self.busy is not None or not self.opened):
                self.transcript.add_text(f"{name} waits for the running turn: wait for it, or "
                                         "Ctrl+C to cancel it", "error")
            elif name in IDLE_ONLY:
                self.busy = self.run_worker(self._command(text), group="turn")
            else:
                self.run_worker(self._command(text), group="command")
            return
        self.queue.append(text)
        if self.busy is not None:
            self.transcript.add_text(f"queued: {text}", "note")
        self._next()

    def _next(self) -> None:
        if self.busy is None and self.opened and self.queue:
            self.busy = self.run_worker(self._ask(self.queue.pop(0)), group="turn")
        self.refresh_status()

    async def _ask(self, text: str) -> None:
        try:
            await self.session.ask(text)
        except TransportError as exc:
            self.transcript.add_text(f"model error: {self.session.events.redact(str(exc))}",
                                     "error")
        finally:
            self.transcript.end_model()
            self.busy = None
        self._next()

    async def _command(self, line: str) -> None:
        if line.split(" ", 1)[0] == "/help":
            self.transcript.add_text(commands.help_text(KEYS_HELP), "note")
            return
        try:
            answer = await commands.run(self.session, line)
        finally:
            if line.split(" ", 1)[0] in IDLE_ONLY:
                self.busy = None
        # not an event, so redacted here: /diff shows what the model wrote, /test test output
        shown = self.session.events.redact(answer.text)
        if answer.quit:
            await self.action_quit()
        elif line.split(" ", 1)[0] == "/clear":
            self.transcript.clear_all()
        elif answer.is_diff:
            self.transcript.add_diff("session diff", shown)
        else:
            self.transcript.add_text(shown, "note" if answer.ok else "error")
        self._next()

    def action_toggle_output(self) -> None:
        self.transcript.toggle_fold()

    def action_toggle_panel(self) -> None:
        panel = self.query_one(LatencyPanel)
        panel.display = not panel.display

    async def action_interrupt(self) -> None:
        """Ctrl-C: cancel the running turn (stream and tests); on an idle prompt, quit."""
        if self.busy is not None and self.opened:
            self.queue.clear()
            self.busy.cancel()
            self.busy = None
            self.transcript.add_text("cancelled: the sandbox is at its last commit", "error")
            return
        await self.action_quit()

    async def action_quit(self) -> None:
        if self.busy is not None:
            self.busy.cancel()
        result = self.session.result
        self.exit_code = EXIT_PASSED if result and result.passed else EXIT_FAILED
        await self.session.close("interactive", self.exit_code)
        self.exit(self.exit_code)

    # the session's side: every event, on this loop

    def on_session_event(self, event: Event) -> None:  # noqa: C901 - one branch per event
        transcript = self.transcript
        if isinstance(event, ModelTextDelta):
            transcript.stream(event.text)
        elif isinstance(event, UserMessage):
            transcript.add_user(event.text)
        elif isinstance(event, TurnStart):
            self._turn = event.turn
            transcript.begin_model()
            self.refresh_status()
        elif isinstance(event, ModelToolCall):
            transcript.end_model()
            self._show_tool_call(event)
        elif isinstance(event, ModelDone):
            transcript.end_model()
        elif isinstance(event, ModelRetry):
            if event.restart:
                transcript.end_model()
            what = "restarting the turn" if event.restart else f"retry {event.attempt}"
            transcript.add_text(f"{what} in {event.delay_s:.1f}s: {event.reason}", "error")
            if event.restart:
                transcript.begin_model()
        elif isinstance(event, TestRunnerChange):
            transcript.add_text(f"⚡ {event.message}", "note")
        elif isinstance(event, TransportChange):
            transcript.add_text(f"⇄ {event.transport}: {event.message}", "note")
            self.refresh_status()
        elif isinstance(event, ToolResult):
            transcript.add_text(f"  {event.name} → {len(event.output.splitlines())} lines",
                                "tool")
        elif isinstance(event, PatchApplied):
            note = f" · already present: {len(event.already_applied)}" \
                if event.already_applied else ""
            transcript.add_text(f"✓ patch applied to {', '.join(event.files) or 'nothing new'} "
                                f"({event.commit[:10]}){note}", "ok")
        elif isinstance(event, PatchRejected):
            transcript.add_text("✗ patch rejected, nothing applied:\n" + event.reason, "error")
        elif isinstance(event, TestStart):
            transcript.add_text(f"running {event.command} …", "tool")
        elif isinstance(event, TestDone):
            self._show_tests(event)
        elif isinstance(event, TurnEnd):
            gc.freeze()  # this turn's transcript lines are long-lived now
            transcript.add_text(f"turn {event.turn}: {event.outcome} · "
                                f"{format_spans(event.spans)}", "dim")
            self.refresh_status()
        elif isinstance(event, SandboxReady):
            self._branch = event.branch
            self.refresh_status()
        elif isinstance(event, ErrorEvent) and event.kind != "interrupted":
            transcript.add_text(f"{event.kind}: {event.message}", "error")
        elif isinstance(event, Notice):
            transcript.add_text(event.message, "note")
        elif isinstance(event, Compaction):
            transcript.add_text(f"compacted ({event.reason}): {event.turns_replaced} older turns "
                                f"→ a summary, {event.turns_kept} kept; {event.tokens_before:,} → "
                                f"{event.tokens_after:,} tokens in {event.duration_ms:.0f} ms",
                                "note")

    def _show_tool_call(self, event: ModelToolCall) -> None:
        if event.name == "apply_patch":
            try:
                diff = patch_argument(event.arguments)
            except ValueError:
                diff = event.arguments
            self.transcript.add_diff("apply_patch", clip(diff), "tool")
        else:
            self.transcript.add_text(f"⚙ {event.name} {clip(event.arguments)}", "tool")

    def _show_tests(self, event: TestDone) -> None:
        style = "ok" if event.passed else "error"
        summary = Text(("✓ " if event.passed else "✗ ") + f"tests: {event.summary} "
                       f"({event.duration_ms / 1000:.2f}s, {event.mode})", style="bold")
        for failure in event.failures[:15]:
            summary.append(f"\n  {failure['id']}  ", style="bold")
            summary.append(failure["message"].splitlines()[0] if failure["message"] else "")
        self.transcript.add_folded(summary, event.output, style)

    def refresh_status(self) -> None:
        totals = self.session.totals
        state = "working" if self.busy is not None else "ready"
        if not self.opened:
            state = "starting"
        self.query_one(StatusLine).show(
            model=self.session.config.model, transport=self.session.client.name,
            branch=self._branch, turn=self._turn, prompt_tokens=totals["prompt_tokens"],
            cached_tokens=totals["cached_tokens"], completion_tokens=totals["completion_tokens"],
            seconds=time.perf_counter() - self._t0, state=state)

