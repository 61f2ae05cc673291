"""`service_tier` on the three wires against the scripted server: sent unchanged in every
request, the tier that served read from the answer (also one other than asked for), and a
capacity refusal of the tier (Groq's 498 `capacity_exceeded`, OpenAI's flex 429) falling back to
the default tier once, visibly."""

from __future__ import annotations

import asyncio

import pytest

from codeloop.core.conversation import from_chat_messages
from codeloop.core.events import Event, ModelDone, ModelRetry, TransportChange
from codeloop.core.kinds import TransportChangeKind
from codeloop.transport import TransportError, make_client
from codeloop.transport.retry import stream_with_retries
from tests.scripted_server import Reply, ScriptedModelServer

WIRES = ("chat", "responses-http", "responses-ws")
OPENING = [{"role": "system", "content": "You fix code."},
           {"role": "user", "content": "Fix the pager."}]


def session(wire: str, replies: list[Reply], turns: int, tier: str
            ) -> tuple[list[list[Event]], list[dict]]:
    """`turns` requests over one client; the events of each and the request bodies received."""
    async def scenario() -> list[list[Event]]:
        client = make_client(wire, server.base_url, "scripted", "sk-test-key", 512, 10.0,
                             service_tier=tier)
        await client.connect()
        events: list[list[Event]] = []
        try:
            for number in range(1, turns + 1):
                events.append([])
                async for event in stream_with_retries(client, number,
                                                       from_chat_messages(OPENING), []):
                    events[-1].append(event)
        finally:
            await client.aclose()
        return events

    with ScriptedModelServer(replies) as server:
        events = asyncio.run(scenario())
        requests = server.chat_requests if wire == "chat" else server.responses_requests
    return events, [request.body or {} for request in requests]


def done_of(events: list[Event]) -> ModelDone:
    return next(e for e in events if isinstance(e, ModelDone))


@pytest.mark.parametrize("wire", WIRES)
def test_tier_goes_unchanged_in_every_request_and_the_served_tier_is_read(wire: str) -> None:
    events, bodies = session(wire, [Reply(text="One."), Reply(text="Two.")], 2, "priority")
    assert [body.get("service_tier") for body in bodies] == ["priority", "priority"]
    assert [done_of(turn).service_tier for turn in events] == ["priority", "priority"]


@pytest.mark.parametrize("wire", WIRES)
def test_a_served_tier_other_than_the_one_asked_for_is_what_is_recorded(wire: str) -> None:
    events, bodies = session(wire, [Reply(text="One.", served_tier="default")], 1, "flex")
    assert bodies[0]["service_tier"] == "flex"
    assert done_of(events[0]).service_tier == "default"


@pytest.mark.parametrize("wire", WIRES)
def test_no_tier_configured_sends_none_and_records_none(wire: str) -> None:
    events, bodies = session(wire, [Reply(text="One.")], 1, "")
    assert "service_tier" not in bodies[0]
    assert done_of(events[0]).service_tier == ""


@pytest.mark.parametrize("wire", WIRES)
def test_capacity_refusal_falls_back_to_the_default_tier_once_visibly(wire: str) -> None:
    replies = [Reply(text="Fixed.", refuse_tier=True), Reply(text="Again.", refuse_tier=True)]
    events, bodies = session(wire, replies, 2, "flex")
    first, second = events
    changes = [e for e in first if isinstance(e, TransportChange)]
    assert [c.kind for c in changes] == [TransportChangeKind.TIER]
    assert "flex" in changes[0].message and "498" in changes[0].message
    assert not any(isinstance(e, ModelRetry) for e in first + second)
    assert done_of(first).text == "Fixed." and done_of(first).service_tier == ""
    # the refused request, the same again without a tier, and no tier from then on
    assert [body.get("service_tier") for body in bodies] == ["flex", None, None]
    assert bodies[0]["model"] == bodies[1]["model"]
    assert not any(isinstance(e, TransportChange) for e in second)
    assert done_of(second).text == "Again."


@pytest.mark.parametrize("wire", WIRES)
def test_a_refusal_of_the_default_tier_is_an_error_not_a_second_fall_back(wire: str) -> None:
    replies = [Reply(text="Fixed.", refuse_tier=True), Reply(status=498)]
    with pytest.raises(TransportError, match="498"):
        session(wire, replies, 2, "flex")


def test_openai_flex_429_falls_back_too() -> None:
    refusal = Reply(status=429, error_message="Resource unavailable for flex processing; "
                                              "retry later or use the default tier.")
    events, bodies = session("chat", [refusal, Reply(text="Fixed.")], 1, "flex")
    assert [e.kind for e in events[0] if isinstance(e, TransportChange)] == [
        TransportChangeKind.TIER]
    assert [body.get("service_tier") for body in bodies] == ["flex", None]


def test_a_plain_rate_limit_is_retried_with_the_tier_kept() -> None:
    events, bodies = session("chat", [Reply(status=429, retry_after=0), Reply(text="Fixed.")],
                             1, "flex")
    assert any(isinstance(e, ModelRetry) for e in events[0])
    assert not any(isinstance(e, TransportChange) for e in events[0])
    assert [body.get("service_tier") for body in bodies] == ["flex", "flex"]
