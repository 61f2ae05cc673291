"""The one presenter: every event type has its wording, shared by the printer, REPL and TUI."""

from __future__ import annotations

import io

from codeloop.core.events import EVENT_TYPES, ModelTextDelta, PatchApplied, TurnStart
from codeloop.frontends.headless import ProgressPrinter
from codeloop.frontends.presenter import _PRESENTERS, Style, present


def test_every_event_type_has_a_presenter():
    assert set(_PRESENTERS) == set(EVENT_TYPES.values())


def test_a_streamed_reply_is_handed_on_whole_and_a_patch_in_the_shared_words():
    [shown] = present(ModelTextDelta(turn=1, text="x" * 30_000))
    assert shown.style == Style.MODEL and len(shown.text) == 30_000
    [applied] = present(PatchApplied(turn=1, files=["a.py"], commit="0123456789abc",
                                     already_applied=["h"], diffstat=""))
    assert applied.text == "✓ patch applied to a.py (0123456789) · 1 hunk(s) already applied"
    assert applied.style == Style.OK


def test_the_printer_writes_the_presenters_lines_and_bounds_a_long_reply():
    out = io.StringIO()
    printer = ProgressPrinter(out)
    printer(TurnStart(turn=1))
    printer(ModelTextDelta(turn=1, text="y" * 50_000))
    printer(TurnStart(turn=2))
    text = out.getvalue()
    assert text.startswith("\n── turn 1 ──\n") and text.endswith("\n── turn 2 ──\n")
    assert "characters not shown" in text and len(text) < 21_000
