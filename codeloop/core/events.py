"""The typed events at the centre of codeloop: one dataclass per thing that happens.

The agent only produces these; the printers, the recorder, the TUI and the latency panel only
consume them. The same dict form (`to_dict`) goes to the recording, to `--json` and to every
other consumer; `codec.event_from_dict` reads it back. No I/O here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from codeloop.core.kinds import (
    CallKind,
    EditTool,
    ErrorKind,
    NoticeKind,
    SessionOutcome,
    TestMode,
    TransportChangeKind,
    TurnOutcome,
)

FORMAT_VERSION = 1


@dataclass
class Event:
    """Base of every event. `t` is seconds since the session started (monotonic clock)."""

    type: ClassVar[str] = ""
    t: float = field(default=0.0, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """The event as plain data (records inside a field, such as test failures, as dicts)."""
        data = {name: _plain(value) for name, value in self.__dict__.items()}
        return {"type": self.type, "t": round(data.pop("t"), 6), **data}


def _plain(value: Any) -> Any:
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return [dataclasses.asdict(item) for item in value]
    return value


@dataclass
class TestFailure:
    """One failing test, as the runner's report names it."""

    __test__ = False  # not a pytest test class

    id: str  # the node id, e.g. tests/test_x.py::test_y
    kind: str  # "failed" (an assertion) or "errors" (set-up, collection)
    message: str  # the first line of the failure, at most 500 characters
    location: str  # FILE:LINE in the project where it failed ("" if unknown)
    details: str  # the traceback, bounded


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
    edit_tool: EditTool
    test_command: str
    max_iterations: int
    version: str
    format: int = FORMAT_VERSION
    service_tier: str = ""  # the tier asked for ("" for the provider's default)


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
    kind: NoticeKind
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
    arguments: str  # JSON arguments; a freeform tool's input; the built-in's operation as JSON
    kind: CallKind = CallKind.FUNCTION


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
    kind: TransportChangeKind
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
    # the server's own account, only what it reported (none invented): queue_ms, prefill_ms,
    # decode_ms, prompt_tokens_processed, prompt_tokens_reused; and network_ms = TTFT − queue −
    # prefill where those are known
    server: dict[str, float] = field(default_factory=dict)
    service_tier: str = ""  # the tier that served, as the server said ("" when it did not)


# `ModelDone.server`'s timings, and the `turn.end` span each becomes where the server said it
SERVER_SPANS = {"queue_ms": "server_queue_ms", "prefill_ms": "server_prefill_ms",
                "decode_ms": "server_decode_ms", "network_ms": "network_ms"}


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
    failures: list[TestFailure]
    duration_ms: float
    timed_out: bool
    output: str
    mode: TestMode = TestMode.COLD
    # "full": the suite ran (or its stages went to its end); else the stages that ran before one
    # failed, such as "failing" (only the tests that failed last time) or "failing+affected"
    scope: str = "full"


@dataclass
class TestRunnerChange(Event):
    """How the tests run changed: `mode` warm (ready, restarted) or cold (and why)."""

    __test__ = False  # a codeloop event, not a pytest test class

    type: ClassVar[str] = "test.runner"
    mode: TestMode
    message: str


@dataclass
class TurnEnd(Event):
    """A turn ended. `spans` holds its latency accounting in milliseconds."""

    type: ClassVar[str] = "turn.end"
    turn: int
    outcome: TurnOutcome
    spans: dict[str, float]
    cache: dict[str, Any] = field(default_factory=dict)  # prefix reuse next to server cache


@dataclass
class ErrorEvent(Event):
    """Something went wrong; `kind` says what (config, transport, sandbox, tests, interrupted)."""

    type: ClassVar[str] = "error"
    kind: ErrorKind
    message: str


@dataclass
class SessionEnd(Event):
    """Last event of every session: outcome, exit code, final diff stat and totals."""

    type: ClassVar[str] = "session.end"
    outcome: SessionOutcome
    exit_code: int
    branch: str
    diffstat: str
    applied_to_worktree: bool
    totals: dict[str, float]


EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in Event.__subclasses__()}
