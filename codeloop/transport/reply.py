"""One streamed model reply as it accumulates, whatever the wire: text, tool calls, usage, timing.

Owns the per-token timing measured at the wire (first token, the gaps between tokens, codeloop's
own processing time per token: parsing plus dispatching the events), the server's own account of
its time and the tier that served (each provider's fields, read from any chunk, response or event
that carries them), and the closing events (ModelToolCall for each complete call, then
ModelDone). Each protocol's parser feeds it.
"""

from __future__ import annotations

import time

from codeloop.core.events import Event, ModelDone, ModelTextDelta, ModelToolCall
from codeloop.core.kinds import CallKind
from codeloop.core.stats import percentile


def ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)


# llama.cpp's `timings` (ms and token counts, protocols.md §3.6) as ModelDone.server's keys
_LLAMA_TIMINGS = (("prompt_ms", "prefill_ms"), ("predicted_ms", "decode_ms"),
                  ("prompt_n", "prompt_tokens_processed"), ("cache_n", "prompt_tokens_reused"))
# Groq's `usage` / `x_groq.usage` and Cerebras' `time_info` (seconds, §3.3-3.4)
_SECONDS = (("queue_time", "queue_ms"), ("prompt_time", "prefill_ms"),
            ("completion_time", "decode_ms"))


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def server_account(obj: dict[str, object]) -> dict[str, float]:
    """The server's own timing in one chunk, response object or event, as ModelDone.server's
    keys; only the fields it carries (none invented)."""
    found: dict[str, float] = {}
    timings = obj.get("timings")
    if isinstance(timings, dict):
        for name, key in _LLAMA_TIMINGS:
            if (value := _number(timings.get(name))) is not None:
                found[key] = int(value) if key.startswith("prompt_tokens") else round(value, 3)
    groq = obj.get("x_groq")
    for times in (obj.get("usage"), groq.get("usage") if isinstance(groq, dict) else None,
                  obj.get("time_info")):
        if isinstance(times, dict):
            for name, key in _SECONDS:
                if (value := _number(times.get(name))) is not None:
                    found[key] = round(value * 1000, 3)
    return found


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
        self.server: dict[str, float] = {}
        self.service_tier = ""

    def note_server(self, obj: dict[str, object]) -> None:
        """Keep what `obj` says of the server's time and of the tier that served."""
        self.server.update(server_account(obj))
        tier = obj.get("service_tier")
        if isinstance(tier, str) and tier:
            self.service_tier = tier

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
        ttft_ms = ms(sent, first)
        events.append(ModelDone(
            turn=self.turn, finish_reason=self.finish_reason or "stop", text="".join(self.text),
            usage=self.usage, ttft_ms=ttft_ms, decode_ms=ms(first, end),
            tokens_per_s=round(tokens / decode_s, 1) if decode_s > 0 else 0.0,
            gap_p50_ms=round(percentile(self.gaps_ms, 0.5), 3),
            gap_p95_ms=round(percentile(self.gaps_ms, 0.95), 3),
            client_us_per_token=round(self.processing_s * 1e6 / max(self.pieces, 1), 2),
            server=self._server_with_network(ttft_ms), service_tier=self.service_tier,
        ))
        return events

    def _server_with_network(self, ttft_ms: float) -> dict[str, float]:
        """The server's account, plus network_ms = TTFT - queue - prefill where both are known
        and a first token came; a negative difference (the two clocks disagree) is not a
        network time, so it is left out rather than shown as one."""
        server = dict(self.server)
        queue, prefill = server.get("queue_ms"), server.get("prefill_ms")
        if self.first_token_at is not None and queue is not None and prefill is not None:
            network = round(ttft_ms - queue - prefill, 3)
            if network >= 0:
                server["network_ms"] = network
        return server
