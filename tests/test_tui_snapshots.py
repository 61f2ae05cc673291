"""The main screens as SVG snapshots (pytest-textual-snapshot), at 120×40 and 80×24.

The screen is the one the interactive app and the recording watcher share (`tui.view`): the
transcript (Markdown, a diff, test results, turn summaries), the latency panel, the status line
and the footer. It is filled by the bundled demo recording played at full speed, so every figure
on it is the recording's; the one measured live, the display lag, and the status line's clock
run on a clock that stands still. A change that alters a screen on purpose regenerates the
snapshots with `python -m pytest tests/test_tui_snapshots.py --snapshot-update`; review the
SVGs (the failure report shows both sides) with the change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codeloop.core.stream import EventStream
from codeloop.frontends.history import History
from codeloop.frontends.tui.prompt_input import PromptInput
from codeloop.frontends.tui.watch import WatchApp
from codeloop.replay.playback import load

RECORDING = Path(__file__).resolve().parents[1] / "sandbox" / "sessions" / "offbyone.jsonl"
SIZES = [pytest.param((120, 40), id="120x40"), pytest.param((80, 24), id="80x24")]


def watched(tmp_path: Path) -> WatchApp:
    recording = load(RECORDING)
    return WatchApp(recording.events, EventStream(), None, History(tmp_path / "history"),
                    wall=lambda: 0.0)


async def until_ended(pilot) -> None:
    app = pilot.app
    app.query_one(PromptInput).cursor_blink = False  # (a blink would be caught either way)
    for _ in range(400):  # a guard only: the recording plays in well under a second
        if app.ended:
            break
        await pilot.pause(0.05)
    assert app.ended, "the recording did not finish playing"
    await pilot.pause(0.3)  # the transcript's last flush, the panel's and status line's redraws
    app.refresh_status()


@pytest.mark.parametrize("size", SIZES)
def test_a_played_session_screen(snap_compare, tmp_path, size):
    assert snap_compare(watched(tmp_path), terminal_size=size, run_before=until_ended)


@pytest.mark.parametrize("size", SIZES)
def test_the_help_screen(snap_compare, tmp_path, size):
    async def help_shown(pilot) -> None:
        await until_ended(pilot)
        await pilot.press(*"/help", "enter")
        await pilot.pause(0.3)

    assert snap_compare(watched(tmp_path), terminal_size=size, run_before=help_shown)


@pytest.mark.parametrize("size", SIZES)
def test_a_paused_screen_without_the_panel(snap_compare, tmp_path, size):
    async def paused(pilot) -> None:
        await until_ended(pilot)
        await pilot.press("f2", "f5")
        await pilot.pause(0.3)
        pilot.app.refresh_status()

    assert snap_compare(watched(tmp_path), terminal_size=size, run_before=paused)
