"""`codeloop replay FILE` in the TUI: the recorded events played into the same app, at their
recorded pace, with pause, step and a jump to any turn.

The app is the interactive one; only its source of events changes (a recording instead of a
live session), so the transcript and the latency panel show exactly what they showed live.
"""

from __future__ import annotations

import asyncio
import time

from textual.binding import Binding

from codeloop.core.events import Event, TurnStart
from codeloop.frontends.tui.app import CodeloopApp
from codeloop.frontends.tui.prompt_input import PromptInput

WATCH_HELP = ("replay: F5 pause/resume · F6 next event while paused · /turn N jumps to turn N · "
              "Ctrl+C quits")


class WatchApp(CodeloopApp):
    """Plays a recording; typing `/turn N` jumps, F5 pauses, F6 steps."""

    BINDINGS = [
        Binding("ctrl+c", "quit", "Quit", priority=True),
        Binding("f5", "pause", "Pause"),
        Binding("f6", "step", "Step"),
        Binding("f2", "toggle_panel", "Latency panel"),
        Binding("ctrl+o", "toggle_output", "Test output"),
    ]

    def __init__(self, session, recorded: list[Event], speed: float | None) -> None:
        super().__init__(session)
        self.recorded = recorded
        self.speed = speed
        self.paused = False
        self.steps = 0
        self.jump_to = 0

    async def _open(self) -> None:
        self.opened = True
        self.transcript.add_text(WATCH_HELP, "note")
        while True:
            if not await self._play():  # played to the end: wait for a jump
                while not self.jump_to:
                    await asyncio.sleep(0.05)
            self.transcript.clear_all()  # play again from the start, quickly, up to the turn
            self.latency.turns.clear()
            self._turn = 0

    async def _play(self) -> bool:
        """Play the recording; True when a jump back asks for a restart."""
        origin, started = (self.recorded[0].t if self.recorded else 0.0), time.perf_counter()
        for event in self.recorded:
            if self.jump_to and self.jump_to <= self._turn and isinstance(event, TurnStart):
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
            self.session.events.emit(event)
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
