"""The latency figures the panel shows, computed from events alone (no UI import).

Owns the live timeline of the running turn (which phase it is in and how long each phase took so
far), the server's own parts of the first token's wait (queue, prefill, and the network left)
and the tier that served, the per-turn spans of finished turns, the session statistics (median /
p95 of TTFT, decode tokens/s, test time, harness overhead), the prompt-cache hit share per turn,
and the display lag samples a front end reports.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codeloop.core.events import (
    SERVER_SPANS,
    Compaction,
    Event,
    ModelDone,
    ModelFirstByte,
    ModelRequest,
    ModelRetry,
    ModelTextDelta,
    ModelToolCall,
    PatchApplied,
    PatchRejected,
    SessionStart,
    TestDone,
    TestStart,
    TransportChange,
    TurnEnd,
    TurnStart,
)
from codeloop.core.stats import percentile

# the phases of a turn in the order they happen, with the span each one fills
PHASES = (("prompt", "prompt_ms"), ("connect", "connect_ms"), ("first token", "ttft_ms"),
          ("decode", "decode_ms"), ("apply", "apply_ms"), ("tests", "test_ms"),
          ("overhead", "overhead_ms"))
# the parts of the first token's wait as the server reported them: label, `ModelDone.server`
# key, the `turn.end` span that holds it
SERVER_PARTS = tuple((label, key, SERVER_SPANS[key]) for label, key in (
    ("server queue", "queue_ms"), ("server prefill", "prefill_ms"), ("network", "network_ms")))
MAX_LAG_SAMPLES = 2000


@dataclass
class TurnFigures:
    """One turn as the panel draws it: span milliseconds, tokens/s, cache share."""

    turn: int
    spans: dict[str, float] = field(default_factory=dict)
    phase: str = "prompt"
    done: bool = False
    tokens_per_s: float = 0.0
    cache_share: float | None = None
    prefix_reuse: float | None = None
    prefix_changed: str = ""
    retries: int = 0
    service_tier: str = ""  # the tier that served, as the server said ("" when it did not)


class LatencyModel:
    """Consumes events; answers what the latency panel needs at any moment."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock  # seconds on the session clock (EventStream.now)
        self.turns: list[TurnFigures] = []
        self.current: TurnFigures | None = None
        self.display_lag_ms: list[float] = []
        self._phase_started = 0.0
        self._turn_started = 0.0
        self._request_sent = 0.0
        self.transport_changes: list[TransportChange] = []
        self.compactions: list[Compaction] = []
        self.tier_asked = ""  # the session's `service_tier` ("" for the provider's default)

    def _enter(self, phase: str, at: float) -> None:
        assert self.current is not None
        self.current.phase = phase
        self._phase_started = at

    def __call__(self, event: Event) -> None:
        if (noted := _ALWAYS.get(type(event))) is not None:
            noted(self, event)
            return
        turn = self.current
        if turn is not None and not turn.done and (timed := _IN_TURN.get(type(event))):
            timed(self, turn, event)

    def _transport_change(self, event: TransportChange) -> None:
        self.transport_changes.append(event)

    def _compaction(self, event: Compaction) -> None:
        self.compactions.append(event)

    def _session_start(self, event: SessionStart) -> None:
        self.tier_asked = event.service_tier

    def _turn_start(self, event: TurnStart) -> None:
        self.current = TurnFigures(turn=event.turn)
        self.turns.append(self.current)
        self._turn_started = event.t
        self._enter("prompt", event.t)

    def _request(self, turn: TurnFigures, event: ModelRequest) -> None:
        turn.prefix_reuse, turn.prefix_changed = event.prefix_reuse, event.prefix_changed
        turn.spans["prompt_ms"] = (event.t - self._turn_started) * 1000
        self._request_sent = event.t
        self._enter("connect", event.t)

    def _retry(self, turn: TurnFigures, event: ModelRetry) -> None:
        turn.retries += 1

    def _first_byte(self, turn: TurnFigures, event: ModelFirstByte) -> None:
        turn.spans["connect_ms"] = event.connect_ms
        self._enter("first token", event.t)

    def _first_token(self, turn: TurnFigures, event: ModelTextDelta | ModelToolCall) -> None:
        if turn.phase == "first token":
            turn.spans["ttft_ms"] = (event.t - self._request_sent) * 1000 - turn.spans.get(
                "connect_ms", 0.0)
            self._enter("decode", event.t)

    def _model_done(self, turn: TurnFigures, event: ModelDone) -> None:
        turn.spans["ttft_ms"], turn.spans["decode_ms"] = event.ttft_ms, event.decode_ms
        turn.tokens_per_s = event.tokens_per_s
        for _, key, span in SERVER_PARTS:
            if key in event.server:
                turn.spans[span] = event.server[key]
        turn.service_tier = event.service_tier
        prompt_tokens = event.usage.get("prompt_tokens", 0)
        if prompt_tokens:
            turn.cache_share = event.usage.get("cached_tokens", 0) / prompt_tokens
        self._enter("apply", event.t)

    def _patch_done(self, turn: TurnFigures, event: PatchApplied | PatchRejected) -> None:
        turn.spans["apply_ms"] = (event.t - self._phase_started) * 1000
        self._enter("overhead", event.t)

    def _test_start(self, turn: TurnFigures, event: TestStart) -> None:
        self._enter("tests", event.t)

    def _test_done(self, turn: TurnFigures, event: TestDone) -> None:
        turn.spans["test_ms"] = event.duration_ms
        self._enter("overhead", event.t)

    def _turn_end(self, turn: TurnFigures, event: TurnEnd) -> None:
        turn.spans = dict(event.spans)
        turn.tokens_per_s = event.spans.get("tokens_per_s", turn.tokens_per_s)
        turn.done = True
        turn.phase = "done"

    def live_spans(self) -> dict[str, float]:
        """The running turn's spans, with the current phase counting up to now."""
        turn = self.current
        if turn is None:
            return {}
        spans = dict(turn.spans)
        if not turn.done:
            key = dict(PHASES).get(turn.phase)
            if key:
                spans[key] = spans.get(key, 0.0) + (self._clock() - self._phase_started) * 1000
        return spans

    def record_display_lag(self, ms: float) -> None:
        self.display_lag_ms.append(ms)
        if len(self.display_lag_ms) > MAX_LAG_SAMPLES:
            del self.display_lag_ms[: MAX_LAG_SAMPLES // 2]

    def stats(self) -> dict[str, tuple[float | None, float | None]]:
        """Median and p95 per figure over the finished turns (and all display lag samples);
        None where nothing was measured yet (no turn, or no test run in any)."""
        finished = [t for t in self.turns if t.done]
        series = {
            "ttft_ms": [t.spans.get("ttft_ms", 0.0) for t in finished],
            "tokens_per_s": [t.tokens_per_s for t in finished if t.tokens_per_s],
            "test_ms": [t.spans["test_ms"] for t in finished if t.spans.get("test_ms")],
            "overhead_ms": [t.spans.get("overhead_ms", 0.0) for t in finished],
            "display_lag_ms": self.display_lag_ms,
        }
        return {name: (statistics.median(values), percentile(values, 0.95)) if values
                else (None, None) for name, values in series.items()}


# what each event tells the model: noted whenever it comes, or timed within the running turn
_ALWAYS: dict[type[Event], Callable[[LatencyModel, Any], None]] = {
    SessionStart: LatencyModel._session_start,
    TransportChange: LatencyModel._transport_change,
    Compaction: LatencyModel._compaction,
    TurnStart: LatencyModel._turn_start,
}
_IN_TURN: dict[type[Event], Callable[[LatencyModel, TurnFigures, Any], None]] = {
    ModelRequest: LatencyModel._request,
    ModelRetry: LatencyModel._retry,
    ModelFirstByte: LatencyModel._first_byte,
    ModelTextDelta: LatencyModel._first_token,
    ModelToolCall: LatencyModel._first_token,
    ModelDone: LatencyModel._model_done,
    PatchApplied: LatencyModel._patch_done,
    PatchRejected: LatencyModel._patch_done,
    TestStart: LatencyModel._test_start,
    TestDone: LatencyModel._test_done,
    TurnEnd: LatencyModel._turn_end,
}
