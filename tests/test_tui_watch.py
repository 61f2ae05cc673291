"""Watching a recording in the TUI (`codeloop replay FILE`): pause, step, jump, the paused
state on screen, the panel's clock and the status bar's tokens.

Pilot on the bundled demo recording (`sandbox/sessions/offbyone.jsonl`), played into a real
event stream; keys go through the app as the terminal's would (the input box has focus).
"""

from __future__ import annotations

import asyncio
import time

from codeloop.core.events import Event, TurnStart
from codeloop.core.stream import EventStream
from codeloop.frontends.tui.prompt_input import PromptInput
from codeloop.frontends.tui.status import StatusLine
from codeloop.frontends.tui.transcript import Transcript
from codeloop.frontends.tui.watch import WatchApp
from codeloop.replay.playback import load
from codeloop.replay.run import source_sandbox

SLOW = 0.1  # a tenth of the recorded pace: the two turns take ~20 s unpaused


def recorded() -> list[Event]:
    return load(source_sandbox() / "sessions" / "offbyone.jsonl").events


async def until(pilot, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out; transcript ends with:\n"
                                 + pilot.app.query_one(Transcript).plain_text()[-600:])
        await pilot.pause(0.05)


def status(app: WatchApp) -> str:
    app.refresh_status()
    return app.query_one(StatusLine).line.plain


async def send(pilot, line: str) -> None:
    pilot.app.query_one(PromptInput).text = line
    await pilot.press("enter")


def test_paused_f6_steps_one_visible_event_and_the_screen_says_paused():
    async def scenario() -> None:
        app = WatchApp(recorded(), EventStream(), speed=SLOW)
        async with app.run_test(size=(110, 32)) as pilot:
            transcript = app.query_one(Transcript)
            await until(pilot, lambda: "baseline tests" in transcript.plain_text())
            await pilot.press("f5")
            assert "paused" in status(app)
            assert app.active_bindings["f5"].binding.description == "Resume"
            before = len(transcript.items)
            await pilot.press("f6")
            await until(pilot, lambda: len(transcript.items) > before)
            await pilot.pause(0.3)
            # one step: the baseline's result, and nothing after it while paused
            assert [i.text.splitlines()[0] for i in transcript.items[before:]] == [
                "✗ tests: 2 failed, 5 passed in 0.05s (0.69s, cold)"]
            await pilot.press("f5")
            assert "playing" in status(app)
            assert app.active_bindings["f5"].binding.description == "Pause"
            await pilot.press("f6")  # playing: F6 pauses, and steps
            assert app.paused

    asyncio.run(scenario())


def test_the_panel_clock_stands_still_while_paused():
    async def scenario() -> None:
        app = WatchApp(recorded(), EventStream(), speed=SLOW)
        async with app.run_test(size=(110, 32)) as pilot:
            await until(pilot, lambda: app.turn == 1)
            await pilot.press("f5")
            await pilot.pause(0.1)
            spans = app.latency.live_spans()
            assert spans and not app.latency.turns[-1].done
            await pilot.pause(0.5)
            assert app.latency.live_spans() == spans
            await pilot.press("f5")
            await until(pilot, lambda: app.latency.live_spans() != spans)

    asyncio.run(scenario())


def test_turn_jumps_back_and_an_unknown_turn_is_refused_without_freezing():
    events = recorded()
    turns = [e.turn for e in events if isinstance(e, TurnStart)]
    assert turns == [1, 2]

    async def scenario() -> None:
        app = WatchApp(events, EventStream(), speed=None)
        async with app.run_test(size=(110, 32)) as pilot:
            transcript = app.query_one(Transcript)
            await until(pilot, lambda: "end of the recording" in transcript.plain_text())
            assert "ended" in status(app)
            assert "tokens 3,301 (0% cached) + 321" in status(app)  # both replies' usage
            await send(pilot, "/turn 9")
            await pilot.pause(0.3)
            assert "the recording has turns 1 to 2" in transcript.plain_text()
            assert app.jump_to == 0 and "ended" in status(app)
            await send(pilot, "/turn 2")
            await until(pilot, lambda: "jumping to turn 2" not in transcript.plain_text()
                        and "end of the recording" in transcript.plain_text())
            assert transcript.plain_text().count("tests: 7 passed") == 1
            assert "unknown command" not in transcript.plain_text()
            assert [t.turn for t in app.latency.turns] == [1, 2]

    asyncio.run(scenario())
