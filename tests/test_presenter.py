"""The one presenter: every event type has its wording, shared by the printer, REPL and TUI."""

from __future__ import annotations

import io
import json

from codeloop.core.events import (
    EVENT_TYPES,
    ModelTextDelta,
    ModelToolCall,
    PatchApplied,
    PatchProposed,
    PatchRejected,
    TurnStart,
)
from codeloop.core.kinds import CallKind
from codeloop.frontends.headless import ProgressPrinter
from codeloop.frontends.presenter import _PRESENTERS, DiffLine, Style, compact_diff, present


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


def test_a_long_patch_is_shown_per_file_with_a_little_context_and_cut_with_a_count():
    body = "".join(f" line {i}\n" for i in range(10))
    changes = "".join(f"-old {i}\n+new {i}\n" for i in range(30))
    patch = ("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,70 +1,70 @@\n"
             + body + changes + body)
    shown = compact_diff(patch)
    assert shown[:2] == [(DiffLine.FILE, "a.py"), (DiffLine.HUNK, "@@ -1,70 +1,70 @@")]
    assert shown[2:4] == [(DiffLine.CONTEXT, " line 8"), (DiffLine.CONTEXT, " line 9")]
    assert len(shown) == 41 and shown[-1] == (DiffLine.MORE, "… 26 more lines")


def test_a_removed_line_that_looks_like_a_header_stays_a_removed_line():
    patch = "--- a/q.sql\n+++ b/q.sql\n@@ -1 +1 @@\n--- a comment\n+-- the comment\n"
    assert compact_diff(patch) == [(DiffLine.FILE, "q.sql"), (DiffLine.HUNK, "@@ -1 +1 @@"),
                                   (DiffLine.REMOVED, "--- a comment"),
                                   (DiffLine.ADDED, "+-- the comment")]


def test_the_printer_shows_an_applied_patch_under_its_line_and_only_then():
    patch = "--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
    for colour, added in ((False, "  +x = 2\n"), (True, "  \x1b[32m+x = 2\x1b[0m\n")):
        out = io.StringIO()
        printer = ProgressPrinter(out, colour=colour)
        printer(PatchProposed(turn=1, source="text", patch=patch))
        printer(PatchApplied(turn=1, files=["a.py"], commit="0123456789", already_applied=[],
                             diffstat=""))
        assert out.getvalue().endswith(added) and "x = 1" in out.getvalue()
    out = io.StringIO()
    quiet = ProgressPrinter(out, diffs=False)
    quiet(PatchProposed(turn=1, source="text", patch=patch))
    quiet(PatchApplied(turn=1, files=["a.py"], commit="0123456789", already_applied=[],
                       diffstat=""))
    assert "x = 2" not in out.getvalue()
    rejected = io.StringIO()
    printer = ProgressPrinter(rejected)
    printer(PatchProposed(turn=1, source="text", patch=patch))
    printer(PatchRejected(turn=1, reason="no such file"))
    printer(PatchApplied(turn=2, files=[], commit="0123456789", already_applied=[], diffstat=""))
    assert "x = 2" not in rejected.getvalue()
