"""`codeloop replay FILE` in the TUI: the recorded events played into the same screen, at their
recorded pace, with pause, step and a jump to any turn.

The screen is the interactive app's (`tui.view.EventsApp`); only the source of events differs
(a recording played into an event stream instead of a live agent), so the transcript and the
latency panel show exactly what they showed live. No session is built to watch one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from textual.binding import Binding

from codeloop.core.events import Event, ModelDone, SessionStart, TurnStart
from codeloop.core.port import EventSource, Status
from codeloop.frontends.history import History
from codeloop.frontends.tui.prompt_input import PromptInput
from codeloop.frontends.tui.view import VIEW_BINDINGS, EventsApp

WATCH_HELP = ("replay: F5 pause/resume · F6 next event while paused · /turn N jumps to turn N · "
              "Ctrl+C quits")
TOKENS = ("prompt_tokens", "cached_tokens", "completion_tokens")


class Playback(EventSource, Protocol):
    """An event source the recorded events are played into."""

    def emit(self, event: Event) -> Event:
        """Stamp `event` with this source's clock and hand it to every subscriber."""


class WatchApp(EventsApp):
    """Plays a recording; typing `/turn N` jumps, F5 pauses, F6 steps."""

    BINDINGS = [
        Binding("ctrl+c", "quit", "Quit", priority=True),
        Binding("f5", "pause", "Pause"),
        Binding("f6", "step", "Step"),
        *VIEW_BINDINGS,
    ]

    def __init__(self, recorded: list[Event], events: Playback, speed: float | None,
                 history: History | None = None) -> None:
        super().__init__(events, history)
        self.recorded = recorded
        self.speed = speed
        self.paused = False
        self.steps = 0
        self.jump_to = 0
        self._into = events
        self._start = next((e for e in recorded if isinstance(e, SessionStart)), None)
        self._tokens = dict.fromkeys(TOKENS, 0)  # summed over the replies played so far
        events.subscribe(self._count_tokens)

    def begin(self) -> None:
        self.run_worker(self._watch(), group="session")

    def figures(self) -> Status:
        """The recorded model and wire, and the tokens of the replies played so far."""
        start = self._start
        return Status(model=start.model if start else "",
                      transport=start.transport if start else "", **self._tokens)

    def state(self) -> str:
        return "ready"

    def _count_tokens(self, event: Event) -> None:
        if isinstance(event, ModelDone):
            for key in TOKENS:
                self._tokens[key] += event.usage.get(key, 0)

    async def _watch(self) -> None:
        self.transcript.add_text(WATCH_HELP, "note")
        while True:
            if not await self._play():  # played to the end: wait for a jump
                while not self.jump_to:
                    await asyncio.sleep(0.05)
            self.clear()  # play again from the start, quickly, up to the turn
            self._tokens = dict.fromkeys(TOKENS, 0)

    async def _play(self) -> bool:
        """Play the recording; True when a jump back asks for a restart."""
        origin, started = (self.recorded[0].t if self.recorded else 0.0), time.perf_counter()
        for event in self.recorded:
            if self.jump_to and self.jump_to <= self.turn and isinstance(event, TurnStart):
                return True
            if isinstance(event, TurnStart) and event.turn == self.jump_to:
                self.jump_to = 0
                origin, started = event.t, time.perf_counter()
            while self.paused and not self.steps:
                await asyncio.sleep(0.05)
                origin, started = event.t, time.perf_counter()
            self.steps = max(self.steps - 1, 0)
            if self.speed and not self.jump_to and not self.paused:
                delay = (event.t - origin) / self.speed - (time.perf_counter() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
            self._into.emit(event)
            await asyncio.sleep(0)
        self.transcript.end_model()
        self.transcript.add_text("end of the recording · Ctrl+C quits", "note")
        return False

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        name, _, arg = message.text.partition(" ")
        if name == "/turn" and arg.strip().isdigit():
            self.jump_to = int(arg)
            self.transcript.add_text(f"jumping to turn {self.jump_to}", "note")
        else:
            self.transcript.add_text(WATCH_HELP, "note")

    def action_pause(self) -> None:
        self.paused = not self.paused

    def action_step(self) -> None:
        self.steps += 1

    async def action_quit(self) -> None:
        self.exit(0)
