"""The screen every TUI shares: events rendered into the transcript, the latency panel and the
status line, from any `EventSource` (a live session, or a recording played back).

Owns the layout, the reactions of the screen to events (the streamed reply begins and ends,
the turn and branch in the status line) and how the presenter's output is drawn. It takes no
input of its own: the interactive app and the watch app each handle the input box, and say
what starts once the screen is up and what the status line's figures are.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer

from codeloop.core.events import (
    Event,
    ModelDone,
    ModelRetry,
    ModelToolCall,
    SandboxReady,
    SessionEnd,
    SessionStart,
    TransportChange,
    TurnEnd,
    TurnStart,
)
from codeloop.core.port import EventSource, Status
from codeloop.frontends.history import History
from codeloop.frontends.latency import LatencyModel
from codeloop.frontends.presenter import Shown, Style, present
from codeloop.frontends.tui.panel import LatencyPanel
from codeloop.frontends.tui.prompt_input import PromptInput
from codeloop.frontends.tui.status import StatusLine
from codeloop.frontends.tui.transcript import Transcript

# Python's cyclic GC, walking every rendered line, was the cause of 100-200 ms frame stalls while
# streaming (benchmarks/render_throughput.py: lag p95 126 ms -> 32 ms at 5k tok/s). Long-lived
# objects are frozen out of collection at start-up and after each turn; young collections are
# rarer.
GC_THRESHOLDS = (20_000, 50, 100)

# the keys of the view itself, for the apps' BINDINGS (after their own, in the footer)
VIEW_BINDINGS = [
    Binding("f2", "toggle_panel", "Latency panel"),
    Binding("ctrl+o", "toggle_output", "Test output"),
]
# shown by the status line (start, sandbox, tokens), by the transcript's layout (a turn's
# start), or never (the end: the app is gone by then)
SHOWN_ELSEWHERE = frozenset({SessionStart, SandboxReady, TurnStart, ModelDone, SessionEnd})


class EventsApp(App[int]):
    """The transcript, the latency panel and the status line, fed by an event source."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "codeloop"

    def __init__(self, events: EventSource, history: History | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self.wall = clock  # the status line's time and the display lag are measured with it
        self.history = history or History()
        self.latency = LatencyModel(events.now)
        self.branch = ""
        self.turn = 0  # the turn on screen
        self._t0 = self.wall()
        events.subscribe(self.latency)
        events.subscribe(self.on_session_event)

    # what each app says

    def begin(self) -> None:
        """Start what feeds the events, once the screen is up."""
        raise NotImplementedError

    def figures(self) -> Status:
        """The status line's figures now."""
        raise NotImplementedError

    def state(self) -> str:
        """The status line's first word (starting, working, ready)."""
        raise NotImplementedError

    def shows(self, event: Event) -> bool:
        """Whether the transcript shows `event` (an app hides what it says in its own words)."""
        return type(event) not in SHOWN_ELSEWHERE

    # the screen

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Transcript(on_display_lag=self.latency.record_display_lag, clock=self.wall,
                                 id="transcript")
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
        self.begin()

    def clear(self) -> None:
        """Forget what was shown: the transcript, the latency panel's turns, the turn."""
        self.transcript.clear_all()
        self.latency.turns.clear()
        self.turn = 0

    def action_toggle_output(self) -> None:
        self.transcript.toggle_fold()

    def action_toggle_panel(self) -> None:
        panel = self.query_one(LatencyPanel)
        panel.display = not panel.display

    def refresh_status(self) -> None:
        for line in self.query(StatusLine):  # (none once the app is closing: its timer may
            # still fire after the screen is gone)
            line.show(self.figures(), branch=self.branch, turn=self.turn,
                      seconds=self.wall() - self._t0, state=self.state())

    # the events, on this loop

    def on_session_event(self, event: Event) -> None:
        if (react := _REACTIONS.get(type(event))) is not None:
            react(self, event)
        if self.shows(event):
            for shown in present(event):
                self._draw(shown)

    def _draw(self, shown: Shown) -> None:
        transcript = self.transcript
        if shown.style == Style.MODEL:
            transcript.stream(shown.text)
        elif shown.style == Style.USER:
            transcript.add_user(shown.text)
        elif shown.diff:
            transcript.add_diff(shown.text, shown.diff, shown.style)
        elif shown.output:
            transcript.add_folded(Text(shown.text, style="bold"), shown.output, shown.style)
        else:
            transcript.add_text(shown.text, shown.style)

    def _turn_start(self, event: TurnStart) -> None:
        self.turn = event.turn
        self.transcript.begin_model()
        self.refresh_status()

    def _reply_over(self, event: Event) -> None:
        self.transcript.end_model()

    def _retry(self, event: ModelRetry) -> None:
        if event.restart:  # what streamed stays, as it was; the new reply streams below
            self.transcript.begin_model()

    def _turn_end(self, event: TurnEnd) -> None:
        gc.freeze()  # this turn's transcript lines are long-lived now
        self.refresh_status()

    def _sandbox_ready(self, event: SandboxReady) -> None:
        self.branch = event.branch
        self.refresh_status()


# what the screen does on an event besides showing it (before showing it)
_REACTIONS: dict[type[Event], Callable[[EventsApp, Any], None]] = {
    TurnStart: EventsApp._turn_start,
    ModelToolCall: EventsApp._reply_over,
    ModelDone: EventsApp._reply_over,
    ModelRetry: EventsApp._retry,
    TransportChange: lambda app, _: app.refresh_status(),
    TurnEnd: EventsApp._turn_end,
    SandboxReady: EventsApp._sandbox_ready,
}
