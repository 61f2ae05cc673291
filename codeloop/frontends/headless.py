"""The headless human-readable printer: progress on stderr and the final summary.

A consumer of events only; it decides nothing. Model text streams through as it arrives, up to a
bound: a reply or message of megabytes (a huge patch) shows its head and its tail, and how much
was left out between them.
"""

from __future__ import annotations

import sys
from typing import IO

from codeloop.core.events import (
    Compaction,
    ErrorEvent,
    Event,
    ModelDone,
    ModelRetry,
    ModelTextDelta,
    ModelToolCall,
    PatchApplied,
    PatchRejected,
    SandboxReady,
    SessionEnd,
    SessionStart,
    TestDone,
    TestRunnerChange,
    TestStart,
    ToolResult,
    TransportChange,
    TurnEnd,
    TurnStart,
)
from codeloop.testrunner.run import BoundedText, bound

HEAD, TAIL = 16_000, 4_000  # characters of one text shown before and after what is left out
SPAN_ORDER = ("prompt_ms", "connect_ms", "ttfb_ms", "ttft_ms", "decode_ms", "tools_ms",
              "apply_ms", "test_ms", "retry_wait_ms", "overhead_ms")


def left_out(count: int) -> str:
    return f"\n… [{count:,} characters not shown] …\n"


def clip(text: str) -> str:
    """`text`, or when longer than HEAD + TAIL its head and tail around what was left out."""
    return bound(text, HEAD, TAIL, left_out)


def format_spans(spans: dict[str, float]) -> str:
    shown = [f"{key[:-3]} {spans[key]:.1f}" for key in SPAN_ORDER if key in spans]
    text = " | ".join(shown) + " ms"
    if spans.get("tokens_per_s"):
        text += f" | {spans['tokens_per_s']:.0f} tok/s"
    return text


class ProgressPrinter:
    """Writes what happens, as it happens, for a person watching a terminal or a CI log."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._out = stream or sys.stderr
        self._text: BoundedText | None = None  # the text streaming now: its head is written

    def _line(self, text: str) -> None:
        if self._text is not None:
            self._end_text()
        self._out.write(clip(text) + "\n")
        self._out.flush()

    def _stream(self, text: str) -> None:
        """A piece of streaming text: written while within HEAD, else kept for the tail."""
        if self._text is None:
            self._text = BoundedText(HEAD, TAIL, left_out)
        if shown := self._text.add(text):
            self._out.write(shown)
            self._out.flush()

    def _end_text(self) -> None:
        text, self._text = self._text, None
        assert text is not None
        self._out.write((left_out(text.elided) if text.elided else "") + text.tail + "\n")

    def __call__(self, event: Event) -> None:  # noqa: C901 - one branch per event type
        if isinstance(event, ModelTextDelta):
            self._stream(event.text)
        elif isinstance(event, SessionStart):
            self._line(f"codeloop {event.version} · {event.model} via {event.transport} "
                       f"({event.base_url}) · tests: {event.test_command}")
            if event.task:
                self._line(f"task: {event.task}")
        elif isinstance(event, SandboxReady):
            self._line(f"sandbox: {event.path} on branch {event.branch} "
                       f"({event.elapsed_ms:.0f} ms)")
        elif isinstance(event, TurnStart):
            self._line(f"\n── turn {event.turn} ──")
        elif isinstance(event, ModelRetry):
            what = "the turn restarts" if event.restart else f"retry {event.attempt}"
            self._line(f"model: {what} in {event.delay_s:.1f}s ({event.reason})")
        elif isinstance(event, Compaction):
            self._line(f"context compacted ({event.reason}): {event.tokens_before} → "
                       f"{event.tokens_after} tokens, {event.turns_replaced} turns summarised, "
                       f"{event.duration_ms:.0f} ms")
        elif isinstance(event, TestRunnerChange):
            self._line(f"test runner ({event.mode}): {event.message}")
        elif isinstance(event, TransportChange):
            self._line(f"transport ({event.kind}): {event.transport}: {event.message}")
        elif isinstance(event, ModelToolCall):
            self._line(f"tool call: {event.name}")
        elif isinstance(event, ModelDone):
            usage = event.usage
            self._line(f"model: {event.finish_reason}, {usage.get('prompt_tokens', 0)} prompt "
                       f"({usage.get('cached_tokens', 0)} cached) + "
                       f"{usage.get('completion_tokens', 0)} completion tokens")
        elif isinstance(event, ToolResult):
            self._line(f"{event.name}: {len(event.output)} chars returned")
        elif isinstance(event, PatchApplied):
            note = f" ({len(event.already_applied)} hunk(s) already applied)" \
                if event.already_applied else ""
            self._line(f"patch applied: {', '.join(event.files) or 'no change'} "
                       f"→ {event.commit[:10]}{note}")
        elif isinstance(event, PatchRejected):
            self._line("patch rejected, nothing applied:\n  "
                       + event.reason.replace("\n", "\n  "))
        elif isinstance(event, TestStart):
            self._line(("baseline tests: " if event.turn == 0 else "tests: ") + event.command)
        elif isinstance(event, TestDone):
            self._line(f"tests: {event.summary} ({event.duration_ms / 1000:.2f}s, {event.mode})")
            for failure in event.failures[:10]:
                self._line(f"  ✗ {failure['id']}: {failure['message'][:160]}")
        elif isinstance(event, TurnEnd):
            self._line(f"turn {event.turn}: {event.outcome} · {format_spans(event.spans)}")
        elif isinstance(event, ErrorEvent):
            self._line(f"error ({event.kind}): {event.message}")
        elif isinstance(event, SessionEnd):
            self._summary(event)

    def _summary(self, event: SessionEnd) -> None:
        totals = event.totals
        self._line(f"\n══ {event.outcome} (exit {event.exit_code}) · {totals.get('turns', 0):.0f} "
                   f"turn(s) · {totals.get('wall_ms', 0) / 1000:.2f}s")
        self._line(f"tokens: {totals.get('prompt_tokens', 0):.0f} prompt "
                   f"({totals.get('cached_tokens', 0):.0f} cached), "
                   f"{totals.get('completion_tokens', 0):.0f} completion")
        self._line(f"time in turns: {format_spans(totals)} (baseline tests "
                   f"{totals.get('baseline_test_ms', 0):.0f} ms)")
        if event.diffstat:
            self._line(event.diffstat)
        if event.applied_to_worktree:
            self._line("the changes were applied to your working tree")
        elif event.branch:
            self._line(f"the result is on branch {event.branch} (use --apply to apply it to "
                       "your working tree)")
