"""`codeloop replay FILE` in the TUI: the recorded events played into the same screen, at their
recorded pace, with pause, step and a jump to any turn.

The screen is the interactive app's (`tui.view.EventsApp`); only the source of events differs
(a recording played into an event stream instead of a live agent), so the transcript and the
latency panel show exactly what they showed live. No session is built to watch one. Paused,
the clock the events are stamped with and the panel reads stands still.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Protocol

from textual.binding import Binding

from codeloop.core.events import Event, ModelDone, ModelTextDelta, SessionStart, TurnStart
from codeloop.core.port import EventSource, Status
from codeloop.frontends.history import History
from codeloop.frontends.presenter import present
from codeloop.frontends.tui.prompt_input import PromptInput
from codeloop.frontends.tui.view import VIEW_BINDINGS, EventsApp

WATCH_HELP = ("replay: F5 pause/resume · F6 next event (pauses) · /turn N jumps to turn N · "
              "Ctrl+C quits")
TOKENS = ("prompt_tokens", "cached_tokens", "completion_tokens")
BYTES_PER_TOKEN = 4  # a reply's tokens while it streams, until its usage comes (shown with ~)


class Playback(EventSource, Protocol):
    """An event source the recorded events are played into."""

    def emit(self, event: Event) -> Event:
        """Stamp `event` with this source's clock and hand it to every subscriber."""


class PausableClock:
    """The playback's clock: the stream's, less the time spent paused. Its first subscriber
    restamps every event with it, so the panel's live figures and the events agree."""

    def __init__(self, into: Playback) -> None:
        self.into = into
        self.paused_since: float | None = None
        self._frozen = 0.0  # the time shown while paused
        self._paused_s = 0.0
        into.subscribe(self._restamp)

    def now(self) -> float:
        return self._frozen if self.paused_since is not None else self.into.now() - self._paused_s

    def pause(self, paused: bool) -> None:
        if paused and self.paused_since is None:
            self._frozen, self.paused_since = self.now(), time.perf_counter()
        elif not paused and self.paused_since is not None:
            self._paused_s += time.perf_counter() - self.paused_since
            self.paused_since = None

    def subscribe(self, subscriber: Callable[[Event], None]) -> None:
        self.into.subscribe(subscriber)

    def redact(self, text: str) -> str:
        return self.into.redact(text)

    def _restamp(self, event: Event) -> None:
        event.t = self.now()


