"""The typed events at the centre of codeloop, and the stream that carries them.

The loop only produces these; printers, the recorder and (later) the TUI only consume them. The
same dict form goes to the recording, to `--json` and to every other consumer. No I/O here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from codeloop.core.redact import Redactor

FORMAT_VERSION = 1


@dataclass
class Event:
    """Base of every event. `t` is seconds since the session started (monotonic clock)."""

    type: ClassVar[str] = ""
    t: float = field(default=0.0, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """The event as plain data (shallow: fields are already JSON-friendly values)."""
        data = dict(self.__dict__)
        return {"type": self.type, "t": round(data.pop("t"), 6), **data}


@dataclass
class SessionStart(Event):
    """First event of a session: what runs, where, with which settings (never secrets)."""

    type: ClassVar[str] = "session.start"
    session_id: str
    task: str
    repo: str
    model: str
    base_url: str
    transport: str
    edit_mode: str
    test_command: str
    max_iterations: int
    version: str
    format: int = FORMAT_VERSION


@dataclass
class SandboxReady(Event):
    """The sandbox worktree exists on its own branch, at `base_commit` (HEAD + uncommitted work)."""

    type: ClassVar[str] = "sandbox.ready"
    path: str
    branch: str
    base_commit: str
    head_commit: str
    elapsed_ms: float


@dataclass
class UserMessage(Event):
    """The user asked for something: the task, or a follow-up message in interactive use."""

    type: ClassVar[str] = "user.message"
    text: str


@dataclass
class Notice(Event):
    """Something the user did or should know that is not a turn: an undo, an apply, a switch."""

    type: ClassVar[str] = "notice"
    kind: str
    message: str


@dataclass
class Compaction(Event):
    """Older turns were replaced by a summary (automatically near the window limit, or /compact).
    """

    type: ClassVar[str] = "context.compaction"
    reason: str
    tokens_before: int
    tokens_after: int
    turns_replaced: int
    turns_kept: int
    duration_ms: float
    summary: str


@dataclass
class TurnStart(Event):
    """A turn begins: one model request and what follows from it."""

    type: ClassVar[str] = "turn.start"
    turn: int


@dataclass
class ModelRequest(Event):
    """A request is about to be sent. `messages` holds only those new since the last request."""

    type: ClassVar[str] = "model.request"
    turn: int
    messages: list[dict[str, Any]]
    tools: list[str]
    prompt_tokens_estimate: int = 0
    prefix_reuse: float = 0.0  # share of this prompt identical, from the start, to the last one
    prefix_basis: str = "bytes"  # what prefix_reuse counts (no tokenizer offline: bytes)
    prefix_changed: str = ""  # the first layout section that differs from the last request


@dataclass
class ModelFirstByte(Event):
    """The response headers arrived. `connect_ms` is 0 when the connection was reused."""

    type: ClassVar[str] = "model.first_byte"
    turn: int
    status: int
    request_bytes: int
    connect_ms: float
    reused: bool
    ttfb_ms: float
    upload_ms: float = 0.0


@dataclass
class ModelTextDelta(Event):
    """A piece of the model's visible text, as it arrived."""

    type: ClassVar[str] = "model.text_delta"
    turn: int
    text: str


@dataclass
class ModelToolCall(Event):
    """A complete tool call (arguments fully received; never emitted from partial deltas)."""

    type: ClassVar[str] = "model.tool_call"
    turn: int
    call_id: str
    name: str
    arguments: str


@dataclass
class ModelRetry(Event):
    """A request failed and will be sent again after `delay_s`. `restart` is true when part of
    the reply had already been shown: the turn restarts visibly, it is never silently re-sent.
    `elapsed_ms` is how long the failed attempt ran, from sending it to its failure."""

    type: ClassVar[str] = "model.retry"
    turn: int
    attempt: int
    delay_s: float
    reason: str
    restart: bool = False
    elapsed_ms: float = 0.0


@dataclass
class TransportChange(Event):
    """The connection to the model changed: `kind` is fallback, reconnect, resend, rotate,
    restore or warmup; `transport` is the wire now in use."""

    type: ClassVar[str] = "transport.change"
    kind: str
    transport: str
    message: str


@dataclass
class ModelDone(Event):
    """The reply is complete. Usage as the server reported it (cached tokens included)."""

    type: ClassVar[str] = "model.done"
    turn: int
    finish_reason: str
    text: str
    usage: dict[str, int]
    ttft_ms: float
    decode_ms: float
    tokens_per_s: float
    gap_p50_ms: float = 0.0
    gap_p95_ms: float = 0.0
    client_us_per_token: float = 0.0


@dataclass
class ToolResult(Event):
    """A read-only tool (read_file, search, list_files) was answered."""

    type: ClassVar[str] = "tool.result"
    turn: int
    call_id: str
    name: str
    output: str


@dataclass
class PatchProposed(Event):
    """The reply carried edits: one unified diff per source (a tool call or a ```diff block)."""

    type: ClassVar[str] = "patch.proposed"
    turn: int
    source: str
    patch: str


@dataclass
class PatchApplied(Event):
    """All edits of the reply were applied and committed as one commit on the sandbox branch."""

    type: ClassVar[str] = "patch.applied"
    turn: int
    files: list[str]
    commit: str
    already_applied: list[str]
    diffstat: str


@dataclass
class PatchRejected(Event):
    """Nothing of the reply was applied; `reason` is what the model is told."""

    type: ClassVar[str] = "patch.rejected"
    turn: int
    reason: str


@dataclass
class TestStart(Event):
    """The test command starts in the sandbox (turn 0 is the baseline run)."""

    __test__ = False  # a codeloop event, not a pytest test class

    type: ClassVar[str] = "test.start"
    turn: int
    command: str


