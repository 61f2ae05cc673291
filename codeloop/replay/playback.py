"""Recorded sessions as a producer: read a recording, play it back, re-execute it.

Owns the recording format checks (version in the first line; a corrupt line or a field of the
wrong type is an error naming the line; event types and fields of a newer codeloop are skipped
and noted; a truncated last line — a crash — or a missing `session.end` replays what is there and
says so), the watch player (events at
their recorded pace), the replay model client (recorded replies fed to a real session, which
really applies the patches and really runs the tests) and the divergence report. Re-asking the
recorded requests is `replay.ask`'s.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeloop.context.tools import BUILTIN_MARK
from codeloop.core.codec import event_from_dict
from codeloop.core.conversation import Item
from codeloop.core.errors import CodeloopError
from codeloop.core.events import (
    FORMAT_VERSION,
    Event,
    ModelDone,
    ModelFirstByte,
    ModelRequest,
    ModelRetry,
    ModelTextDelta,
    ModelToolCall,
    PatchApplied,
    PatchRejected,
    SessionEnd,
    TestDone,
)
from codeloop.core.kinds import LEGACY_EDIT_MODES, ExitCode
from codeloop.replay.recorder import References
from codeloop.transport import TransportError
from codeloop.transport.reply import ms

REPLY_EVENTS = (ModelFirstByte, ModelTextDelta, ModelToolCall, ModelDone)


class RecordingError(CodeloopError):
    """The file is not a recording codeloop can replay (the message says why)."""

    exit_code = ExitCode.USAGE


@dataclass
class Recording:
    path: Path
    events: list[Event]
    truncated: bool = False
    unknown_types: set[str] = field(default_factory=set)  # skipped: from a newer codeloop
    unknown_fields: set[str] = field(default_factory=set)  # `type.field`, dropped likewise

    @property
    def start(self) -> Any:
        return self.events[0]

    def turns(self) -> list[int]:
        return sorted({e.turn for e in self.events if isinstance(e, ModelDone)})

    def notices(self) -> list[str]:
        """What the user is told before it plays: what was skipped, and an unfinished end."""
        notes = []
        skipped = [f"{what} {', '.join(sorted(names))}" for what, names in (
            ("event type(s)", self.unknown_types), ("field(s)", self.unknown_fields)) if names]
        if skipped:
            notes.append(f"{self.path}: skipped what this codeloop does not know (written by a "
                         f"newer version?): {'; '.join(skipped)}")
        if self.truncated:
            notes.append(f"{self.path}: the last line was cut off and no session.end follows "
                         "(the session crashed?); replaying the complete lines")
        elif not any(isinstance(e, SessionEnd) for e in self.events):
            notes.append(f"{self.path}: no session.end: the session did not finish (it was "
                         "killed, or is still running); replaying what is there")
        return notes


def _edit_tool_of(start: dict[str, Any]) -> dict[str, Any]:
    """A session.start written before `edit_tool` replaced `edit_mode`, as it is now."""
    start = dict(start)
    mode = start.pop("edit_mode")
    start.setdefault("edit_tool", LEGACY_EDIT_MODES.get(mode, mode))
    return start


def load(path: Path) -> Recording:
    """Read and check a recording."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordingError(f"{path}: cannot read it ({exc})") from None
    lines = raw.split("\n")
    ends_cleanly = raw.endswith("\n")
    if ends_cleanly:
        lines.pop()
    if not lines or not lines[0].strip():
        raise RecordingError(f"{path}: empty, not a codeloop recording")
    try:
        first = json.loads(lines[0])
    except (ValueError, RecursionError):
        raise RecordingError(f"{path}: line 1 is not JSON; not a codeloop recording") from None
    if not isinstance(first, dict) or first.get("type") != "session.start":
        raise RecordingError(f"{path}: line 1 is not a session.start event; not a codeloop "
                             "recording")
    version = first.get("format")
    if not isinstance(version, int):
        raise RecordingError(f"{path}: no format version in line 1")
    if version > FORMAT_VERSION:
        raise RecordingError(f"{path}: recording format {version} is newer than this codeloop "
                             f"reads (format {FORMAT_VERSION}); upgrade codeloop")
    recording = Recording(path, [])
    references = References()  # a large string is written once; later copies refer to it
    for number, line in enumerate(lines, 1):
        try:
            data = json.loads(line)
        except RecursionError:  # deeper than the parser goes: no line codeloop wrote
            raise RecordingError(f"{path}: line {number} is corrupt (nested too deeply to "
                                 "read)") from None
        except ValueError as exc:
            if number == len(lines) and not ends_cleanly:
                recording.truncated = True  # the process died while writing its last line
                break
            raise RecordingError(f"{path}: line {number} is corrupt ({exc})") from None
        skipped: set[str] = set()  # what a newer codeloop wrote, left out
        if number == 1 and isinstance(data, dict) and "edit_mode" in data:
            data = _edit_tool_of(data)
        try:
            event = event_from_dict(references.resolve(data), skipped)
        except RecursionError:
            raise RecordingError(f"{path}: line {number} is damaged: nested too deeply to "
                                 "read") from None
        except ValueError as exc:
            raise RecordingError(f"{path}: line {number} is damaged: {exc}") from None
        if event is None:
            recording.unknown_types |= skipped
        else:
            recording.unknown_fields |= skipped
            recording.events.append(event)
    return recording


