"""Where a turn's time goes: its spans, the retry accounting, the overhead, the session totals.

Owns the `turn.end` spans (each phase timed with `with clock.span("apply_ms"):`; overhead is
the turn's wall time less the summed spans), the server's own account of the reply beside them
(parts of TTFT and decode, never summed: only what the server reported), and the `session.end`
totals. Never emits events.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from codeloop.core.events import SERVER_SPANS, ModelDone, ModelFirstByte, ModelRetry
from codeloop.core.port import Status

SUMMED_SPANS = ("prompt_ms", "connect_ms", "ttft_ms", "decode_ms", "tools_ms", "apply_ms",
                "test_ms", "retry_wait_ms")
# `ModelDone.server` key -> the `turn.end` span it fills (present only where the server said)


def ms_since(mark: float) -> float:
    return round((time.perf_counter() - mark) * 1000, 3)


class TurnClock:
    """One turn's wall clock and the spans it is cut into."""

    def __init__(self) -> None:
        self._began = time.perf_counter()
        self.spans: dict[str, float] = dict.fromkeys(SUMMED_SPANS, 0.0)
        self._attempt_connect_ms = 0.0  # booked as connect_ms during the attempt now running
        self._first_byte_at: float | None = None
        self._replied = False

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        """The time the block takes, added to span `name` (also when it raises)."""
        mark = time.perf_counter()
        try:
            yield
        finally:
            self.spans[name] += ms_since(mark)

    def add(self, name: str, ms: float) -> None:
        """Time measured elsewhere (a test run's own duration), added to span `name`."""
        self.spans[name] = round(self.spans[name] + ms, 3)

    def first_byte(self, event: ModelFirstByte) -> None:
        self.spans["connect_ms"] += event.connect_ms
        self._attempt_connect_ms += event.connect_ms
        self.spans["ttfb_ms"] = event.ttfb_ms
        self._first_byte_at = time.perf_counter()

    def retried(self, event: ModelRetry) -> None:
        # the failed attempt (a stall up to the request timeout, say) and the back-off: time lost
        # to the server, not codeloop's own
        self.spans["retry_wait_ms"] = round(
            self.spans["retry_wait_ms"] + event.elapsed_ms - self._attempt_connect_ms
            + event.delay_s * 1000, 3)
        self._attempt_connect_ms = 0.0

    def replied(self, done: ModelDone) -> None:
        self.spans["ttft_ms"], self.spans["decode_ms"] = done.ttft_ms, done.decode_ms
        self.server_side(done)
        self._replied = True

    def server_side(self, done: ModelDone) -> None:
        """The server's timing of the reply, as far as it reported it."""
        for key, span in SERVER_SPANS.items():
            if key in done.server:
                self.spans[span] = round(float(done.server[key]), 3)

    def cut_short(self) -> float:
        """A reply cancelled mid-stream: its time so far booked as the model's (first byte as
        its first token: the deltas are not timed here); returns the decode ms (0: none)."""
        if self._replied or self._first_byte_at is None:
            return 0.0
        self.spans["ttft_ms"] = self.spans.get("ttfb_ms", 0.0)
        self.spans["decode_ms"] = ms_since(self._first_byte_at)
        return self.spans["decode_ms"]

    def stop(self, tokens_per_s: float) -> dict[str, float]:
        """The turn's spans, with the overhead: what no span accounts for."""
        self.spans["overhead_ms"] = round(
            ms_since(self._began) - sum(self.spans[k] for k in SUMMED_SPANS), 3)
        self.spans["tokens_per_s"] = tokens_per_s
        return self.spans


class Totals:
    """The session's figures so far: turns, tokens, model time, and every span summed."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.figures: dict[str, float] = {
            "turns": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
            "model_ms": 0.0, "baseline_test_ms": 0.0,
            **dict.fromkeys((*SUMMED_SPANS, "overhead_ms"), 0.0)}
        self.estimated = False  # a token count includes an estimate

    def restart(self) -> None:
        """The session's wall clock starts now (when it opens, not when it was built)."""
        self.started = time.perf_counter()

    def turn_started(self, turn: int) -> None:
        self.figures["turns"] = turn

    def baseline_ran(self, duration_ms: float) -> None:
        self.figures["baseline_test_ms"] = duration_ms

    def replied(self, usage: dict[str, int], spans: dict[str, float],
                estimated: bool = False) -> None:
        """One streamed reply (`estimated`: one cut short, its usage estimated from the text):
        its tokens, and the time the model took."""
        for key in ("prompt_tokens", "completion_tokens", "cached_tokens"):
            self.figures[key] += usage.get(key, 0)
        self.figures["model_ms"] += round(spans["connect_ms"] + spans["ttft_ms"]
                                          + spans["decode_ms"], 3)
        self.estimated = self.estimated or estimated

    def status(self, model: str, transport: str) -> Status:
        """What the status bar shows of them."""
        figures = self.figures
        return Status(model=model, transport=transport,
                      prompt_tokens=int(figures["prompt_tokens"]),
                      cached_tokens=int(figures["cached_tokens"]),
                      completion_tokens=int(figures["completion_tokens"]),
                      estimated=self.estimated)

    def turn_ended(self, spans: dict[str, float]) -> None:
        for key in (*SUMMED_SPANS, "overhead_ms"):
            self.figures[key] = round(self.figures.get(key, 0.0) + spans[key], 3)
        # the server's parts, summed over the turns that reported them (absent: none did)
        for key in SERVER_SPANS.values():
            if key in spans:
                self.figures[key] = round(self.figures.get(key, 0.0) + spans[key], 3)

    def final(self) -> dict[str, float]:
        """The figures for `session.end`, with the session's wall time."""
        self.figures["wall_ms"] = ms_since(self.started)
        return self.figures
