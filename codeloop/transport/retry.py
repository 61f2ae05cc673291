"""One retry policy around any ModelClient, whatever the wire.

429, 5xx and connection errors back off exponentially with jitter, capped, honouring the server's
Retry-After (up to two minutes); billing 429s and other 4xx fail at once. A failure after part of
the reply was shown is never silently re-sent: the turn restarts visibly, once. Every retry is a
`model.retry` event, with the time the failed attempt took.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from codeloop.core.conversation import Item
from codeloop.core.events import Event, ModelRetry
from codeloop.transport.base import ModelClient, TransportError

MAX_RETRIES = 2
MAX_SERVER_DELAY_S = 120.0


def backoff_delay(attempt: int, error: TransportError) -> float:
    if error.retry_after is not None and 0 <= error.retry_after <= MAX_SERVER_DELAY_S:
        return error.retry_after
    return min(0.5 * 2 ** attempt, 8.0) * random.uniform(0.75, 1.0)


async def stream_with_retries(client: ModelClient, turn: int, items: list[Item],
                              tools: list[dict[str, Any]], max_retries: int = MAX_RETRIES
                              ) -> AsyncIterator[Event]:
    """Yield the client's events; on a retryable failure before output, yield ModelRetry, retry."""
    attempt = 0
    restarted = False
    while True:
        started = time.perf_counter()
        handed_on = 0.0  # spent suspended at `yield`: the consumer's time, not the attempt's
        try:
            async for event in client.stream(turn, items, tools):
                at = time.perf_counter()
                yield event
                handed_on += time.perf_counter() - at
            return
        except TransportError as error:
            too_late = error.retry_after is not None and error.retry_after > MAX_SERVER_DELAY_S
            if not error.retryable or attempt >= max_retries or too_late or (
                    error.shown and restarted):
                raise
            restarted = restarted or error.shown
            delay = backoff_delay(attempt, error)
            attempt += 1
            elapsed_ms = round((time.perf_counter() - started - handed_on) * 1000, 3)
            yield ModelRetry(turn=turn, attempt=attempt, delay_s=round(delay, 3),
                             reason=str(error), restart=error.shown, elapsed_ms=elapsed_ms)
            await asyncio.sleep(delay)
