"""A retry's `elapsed_ms` is the failed attempt's own time, not its consumer's.

The real Chat Completions client against the scripted model server on 127.0.0.1, through the
one retry policy.
"""

from __future__ import annotations

import asyncio

from codeloop.core.conversation import UserText
from codeloop.core.events import Event, ModelFirstByte, ModelRetry
from codeloop.transport.chat import ChatCompletionsClient
from codeloop.transport.retry import stream_with_retries
from tests.scripted_server import Reply, ScriptedModelServer

WORK_S = 3.0  # what the consumer spends on each event of the failed attempt


def test_a_retry_does_not_count_its_consumers_time_as_the_failed_attempts():
    # before: elapsed_ms held the consumer's 3 s too (~3000 ms for a loopback attempt), so
    # codeloop's own processing was booked as retry_wait_ms, time lost to the server
    async def scenario() -> list[Event]:
        seen: list[Event] = []
        # the first reply's stream breaks (a malformed chunk) after its first byte: retried
        with ScriptedModelServer([Reply(raw_events=["not json"]), Reply(text="ok")]) as server:
            client = ChatCompletionsClient(server.base_url, "scripted", None, 1024, 30.0)
            try:
                async for event in stream_with_retries(
                        client, 1, [UserText("hi")], []):
                    seen.append(event)
                    if not any(isinstance(e, ModelRetry) for e in seen):
                        await asyncio.sleep(WORK_S)  # (codeloop's own work, slowed down)
            finally:
                await client.aclose()
        return seen

    seen = asyncio.run(scenario())
    [retry] = [e for e in seen if isinstance(e, ModelRetry)]
    assert isinstance(seen[0], ModelFirstByte)  # (the consumer did work on the failed attempt)
    assert retry.elapsed_ms < WORK_S * 1000 * 2 / 3, retry