@dataclass
class TestOutput(Event):
    """A piece of the test command's combined output, as it was produced."""

    __test__ = False  # a codeloop event, not a pytest test class

    type: ClassVar[str] = "test.output"
    turn: int
    text: str


@dataclass
class TestDone(Event):
    """The test command finished (or was killed at its timeout). Output is bounded."""

    __test__ = False  # a codeloop event, not a pytest test class

    type: ClassVar[str] = "test.done"
    turn: int
    exit_code: int
    passed: bool
    summary: str
    counts: dict[str, int]
    failures: list[dict[str, str]]
    duration_ms: float
    timed_out: bool
    output: str
    mode: str = "cold"  # "warm": a child of the warm runner; "cold": the command as typed


@dataclass
class TestRunnerChange(Event):
    """How the tests run changed: `mode` warm (ready, restarted) or cold (and why)."""

    __test__ = False  # a codeloop event, not a pytest test class

    type: ClassVar[str] = "test.runner"
    mode: str
    message: str


@dataclass
class TurnEnd(Event):
    """A turn ended. `spans` holds its latency accounting in milliseconds."""

    type: ClassVar[str] = "turn.end"
    turn: int
    outcome: str
    spans: dict[str, float]
    cache: dict[str, Any] = field(default_factory=dict)  # prefix reuse next to server cache


@dataclass
class ErrorEvent(Event):
    """Something went wrong; `kind` says what (config, transport, sandbox, tests, interrupted)."""

    type: ClassVar[str] = "error"
    kind: str
    message: str


@dataclass
class SessionEnd(Event):
    """Last event of every session: outcome, exit code, final diff stat and totals."""

    type: ClassVar[str] = "session.end"
    outcome: str
    exit_code: int
    branch: str
    diffstat: str
    applied_to_worktree: bool
    totals: dict[str, float]


EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in Event.__subclasses__()}


def event_from_dict(data: Any, skipped: set[str] | None = None) -> Event | None:
    """The event a dict (a recording's line) holds, every field checked against the type its
    class declares; raises ValueError saying what does not fit.

    An event type or a field this codeloop does not know is an error, unless `skipped` is
    given: format 1 stays forward compatible, so a reader of a newer codeloop's recording
    leaves it out and names it there (`type`, or `type.field`), returning None for the type.
    """
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object ({_shown(data)})")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ValueError("field 'type' " + (
            f"should be a string, not {_shown(kind)}" if "type" in data else "is missing"))
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        if skipped is None:
            raise ValueError(f"unknown event type {kind!r}")
        skipped.add(kind)
        return None
    declared = _declared_fields(cls)
    values = {}
    for name, value in data.items():
        if name == "type":
            continue
        if name not in declared:
            if skipped is None:
                raise ValueError(f"unknown field {name!r} in a {kind} event")
            skipped.add(f"{kind}.{name}")
            continue
        problem = _mismatch(value, declared[name][0], repr(name))
        if problem:
            raise ValueError(f"{kind} field {problem}")
        values[name] = value
    missing = [name for name, (_, required) in declared.items()
               if required and name not in values]
    if missing:
        raise ValueError(f"{kind} field {missing[0]!r} is missing")
    return cls(**values)


@cache
def _declared_fields(cls: type[Event]) -> dict[str, tuple[Any, bool]]:
    """Each field of an event class: its declared type, and whether every line must carry it
    (it has no default). Read from the dataclass itself, so a new field is checked too."""
    hints = get_type_hints(cls)
    return {f.name: (hints[f.name], f.default is MISSING and f.default_factory is MISSING)
            for f in fields(cls)}


_SCALAR_NAMES = {int: "an integer", float: "a finite number", str: "a string",
                 bool: "true or false"}


def _mismatch(value: Any, hint: Any, where: str) -> str | None:
    """Where in `value` (a field named `where`) it does not fit the declared type `hint`, and
    how; None when it fits. Containers are checked element by element."""
    origin = get_origin(hint)
    if origin in (list, dict):
        if not isinstance(value, origin):
            return f"{where} should be {_type_name(hint)}, not {_shown(value)}"
        item = get_args(hint)[-1]
        items = enumerate(value) if origin is list else value.items()
        return next((problem for key, element in items
                     if (problem := _mismatch(element, item, f"{where}[{key!r}]"))), None)
    if _fits(value, hint):
        return None
    return f"{where} should be {_type_name(hint)}, not {_shown(value)}"


def _fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if isinstance(value, bool):  # JSON true/false is never a number
        return hint is bool
    if hint is float:  # JSON has one number type; an infinity would stall the player forever
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return _SCALAR_NAMES.get(hint) or str(hint).replace("typing.", "")


def _shown(value: Any) -> str:
    """A value as the line wrote it, cut short (a recorded patch can be megabytes)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


Subscriber = Callable[[Event], None]


class EventStream:
    """Stamps each event with the session clock and hands it to every subscriber, in order.

    With a redactor, subscribers get the events it lets out (secrets scrubbed); `emit` still
    returns the producer's own event, untouched.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        self._start = time.perf_counter()
        self._subscribers: list[Subscriber] = []
        self._redactor = redactor

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def now(self) -> float:
        """Seconds since the session started."""
        return time.perf_counter() - self._start

    def redact(self, text: str) -> str:
        """`text` fit to print: for what a front end shows outside the stream (an exception)."""
        return self._redactor.text(text) if self._redactor else text

    def emit(self, event: Event) -> Event:
        event.t = self.now()
        for shown in self._redactor.filter(event) if self._redactor else (event,):
            for subscriber in self._subscribers:
                subscriber(shown)
        return event
