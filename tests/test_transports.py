"""The three wires against the scripted server on 127.0.0.1: Chat Completions SSE, Responses SSE
and Responses over a persistent WebSocket, plus the `auto` choice and its fall-backs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from codeloop.core.conversation import from_chat_messages
from codeloop.core.events import (
    Event,
    ModelDone,
    ModelFirstByte,
    ModelRetry,
    ModelTextDelta,
    ModelToolCall,
    TransportChange,
)
from codeloop.transport import ModelClient, TransportError, make_client, pick_transport
from codeloop.transport.fallback import FallbackClient
from codeloop.transport.responses_ws import ResponsesWebSocketClient
from codeloop.transport.retry import stream_with_retries
from tests.conftest import PYTEST_CMD, fix_diff, make_repo, read_recording, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                   "required": ["path"]}}}]
WIRES = ("chat", "responses-http", "responses-ws")


def client_for(wire: str, server: ScriptedModelServer, **extra) -> ModelClient:
    return make_client(wire, server.base_url, "scripted", "sk-test-key", 512, 10.0, **extra)


async def collect(client: ModelClient, messages: list[dict], turn: int = 1) -> list[Event]:
    return [event async for event in stream_with_retries(client, turn, from_chat_messages(messages),
                                                             TOOLS)]


def run(scenario: Callable) -> None:
    asyncio.run(scenario())


def one_turn(wire: str, replies: list[Reply]) -> list[Event]:
    """One request over `wire` (connected first) against a server scripted with `replies`."""
    async def scenario() -> list[Event]:
        with ScriptedModelServer(replies) as server:
            client = client_for(wire, server)
            await client.connect()
            events = await collect(client, OPENING)
            await client.aclose()
        return events

    return asyncio.run(scenario())


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ModelTextDelta))


def reply_message(events: list[Event]) -> dict:
    done = next(e for e in events if isinstance(e, ModelDone))
    calls = [e for e in events if isinstance(e, ModelToolCall)]
    message: dict = {"role": "assistant", "content": done.text or None}
    if calls:
        message["tool_calls"] = [{"id": c.call_id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}}
                                 for c in calls]
    return message


OPENING = [{"role": "system", "content": "You fix code."},
           {"role": "user", "content": "Fix the pager."}]


@pytest.mark.parametrize("wire", WIRES)
def test_each_wire_streams_text_and_tool_calls(wire: str) -> None:
    arguments = json.dumps({"path": "pager/paginate.py"})
    replies = [Reply(text="Let me look at the pager first.", chunk_chars=3,
                     tool_calls=[ToolCall("read_file", arguments)], cached_tokens=7)]
    events = one_turn(wire, replies)
    assert text_of(events) == "Let me look at the pager first."
    calls = [e for e in events if isinstance(e, ModelToolCall)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("read_file", {"path": "pager/paginate.py"})]
    done = next(e for e in events if isinstance(e, ModelDone))
    assert done.finish_reason == "tool_calls" and done.usage["cached_tokens"] == 7
    assert done.usage["prompt_tokens"] > 0 and done.client_us_per_token > 0
    first = next(e for e in events if isinstance(e, ModelFirstByte))
    assert first.reused is True and first.request_bytes > 0  # opened by connect()


def test_websocket_sends_only_the_new_items_each_turn_on_one_socket() -> None:
    replies = [Reply(tool_calls=[ToolCall("read_file", '{"path": "a.py"}')]),
               Reply(text="Now I see it."), Reply(text="Done.")]

    async def scenario() -> None:
        with ScriptedModelServer(replies) as server:
            client = client_for("responses-ws", server)
            await client.connect()
            messages = list(OPENING)
            sizes = []
            for turn, follow_up in enumerate((None, "Thanks, go on.", "Finish."), 1):
                if follow_up:
                    messages.append({"role": "user", "content": follow_up})
                events = await collect(client, messages, turn)
                sizes.append(next(e for e in events if isinstance(e, ModelFirstByte))
                             .request_bytes)
                messages.append(reply_message(events))
                if turn == 1:
                    messages.append({"role": "tool", "tool_call_id": messages[-1]["tool_calls"]
                                     [0]["id"], "content": "x = 1\n" * 200})
            await client.aclose()
            bodies = [r.body for r in server.responses_requests]
            assert server.ws_connections == 1
        assert "previous_response_id" not in bodies[0]
        assert [i["type"] for i in bodies[1]["input"]] == ["function_call_output", "message"]
        assert bodies[2]["input"] == [{"type": "message", "role": "user", "content": "Finish."}]
        assert bodies[1]["previous_response_id"] and bodies[2]["previous_response_id"]
        assert all("stream" not in body for body in bodies)
        assert sizes[2] < sizes[1]  # the growing history is not re-sent

    run(scenario)


def test_websocket_reconnects_after_a_server_side_drop_and_resends_everything() -> None:
    replies = [Reply(text="First.", close_after=True), Reply(text="Second.")]

    async def scenario() -> None:
        with ScriptedModelServer(replies) as server:
            client = client_for("responses-ws", server)
            await client.connect()
            messages = list(OPENING)
            first = await collect(client, messages, 1)
            messages += [reply_message(first), {"role": "user", "content": "More."}]
            await asyncio.sleep(0.2)  # the server closes the socket between turns
            second = await collect(client, messages, 2)
            await client.aclose()
            bodies = [r.body for r in server.responses_requests]
            assert server.ws_connections == 2
        changes = [e for e in second if isinstance(e, TransportChange)]
        assert [c.kind for c in changes] == ["reconnect"]
        assert text_of(second) == "Second."
        assert "previous_response_id" not in bodies[1] and len(bodies[1]["input"]) == 3

    run(scenario)


def test_previous_response_not_found_resends_the_full_input_once() -> None:
    replies = [Reply(text="One."), Reply(text="Two.")]

    async def scenario() -> None:
        with ScriptedModelServer(replies) as server:
            client = client_for("responses-ws", server)
            assert isinstance(client, ResponsesWebSocketClient)
            await client.connect()
            messages = list(OPENING)
            first = await collect(client, messages, 1)
            messages += [reply_message(first), {"role": "user", "content": "Again."}]
            # the server lost the response our continuation points at (e.g. evicted)
            client.request.continuation.response_id = "resp_evicted"
            second = await collect(client, messages, 2)
            await client.aclose()
            bodies = [r.body for r in server.responses_requests]
        assert [c.kind for c in second if isinstance(c, TransportChange)] == ["resend"]
        assert bodies[1]["previous_response_id"] == "resp_evicted"
        assert "previous_response_id" not in bodies[2] and len(bodies[2]["input"]) == 3
        assert text_of(second) == "Two."

    run(scenario)


@pytest.mark.parametrize("wire", WIRES)
def test_a_429_with_retry_after_is_honoured(wire: str) -> None:
    replies = [Reply(status=429, retry_after=0.3, error_message="slow down"), Reply(text="ok")]
    events = one_turn(wire, replies)
    retries = [e for e in events if isinstance(e, ModelRetry)]
    assert [(r.delay_s, r.restart) for r in retries] == [(0.3, False)]
    assert "429" in retries[0].reason and text_of(events) == "ok"


def test_a_websocket_that_cannot_open_falls_back_to_http_at_once() -> None:
    async def scenario() -> None:
        with ScriptedModelServer([Reply(text="via http"), Reply(text="again")],
                                 websocket=False) as server:
            client = client_for("responses-ws", server)
            await client.connect()
            first = await collect(client, OPENING, 1)
            second = await collect(client, OPENING, 2)
            await client.aclose()
            posts = [r for r in server.requests if r.method == "POST"]
            upgrades = [r for r in server.requests if r.method == "GET"
                        and r.path.endswith("/responses")]
        assert [(c.kind, c.transport) for c in first if isinstance(c, TransportChange)] == [
            ("fallback", "responses-http")]
        assert text_of(first) == "via http" and text_of(second) == "again"
        assert not [c for c in second if isinstance(c, TransportChange)]
        assert len(posts) == 2 and len(upgrades) <= 1  # no storm of socket retries

    run(scenario)


def test_auto_falls_back_to_chat_once_when_responses_answers_404() -> None:
    async def scenario() -> None:
        with ScriptedModelServer([Reply(text="chat reply"), Reply(text="still chat")],
                                 responses=False) as server:
            # what `auto` builds for a provider whose preferred wire is Responses
            client = FallbackClient(client_for("responses-http", server),
                                    client_for("chat", server))
            first = await collect(client, OPENING, 1)
            second = await collect(client, OPENING, 2)
            await client.aclose()
        assert [(c.kind, c.transport) for c in first if isinstance(c, TransportChange)] == [
            ("fallback", "chat")]
        assert text_of(first) == "chat reply" and text_of(second) == "still chat"
        assert client.name == "chat"

    run(scenario)


def test_auto_picks_the_wire_by_provider() -> None:
    assert pick_transport("auto", "https://api.openai.com/v1") == "responses-ws"
    assert pick_transport("auto", "https://api.cerebras.ai/v1") == "chat"
    assert pick_transport("auto", "http://127.0.0.1:8080/v1") == "chat"
    assert pick_transport("responses-http", "https://api.cerebras.ai/v1") == "responses-http"


@pytest.mark.parametrize("supported", [True, False])
def test_warm_up_is_feature_detected_and_never_fails(supported: bool) -> None:
    async def scenario() -> None:
        with ScriptedModelServer([Reply(text="hi")], warmup=supported) as server:
            client = client_for("responses-ws", server)
            await client.connect()
            note = await client.warm_up("You fix code.", TOOLS)
            events = await collect(client, OPENING)
            await client.aclose()
            bodies = [r.body for r in server.requests if r.method == "WS"]
        assert text_of(events) == "hi"
        if supported:
            assert note.startswith("warmed up") and bodies[0]["generate"] is False
            assert bodies[1]["previous_response_id"] and len(bodies[1]["input"]) == 1
        else:
            assert "not supported" in note
            assert "previous_response_id" not in bodies[-1]

    run(scenario)


def test_responses_over_http_with_store_sends_only_new_items() -> None:
    async def scenario() -> None:
        with ScriptedModelServer([Reply(text="one"), Reply(text="two")], store=True) as server:
            client = client_for("responses-http", server, responses_store=True)
            messages = list(OPENING)
            first = await collect(client, messages, 1)
            messages += [reply_message(first), {"role": "user", "content": "next"}]
            await collect(client, messages, 2)
            await client.aclose()
            bodies = [r.body for r in server.responses_requests]
        assert bodies[0]["store"] is True and bodies[1]["previous_response_id"]
        assert bodies[1]["input"] == [{"type": "message", "role": "user", "content": "next"}]

    run(scenario)


def test_a_websocket_session_end_to_end_keeps_the_key_out_of_the_recording(tmp_path,
                                                                           isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    secret = "sk-ws-" + "5e4d3c2b1a" * 3
    patch = ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))
    with ScriptedModelServer([Reply(tool_calls=[patch])], warmup=True) as server:
        done = run_codeloop(repo, {**isolated_env, "OPENAI_API_KEY": secret}, "--task", "fix",
                            "--base-url", server.base_url, "--transport", "responses-ws",
                            "--test-cmd", PYTEST_CMD, "--json")
        upgrade_headers = next(r.headers for r in server.requests if r.method == "WS")
    assert done.returncode == 0, done.stderr
    assert upgrade_headers["authorization"] == f"Bearer {secret}"
    recording = read_recording(repo)
    assert secret not in json.dumps(recording) and secret not in done.stderr
    kinds = [e.get("kind") for e in recording if e["type"] == "transport.change"]
    assert kinds == ["warmup"]


def test_the_socket_is_rotated_while_idle_before_its_age_limit() -> None:
    async def scenario() -> None:
        with ScriptedModelServer([Reply(text="one"), Reply(text="two")]) as server:
            client = client_for("responses-ws", server)
            assert isinstance(client, ResponsesWebSocketClient)
            await client.connect()
            messages = list(OPENING)
            first = await collect(client, messages, 1)
            messages += [reply_message(first), {"role": "user", "content": "next"}]
            client.rotate_after_s = 0.0  # as if the socket were 55 minutes old
            second = await collect(client, messages, 2)
            await client.aclose()
            bodies = [r.body for r in server.responses_requests]
            assert server.ws_connections == 2
        assert [c.kind for c in second if isinstance(c, TransportChange)] == ["rotate"]
        assert "previous_response_id" not in bodies[1] and text_of(second) == "two"

    run(scenario)


def test_a_silent_websocket_times_out_but_a_slow_consumer_never_does() -> None:
    async def scenario() -> None:
        with ScriptedModelServer([Reply(text="one two three", chunk_chars=4),
                                  Reply(text="late", stall_s=1.5)]) as server:
            client = make_client("responses-ws", server.base_url, "scripted", "sk-test-key",
                                 512, 0.4)
            await client.connect()
            seen = []
            async for event in client.stream(1, from_chat_messages(OPENING), []):
                seen.append(event)
                if isinstance(event, ModelTextDelta):
                    await asyncio.sleep(0.5)  # longer than the timeout, between two events
            assert text_of(seen) == "one two three"
            with pytest.raises(TransportError, match="no event from the WebSocket for 0.4s"):
                async for _ in client.stream(2, from_chat_messages(OPENING), []):
                    pass
            await client.aclose()

    run(scenario)
