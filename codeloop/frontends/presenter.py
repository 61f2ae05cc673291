"""The one presenter: what each event looks like to a person, for every front end.

Owns the wording and the style name (ok, error, note, tool, dim, user, model) of every event,
as one table keyed by event type that covers them all (tests/test_presenter.py checks that a new
event type cannot be left out), the bounds on how much of one text is shown, and how a patch is
cut down for a log (`compact_diff`: its changes with a little context). The headless
printer, the line REPL and the TUI show what it returns; it draws nothing and decides nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from codeloop.core.bounded import BoundedText, bound
from codeloop.core.errors import CodeloopError
from codeloop.core.events import (
    Compaction,
    ErrorEvent,
    Event,
    ModelDone,
    ModelFirstByte,
    ModelRequest,
    ModelRetry,
    ModelTextDelta,
    ModelToolCall,
    Notice,
    PatchApplied,
    PatchProposed,
    PatchRejected,
    SandboxReady,
    SessionEnd,
    SessionStart,
    TestDone,
    TestOutput,
    TestRunnerChange,
    TestStart,
    ToolResult,
    TransportChange,
    TurnEnd,
    TurnStart,
    UserMessage,
)
from codeloop.core.kinds import CallKind, ExitCode
from codeloop.edits.extract import operation_patch, patch_argument

HEAD, TAIL = 16_000, 4_000  # characters of one text shown before and after what is left out
SPAN_ORDER = ("prompt_ms", "connect_ms", "ttfb_ms", "ttft_ms", "decode_ms", "tools_ms",
              "apply_ms", "test_ms", "retry_wait_ms", "overhead_ms")
FAILURES_SHOWN = 10
DIFF_LINES, DIFF_CONTEXT = 40, 2  # a patch shown in a log: lines at most, context per change
CANCELLED = "cancelled: the sandbox is at its last commit"


class DiffLine(StrEnum):
    """What one line of a patch is; a log maps each to its colour or attribute."""

    FILE = "file"
    HUNK = "hunk"
    ADDED = "added"
    REMOVED = "removed"
    CONTEXT = "context"
    MORE = "more"  # the marker where a long patch is cut


class Style(StrEnum):
    """How a shown text looks; a front end maps each to its colours."""

    MODEL = "model"  # the model's reply, streamed as it arrives
    USER = "user"  # what the user asked
    OK = "ok"
    ERROR = "error"
    NOTE = "note"
    TOOL = "tool"
    DIM = "dim"


@dataclass(frozen=True)
class Shown:
    """One thing to show. A log prints `text`; a screen also shows `diff` as a diff under it,
    and keeps `output` (a test run's output) behind a fold under it."""

    text: str
    style: Style = Style.NOTE
    diff: str = ""
    output: str = ""


def left_out(count: int) -> str:
    return f"\n… [{count:,} characters not shown] …\n"


def clip(text: str) -> str:
    """`text`, or when longer than HEAD + TAIL its head and tail around what was left out."""
    return bound(text, HEAD, TAIL, left_out)


def bounded_stream() -> BoundedText:
    """Where a streamed text goes: its head shown live, its tail kept for the end."""
    return BoundedText(HEAD, TAIL, left_out)


def format_spans(spans: dict[str, float]) -> str:
    shown = [f"{key[:-3]} {spans[key]:.1f}" for key in SPAN_ORDER if key in spans]
    text = " | ".join(shown) + " ms"
    if spans.get("tokens_per_s"):
        text += f" | {spans['tokens_per_s']:.0f} tok/s"
    return text


# the server's own account beside the spans (parts of TTFT and decode): label, span
SERVER_ORDER = (("queue", "server_queue_ms"), ("prefill", "server_prefill_ms"),
                ("decode", "server_decode_ms"), ("network", "network_ms"))


def server_text(spans: dict[str, Any], cache: dict[str, Any] | None = None) -> str:
    """What the server said of a turn (or, from `session.end` totals, of all): its queue,
    prefill and decode, the network left of TTFT, the prompt tokens it processed and reused,
    the tier that served; empty where it said nothing (nothing is shown as zero)."""
    cache = cache or {}
    parts = [f"{label} {spans[key]:.1f}" for label, key in SERVER_ORDER if key in spans]
    text = "server: " + " | ".join(parts) + " ms" if parts else ""
    tokens = [f"{cache[key]:,} {word}" for key, word in (("prompt_tokens_processed", "processed"),
                                                         ("prompt_tokens_reused", "reused"))
              if key in cache]
    if tokens:
        text = (text + " · " if text else "server: ") + "prompt " + ", ".join(tokens)
    if cache.get("service_tier"):
        text += (" · " if text else "") + f"tier {cache['service_tier']}"
    return text


def tiers_text(asked: str, served: dict[str, int]) -> str:
    """The tier asked for and the tiers that served, with their turn counts ("" if none)."""
    if not asked and not served:
        return ""
    counts = ", ".join(f"{tier} ×{n}" for tier, n in served.items())
    return (f"service tier: asked {asked or 'default'}" if asked else "service tier:") + \
        (f", served {counts}" if counts else ", served: not reported")


def _turn_end(event: TurnEnd) -> tuple[Shown, ...]:
    shown = [Shown(f"turn {event.turn}: {event.outcome} · {format_spans(event.spans)}",
                   Style.DIM)]
    if server := server_text(event.spans, event.cache):
        shown.append(Shown(f"  {server}", Style.DIM))
    return tuple(shown)


def failure_text(exc: BaseException, redact: Callable[[str], str]) -> str:
    """What a front end says of an error that ended a turn or a command; `redact` scrubs the
    error's message (`EventSource.redact`)."""
    if isinstance(exc, CodeloopError):
        label = "model error" if exc.exit_code == ExitCode.MODEL else "error"
        return f"{label}: {redact(str(exc))}"
    return f"error: {type(exc).__name__}: {redact(str(exc))}"


def _diff_kinds(lines: list[str]) -> list[DiffLine | None]:
    """The kind of each patch line (unified diff or V4A); None: a header a log leaves out. A
    `--- `/`+++ ` pair names a file; alone, each is a changed line that happens to look so."""
    kinds: list[DiffLine | None] = []
    for i, line in enumerate(lines):
        pair = line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")
        if pair or line.startswith(("diff --git", "index ", "*** Begin", "*** End")):
            kinds.append(None)
        elif (line.startswith("+++ ") and i and lines[i - 1].startswith("--- ")) \
                or line.startswith(("*** Update File:", "*** Add File:", "*** Delete File:")):
            kinds.append(DiffLine.FILE)
        elif line.startswith("@@"):
            kinds.append(DiffLine.HUNK)
        elif line[:1] in ("+", "-"):
            kinds.append(DiffLine.ADDED if line[0] == "+" else DiffLine.REMOVED)
        else:
            kinds.append(DiffLine.CONTEXT)
    return kinds


def compact_diff(patch: str, limit: int = DIFF_LINES, context: int = DIFF_CONTEXT
                 ) -> list[tuple[DiffLine, str]]:
    """`patch` as a log shows it: per file its name, then the changed hunks with `context`
    lines around each change, cut after `limit` lines with a "… N more lines" marker."""
    text = patch.splitlines()
    lines = [(kind, line) for kind, line in zip(_diff_kinds(text), text, strict=True)
             if kind is not None]
    changes = [i for i, (kind, _) in enumerate(lines)
               if kind in (DiffLine.ADDED, DiffLine.REMOVED)]
    near = {j for i in changes for j in range(i - context, i + context + 1)}
    kept: list[tuple[DiffLine, str]] = []
    for i, (kind, line) in enumerate(lines):
        if kind is DiffLine.FILE:
            line = line.removeprefix("+++ ").removeprefix("b/").removeprefix("*** ")
            line = line.removeprefix("Update File: ")
        if kind is not DiffLine.CONTEXT or i in near:
            kept.append((kind, line))
    if len(kept) > limit:
        kept = kept[:limit] + [(DiffLine.MORE, f"… {len(kept) - limit} more lines")]
    return kept


def present(event: Event) -> tuple[Shown, ...]:
    """What `event` shows, in order (nothing for the events no one reads as text)."""
    return tuple(Shown(clip(s.text), s.style, clip(s.diff), s.output) if s.style != Style.MODEL
                 else s for s in _PRESENTERS[type(event)](event))


def _nothing(_: Event) -> tuple[Shown, ...]:
    return ()


def _session_start(event: SessionStart) -> tuple[Shown, ...]:
    tier = f" · tier {event.service_tier}" if event.service_tier else ""
    line = Shown(f"codeloop {event.version} · {event.model} via {event.transport} "
                 f"({event.base_url}){tier} · tests: {event.test_command}", Style.DIM)
    return (line, Shown(f"task: {event.task}", Style.DIM)) if event.task else (line,)


def _sandbox_ready(event: SandboxReady) -> tuple[Shown, ...]:
    return (Shown(f"sandbox: {event.path} on branch {event.branch} "
                  f"({event.elapsed_ms:.0f} ms)", Style.DIM),)


def _model_retry(event: ModelRetry) -> tuple[Shown, ...]:
    what = "the turn restarts" if event.restart else f"retry {event.attempt}"
    return (Shown(f"model: {what} in {event.delay_s:.1f}s ({event.reason})", Style.ERROR),)


def _compaction(event: Compaction) -> tuple[Shown, ...]:
    return (Shown(f"context compacted ({event.reason}): {event.turns_replaced} older turns → "
                  f"a summary, {event.turns_kept} kept; {event.tokens_before:,} → "
                  f"{event.tokens_after:,} tokens in {event.duration_ms:.0f} ms"),)


def _tool_call(event: ModelToolCall) -> tuple[Shown, ...]:
    if event.name != "apply_patch":
        return (Shown(f"tool call: {event.name} {event.arguments}", Style.TOOL),)
    read = operation_patch if event.kind is CallKind.PATCH else patch_argument
    try:
        diff = read(event.arguments)
    except ValueError:  # not what the tool takes: shown as it came
        diff = event.arguments
    return (Shown(f"tool call: {event.name}", Style.TOOL, diff=diff),)


def _model_done(event: ModelDone) -> tuple[Shown, ...]:
    usage = event.usage
    return (Shown(f"model: {event.finish_reason}, {usage.get('prompt_tokens', 0)} prompt "
                  f"({usage.get('cached_tokens', 0)} cached) + "
                  f"{usage.get('completion_tokens', 0)} completion tokens", Style.DIM),)


def _patch_applied(event: PatchApplied) -> tuple[Shown, ...]:
    note = f" · {len(event.already_applied)} hunk(s) already applied" \
        if event.already_applied else ""
    return (Shown(f"✓ patch applied to {', '.join(event.files) or 'nothing new'} "
                  f"({event.commit[:10]}){note}", Style.OK),)


def _patch_rejected(event: PatchRejected) -> tuple[Shown, ...]:
    return (Shown("✗ patch rejected, nothing applied:\n  " + event.reason.replace("\n", "\n  "),
                  Style.ERROR),)


def _test_start(event: TestStart) -> tuple[Shown, ...]:
    return (Shown(("baseline tests: " if event.turn == 0 else "tests: ") + event.command,
                  Style.TOOL),)


def _test_done(event: TestDone) -> tuple[Shown, ...]:
    scope = "" if event.scope == "full" else f", {event.scope} only"
    lines = [("✓ " if event.passed else "✗ ") + f"tests: {event.summary} "
             f"({event.duration_ms / 1000:.2f}s, {event.mode}{scope})"]
    lines += [f"  ✗ {failure.id}: {failure.message[:160]}"
              for failure in event.failures[:FAILURES_SHOWN]]
    return (Shown("\n".join(lines), Style.OK if event.passed else Style.ERROR,
                  output=event.output),)


def _session_end(event: SessionEnd) -> tuple[Shown, ...]:
    totals = event.totals
    shown = [
        f"\n══ {event.outcome} (exit {event.exit_code}) · {totals.get('turns', 0):.0f} "
        f"turn(s) · {totals.get('wall_ms', 0) / 1000:.2f}s",
        f"tokens: {totals.get('prompt_tokens', 0):.0f} prompt "
        f"({totals.get('cached_tokens', 0):.0f} cached), "
        f"{totals.get('completion_tokens', 0):.0f} completion",
        f"time in turns: {format_spans(totals)} (baseline tests "
        f"{totals.get('baseline_test_ms', 0):.0f} ms)",
    ]
    if server := server_text(totals):
        shown.append(f"{server} (summed over the turns it reported)")
    if event.diffstat:
        shown.append(event.diffstat)
    if event.applied_to_worktree:
        shown.append("the changes were applied to your working tree")
    elif event.branch:
        shown.append(f"the result is on branch {event.branch} (use --apply to apply it to "
                     "your working tree)")
    return tuple(Shown(text) for text in shown)


_PRESENTERS: dict[type[Event], Callable[[Any], tuple[Shown, ...]]] = {
    SessionStart: _session_start,
    SandboxReady: _sandbox_ready,
    UserMessage: lambda e: (Shown(e.text, Style.USER),),
    Notice: lambda e: (Shown(e.message),),
    Compaction: _compaction,
    TurnStart: lambda e: (Shown(f"\n── turn {e.turn} ──", Style.DIM),),
    ModelRequest: _nothing,
    ModelFirstByte: _nothing,
    ModelTextDelta: lambda e: (Shown(e.text, Style.MODEL),),
    ModelToolCall: _tool_call,
    ModelRetry: _model_retry,
    TransportChange: lambda e: (Shown(f"transport ({e.kind}): {e.transport}: {e.message}"),),
    ModelDone: _model_done,
    ToolResult: lambda e: (Shown(f"{e.name}: {len(e.output)} chars returned", Style.TOOL),),
    PatchProposed: _nothing,
    PatchApplied: _patch_applied,
    PatchRejected: _patch_rejected,
    TestStart: _test_start,
    TestOutput: _nothing,
    TestDone: _test_done,
    TestRunnerChange: lambda e: (Shown(f"test runner ({e.mode}): {e.message}"),),
    TurnEnd: _turn_end,
    ErrorEvent: lambda e: (Shown(f"error ({e.kind}): {e.message}", Style.ERROR),),
    SessionEnd: _session_end,
}
