"""One streamed model reply as it accumulates, whatever the wire: text, tool calls, usage, timing.

Owns the per-token timing measured at the wire (first token, the gaps between tokens, codeloop's
own processing time per token: parsing plus dispatching the events) and the closing events
(ModelToolCall for each complete call, then ModelDone). Each protocol's parser subclasses it.
"""

from __future__ import annotations

import time

from codeloop.core.events import Event, ModelDone, ModelTextDelta, ModelToolCall
from codeloop.core.kinds import CallKind
from codeloop.core.stats import percentile


def ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)


class Reply:
    """Text pieces, tool calls keyed by position, usage, and when each token arrived."""

    def __init__(self, turn: int) -> None:
        self.turn = turn
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}  # id, name, arguments; kind if no function
        self.finish_reason = ""
        self.usage: dict[str, int] = {}
        self.complete = False
        self.pieces = 0
        self.first_token_at: float | None = None
        self.last_token_at = 0.0
        self.gaps_ms: list[float] = []
        self.processing_s = 0.0  # parse + dispatch, measured by the transport around each chunk

    def token(self, at: float) -> None:
        if self.first_token_at is None:
            self.first_token_at = at
        else:
            self.gaps_ms.append((at - self.last_token_at) * 1000)
        self.last_token_at = at
        self.pieces += 1

    def text_delta(self, text: str, at: float) -> ModelTextDelta:
        self.token(at)
        self.text.append(text)
        return ModelTextDelta(turn=self.turn, text=text)

    def finish(self, sent: float) -> list[Event]:
        """The closing events, once the reply is complete."""
        end = time.perf_counter()
        first = self.first_token_at or end
        events: list[Event] = [
            ModelToolCall(turn=self.turn, call_id=call["id"] or f"call_{self.turn}_{index}",
                          name=call["name"], arguments=call["arguments"],
                          kind=CallKind(call.get("kind") or CallKind.FUNCTION))
            for index, call in sorted(self.calls.items())
        ]
        tokens = self.usage.get("completion_tokens") or self.pieces
        decode_s = end - first
        events.append(ModelDone(
            turn=self.turn, finish_reason=self.finish_reason or "stop", text="".join(self.text),
            usage=self.usage, ttft_ms=ms(sent, first), decode_ms=ms(first, end),
            tokens_per_s=round(tokens / decode_s, 1) if decode_s > 0 else 0.0,
            gap_p50_ms=round(percentile(self.gaps_ms, 0.5), 3),
            gap_p95_ms=round(percentile(self.gaps_ms, 0.95), 3),
            client_us_per_token=round(self.processing_s * 1e6 / max(self.pieces, 1), 2),
        ))
        return events