def reply_events(recording: Recording) -> dict[int, list[Event]]:
    """Per turn, the events of the model's final (successful) reply."""
    replies: dict[int, list[Event]] = {}
    for event in recording.events:
        if isinstance(event, ModelRetry):
            replies[event.turn] = []  # what came before a retry was not the reply
        elif isinstance(event, REPLY_EVENTS):
            replies.setdefault(event.turn, []).append(event)
    return {turn: events for turn, events in replies.items()
            if any(isinstance(e, ModelDone) for e in events)}


async def play(events: list[Event], speed: float | None,
               emit: Callable[[Event], None]) -> None:
    """Emit events at their recorded pace divided by `speed` (None: as fast as possible)."""
    started = time.perf_counter()
    origin = events[0].t if events else 0.0
    for event in events:
        if speed:
            delay = (event.t - origin) / speed - (time.perf_counter() - started)
            if delay > 0:
                await asyncio.sleep(delay)
        emit(event)


class ReplayClient:
    """A ModelClient answering each turn with the recorded reply for that turn."""

    name = "replay"

    def __init__(self, recording: Recording, speed: float | None) -> None:
        self.replies = reply_events(recording)
        self.speed = speed
        self.model = str(recording.start.model)
        # the recorded requests' wire had the built-in apply_patch tool if they offered it
        self.builtin_tools = frozenset({"apply_patch"}) if any(
            name.endswith(BUILTIN_MARK) for e in recording.events
            if isinstance(e, ModelRequest) for name in e.tools) else frozenset()

    async def connect(self) -> None:  # the replies are recorded: nothing is sent
        return None

    async def warm_up(self, instructions: str, tools: list[dict[str, Any]]) -> str:
        return ""

    def prepare(self, items: list[Item]) -> None:
        return None

    async def stream(self, turn: int, items: list[Item],
                     tools: list[dict[str, Any]]) -> AsyncIterator[Event]:
        recorded = self.replies.get(turn)
        if recorded is None:
            raise TransportError(f"the recording has no model reply for turn {turn}",
                                 retryable=False)
        first = recorded[0]
        # the request went out this long before its first byte: the pace includes it, so the
        # turn's recorded connect/TTFB spans are spent here too (not read as negative overhead)
        lead = (first.connect_ms + first.ttfb_ms) / 1000 if isinstance(first, ModelFirstByte) else 0
        origin = first.t - lead
        started = time.perf_counter()
        content_at: float | None = None  # the first piece of the reply, as replayed
        for event in recorded:
            if self.speed:
                delay = (event.t - origin) / self.speed - (time.perf_counter() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
            now = time.perf_counter()
            replayed = copy.copy(event)  # the session stamps its own time on what it is given
            # the spans are those of this replay, not the recorded ones: at another speed (or
            # none) recorded spans would make the turn's harness overhead negative
            if isinstance(replayed, ModelFirstByte):
                replayed.ttfb_ms = ms(started, now)
                replayed.connect_ms = round(min(
                    replayed.connect_ms / self.speed if self.speed else 0.0, replayed.ttfb_ms), 3)
            elif isinstance(replayed, ModelDone):
                content_at = content_at or now
                decode_s = now - content_at
                tokens = replayed.usage.get("completion_tokens", 0)
                replayed.ttft_ms = ms(started, content_at)
                replayed.decode_ms = ms(content_at, now)
                replayed.tokens_per_s = round(tokens / decode_s, 1) if decode_s > 0 else 0.0
            elif content_at is None:
                content_at = now
            yield replayed

    async def aclose(self) -> None:
        return None


@dataclass
class TurnOutcome:
    """What a turn did to the code: the patch's fate and the tests' verdict."""

    patch: str = "none"
    tests: str = ""
    detail: str = ""


def outcomes(events: list[Event]) -> dict[int, TurnOutcome]:
    result: dict[int, TurnOutcome] = {}
    for event in events:
        turn = getattr(event, "turn", None)
        if not turn:
            continue
        outcome = result.setdefault(turn, TurnOutcome())
        if isinstance(event, PatchApplied):
            outcome.patch = "applied " + ", ".join(event.files)
        elif isinstance(event, PatchRejected):
            outcome.patch, outcome.detail = "rejected", event.reason
        elif isinstance(event, TestDone):
            outcome.tests = _test_verdict(event)
    return result


def _test_verdict(event: TestDone) -> str:
    failing = sorted(f.id for f in event.failures)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(event.counts.items()) if n)
    verdict = "passed" if event.passed else "failed"
    return f"{verdict} ({counts or event.summary})" + (
        f"; failing: {', '.join(failing)}" if failing else "")


def divergences(recorded: list[Event], replayed: list[Event]) -> list[str]:
    """Where the re-executed session's outcome differs from the recording, turn by turn."""
    before, after = outcomes(recorded), outcomes(replayed)
    found = []
    for turn in sorted(set(before) | set(after)):
        old, new = before.get(turn), after.get(turn)
        if old is None:
            found.append(f"turn {turn}: the re-executed session went on past the recording")
            continue
        if new is None:
            found.append(f"turn {turn}: the re-executed session stopped before this turn "
                         f"(recorded: patch {old.patch}, tests {old.tests or 'not run'})")
            continue
        if old.patch != new.patch:
            why = f": {new.detail.splitlines()[0]}" if new.detail else ""
            found.append(f"turn {turn}: patch {old.patch!r} when recorded, {new.patch!r} "
                         f"now{why}")
        if old.tests != new.tests:
            found.append(f"turn {turn}: tests {old.tests or 'not run'} when recorded, "
                         f"{new.tests or 'not run'} now")
    return found
