"""The interactive Textual app: the agent's events on screen, the user's input back to it.

Owns the message queue (the user can type while a turn runs), Ctrl-C (cancel the running turn;
quit when idle) and slash commands, all through the `Agent` port; the screen itself is
`tui.view.EventsApp`. The agent runs on the app's own event loop as a worker; nothing here
decides anything the agent owns.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.worker import Worker

from codeloop.core.errors import CodeloopError
from codeloop.core.events import ErrorEvent, Event
from codeloop.core.kinds import ErrorKind, ExitCode, SessionOutcome
from codeloop.core.port import IDLE_ONLY, Agent, Status, help_text
from codeloop.frontends.history import History
from codeloop.frontends.presenter import CANCELLED, failure_text
from codeloop.frontends.tui.prompt_input import PromptInput
from codeloop.frontends.tui.view import VIEW_BINDINGS, EventsApp

KEYS_HELP = ("keys: Enter send · Ctrl+J new line · Up/Down history · Tab complete · "
             "Ctrl+C cancel turn (quit when idle) · F2 latency panel · Ctrl+O test output")


class CodeloopApp(EventsApp):
    """`codeloop` without `--task`: the full-screen interactive front end. `first_message`, when
    given, is sent as soon as the agent is open (as if typed)."""

    BINDINGS = [Binding("ctrl+c", "interrupt", "Cancel / quit", priority=True), *VIEW_BINDINGS]

    def __init__(self, agent: Agent, history: History | None = None,
                 first_message: str = "") -> None:
        super().__init__(agent.events, history)
        self.agent = agent
        self.queue: list[str] = [first_message] if first_message else []
        self.busy: Worker | None = None
        self.opened = False
        self.exit_code = ExitCode.FAILED

    def begin(self) -> None:
        # pre-warm: sandbox, connection and baseline tests while the user types
        self.busy = self.run_worker(self._open(), group="session")

    def figures(self) -> Status:
        return self.agent.status()

    def state(self) -> str:
        if not self.opened:
            return "starting"
        queued = f" · {len(self.queue)} queued" if self.queue else ""
        return ("working" if self.busy is not None else "ready") + queued

    def shows(self, event: Event) -> bool:
        # a cancel is said once, in this app's words, when Ctrl+C is pressed
        interrupted = isinstance(event, ErrorEvent) and event.kind == ErrorKind.INTERRUPTED
        return super().shows(event) and not interrupted

    async def _open(self) -> None:
        try:
            await self.agent.open()
            self.opened = True
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app stays up
            self.transcript.add_text("could not start the session: "
                                     + self.agent.events.redact(str(exc)), "error")
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
        if self.busy is not None or not self.opened:
            # said where the user looks too (a note in the transcript lands above a reply
            # still streaming); it goes when the turn ends, in the order typed
            when = "when this turn ends" if self.opened else "once the session is ready"
            ahead = len(self.queue) - 1
            when += f", after {ahead} more" if ahead else ""
            self.transcript.add_text(f"queued: {text}  (sent {when})", "note")
            self.notify(text, title=f"queued · sent {when}", timeout=4)
            self.refresh_status()
        self._next()

    def _next(self) -> None:
        if self.busy is None and self.opened and self.queue:
            self.busy = self.run_worker(self._ask(self.queue.pop(0)), group="turn")
        self.refresh_status()

    async def _ask(self, text: str) -> None:
        try:
            await self.agent.ask(text)
        except CodeloopError as exc:
            self.transcript.add_text(failure_text(exc, self.agent.events.redact), "error")
        finally:
            self.transcript.end_model()
            self.busy = None
        self._next()

    async def _command(self, line: str) -> None:
        name = line.split(" ", 1)[0]
        if name == "/help":
            self.transcript.add_text(help_text(KEYS_HELP), "note")
            return
        try:
            answer = await self.agent.command(line)
        finally:
            if name in IDLE_ONLY:
                self.busy = None
        # not an event, so redacted here: /diff shows what the model wrote, /test test output
        shown = self.agent.events.redact(answer.text)
        if answer.quit:
            await self.action_quit()
        elif name == "/clear":
            self.transcript.clear_all()
        elif answer.is_diff:
            self.transcript.add_diff("session diff", shown)
        elif shown:  # (empty: the session's events have said it)
            self.transcript.add_text(shown, "note" if answer.ok else "error")
        self._next()

    async def action_interrupt(self) -> None:
        """Ctrl-C: cancel the running turn (stream and tests); on an idle prompt, quit."""
        if self.busy is not None and self.opened:
            dropped, self.queue = self.queue, []
            self.busy.cancel()
            self.busy = None
            # at the end, where the user looks: the reply so far becomes an item first
            self.transcript.end_model()
            note = f" · {len(dropped)} queued message(s) dropped" if dropped else ""
            self.transcript.add_text(CANCELLED + note, "error")
            self.refresh_status()
            return
        await self.action_quit()

    async def action_quit(self) -> None:
        if self.busy is not None:
            self.busy.cancel()
        self.exit_code = await self.agent.finish(SessionOutcome.INTERACTIVE)
        self.exit(self.exit_code)