class WatchApp(EventsApp):
    """Plays a recording; typing `/turn N` jumps, F5 pauses, F6 steps."""

    BINDINGS = [
        Binding("ctrl+c", "quit", "Quit", priority=True),
        # priority: the focused input's TextArea binds F6 (select line) for itself
        Binding("f5", "pause", "Pause", priority=True),
        Binding("f5", "resume", "Resume", priority=True),  # (the footer shows the one that applies)
        Binding("f6", "step", "Step", priority=True),
        *VIEW_BINDINGS,
    ]

    def __init__(self, recorded: list[Event], events: Playback, speed: float | None,
                 history: History | None = None,
                 wall: Callable[[], float] = time.perf_counter) -> None:
        self.clock = PausableClock(events)
        super().__init__(self.clock, history, wall)
        self.recorded = recorded
        self.speed = speed
        self.paused = False
        self.steps = 0
        self.jump_to = 0
        self.ended = False
        self._into = events
        self._start = next((e for e in recorded if isinstance(e, SessionStart)), None)
        self._last_turn = max((e.turn for e in recorded if isinstance(e, TurnStart)), default=0)
        self._tokens = dict.fromkeys(TOKENS, 0)  # summed over the replies played so far
        self._streaming = 0  # bytes of the reply streaming now (no usage yet)
        events.subscribe(self._count_tokens)

    def begin(self) -> None:
        self.run_worker(self._watch(), group="session")

    def figures(self) -> Status:
        """The recorded model and wire, and the tokens of the replies played so far (the one
        streaming estimated from its text)."""
        start = self._start
        tokens = dict(self._tokens)
        tokens["completion_tokens"] += -(-self._streaming // BYTES_PER_TOKEN)
        return Status(model=start.model if start else "",
                      transport=start.transport if start else "", **tokens,
                      estimated=bool(self._streaming))

    def state(self) -> str:
        if self.jump_to:
            return f"jumping to turn {self.jump_to}"
        if self.paused:
            return "paused"
        return "ended" if self.ended else "playing"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause", "resume"):
            return (action == "resume") == self.paused
        return True

    def _count_tokens(self, event: Event) -> None:
        if isinstance(event, ModelTextDelta):
            self._streaming += len(event.text.encode())
        elif isinstance(event, ModelDone):
            self._streaming = 0
            for key in TOKENS:
                self._tokens[key] += event.usage.get(key, 0)

    async def _watch(self) -> None:
        self.transcript.add_text(WATCH_HELP, "note")
        while True:
            if not await self._play():  # played to the end: wait for a jump
                self.ended = True
                self.refresh_status()
                while not self.jump_to:
                    await asyncio.sleep(0.05)
            self.clear()  # play again from the start, quickly, up to the turn
            self.ended, self._streaming = False, 0
            self._tokens = dict.fromkeys(TOKENS, 0)

    async def _play(self) -> bool:
        """Play the recording; True when a jump back asks for a restart."""
        origin, since = (self.recorded[0].t if self.recorded else 0.0), self.clock.now()
        for event in self.recorded:
            if self.jump_to and self.jump_to <= self.turn and isinstance(event, TurnStart):
                return True
            if isinstance(event, TurnStart) and event.turn == self.jump_to:
                self.jump_to = 0
                self.refresh_status()
                origin, since = event.t, self.clock.now()
            await self._until_due(event.t - origin, since)
            if self.paused and self._shows_something(event):
                self.steps = max(self.steps - 1, 0)  # a step ends at an event one can see
            # a copy: the stream stamps it with the playback clock; the recording keeps its times
            self._into.emit(dataclasses.replace(event))
            await asyncio.sleep(0)
        self.transcript.end_model()
        self.transcript.add_text("end of the recording · /turn N plays from turn N · "
                                 "Ctrl+C quits", "note")
        return False

    async def _until_due(self, offset: float, since: float) -> None:
        """Wait until `offset` seconds of playback after `since` (on the playback clock, which
        stands still while paused), or a step, or a jump; in short sleeps, so that F5 and F6
        act at once, not after the wait already begun."""
        while not self.jump_to:
            if self.paused:
                if self.steps:
                    return
            elif not self.speed or (delay := offset / self.speed
                                    - (self.clock.now() - since)) <= 0:
                return
            await asyncio.sleep(0.05 if self.paused else min(delay, 0.05))

    def _shows_something(self, event: Event) -> bool:
        # a reply's text steps whole (up to its end), not a few characters at a time
        return isinstance(event, ModelDone) or (
            self.shows(event) and not isinstance(event, ModelTextDelta) and bool(present(event)))

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        name, _, arg = message.text.partition(" ")
        if name == "/turn" and arg.strip().isdigit() and 1 <= int(arg) <= self._last_turn:
            self.jump_to = int(arg)
            self.transcript.add_text(f"jumping to turn {self.jump_to}", "note")
        elif name == "/turn":
            self.transcript.add_text(f"the recording has turns 1 to {self._last_turn}: "
                                     "/turn N", "error")
        else:
            self.transcript.add_text(WATCH_HELP, "note")
        self.refresh_status()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.clock.pause(self.paused)
        self.refresh_bindings()
        self.refresh_status()

    def action_resume(self) -> None:
        self.action_pause()

    def action_step(self) -> None:
        """The next event one can see; playing, it pauses first."""
        if not self.paused:
            self.action_pause()
        self.steps += 1

    async def action_quit(self) -> None:
        self.exit(0)
