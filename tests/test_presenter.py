"""The one presenter: every event type has its wording, shared by the printer, REPL and TUI."""

from __future__ import annotations

import io
import json

from codeloop.core.events import (
    EVENT_TYPES,
    ModelTextDelta,
    ModelToolCall,
    PatchApplied,
    TurnStart,
)
from codeloop.core.kinds import CallKind
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


def test_a_builtin_patch_call_is_shown_as_the_patch_it_is_with_its_path():
    operation = {"type": "update_file", "path": "pager/paginate.py",
                 "diff": "@@ def f():\n-    return 1\n+    return 2\n"}
    [shown] = present(ModelToolCall(turn=1, call_id="c", name="apply_patch",
                                    arguments=json.dumps(operation), kind=CallKind.PATCH))
    assert shown.text == "tool call: apply_patch"
    assert shown.diff.splitlines()[:3] == ["*** Begin Patch",
                                           "*** Update File: pager/paginate.py", "@@ def f():"]
