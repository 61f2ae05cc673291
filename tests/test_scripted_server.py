"""Self-test for the scripted model server test double.

Real sockets throughout: httpx for HTTP (chat and Responses SSE), `websockets`' sync client for
the Responses WebSocket mode, and a self-signed cert for TLS.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.scripted_server import (
    EXHAUSTED_TEXT,
    Reply,
    ScriptedModelServer,
    ToolCall,
    self_signed_context,
)


def _chat_body(**extra: object) -> dict:
    body: dict = {"model": "m1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    return body


def _events(resp: httpx.Response) -> Iterator[str]:
    """Yield SSE data payloads ("[DONE]" included), skipping comments and blanks."""
    for line in resp.iter_lines():
        if line.startswith("data: "):
            yield line[len("data: ") :]


def _stream(client: httpx.Client, url: str, body: dict) -> list[str]:
    with client.stream("POST", url + "/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["transfer-encoding"] == "chunked"
        return list(_events(resp))


def test_text_reply_streams_pieces_usage_and_done() -> None:
    reply = Reply(text="Hello world", chunk_chars=4, cached_tokens=3)
    with ScriptedModelServer([reply]) as srv, httpx.Client(timeout=5) as client:
        body = _chat_body(stream_options={"include_usage": True})
        events = _stream(client, srv.base_url, body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert c["model"] == "m1"
        assert c["id"].startswith("chatcmpl-") and isinstance(c["created"], int)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:4]]
    assert pieces == ["Hell", "o wo", "rld"]
    finish = chunks[4]
    assert finish["choices"][0] == {"finish_reason": "stop", "index": 0, "delta": {}}
    assert finish["timings"]["predicted_n"] == 3
    usage_chunk = chunks[5]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + 3
    assert usage["prompt_tokens_details"] == {"cached_tokens": 3}
    assert len(chunks) == 6


def test_keep_alive_reuses_one_connection_and_exhausted_script() -> None:
    with ScriptedModelServer([Reply(text="one")]) as srv:
        with httpx.Client(timeout=5) as client:
            models = client.get(srv.base_url + "/models")
            assert models.json()["data"][0]["id"] == "scripted"
            first = _stream(client, srv.base_url, _chat_body())
            second = _stream(client, srv.base_url, _chat_body())
        assert srv.connections == 1
        assert len(srv.requests) == 3
        assert len(srv.chat_requests) == 2
    assert json.loads(first[1])["choices"][0]["delta"]["content"] == "one"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in second[:-1])
    assert text == EXHAUSTED_TEXT


def test_tool_call_streams_header_then_argument_pieces() -> None:
    args = json.dumps({"path": "calc.py", "start": 1})
    reply = Reply(tool_calls=[ToolCall(name="read_file", arguments=args)], chunk_chars=5)
    with ScriptedModelServer([reply]) as srv, httpx.Client(timeout=5) as client:
        events = _stream(client, srv.base_url, _chat_body())
    chunks = [json.loads(e) for e in events[:-1]]
    frags = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert frags[0]["index"] == 0
    assert frags[0]["id"] == "call_1"
    assert frags[0]["type"] == "function"
    assert frags[0]["function"]["name"] == "read_file"
    for f in frags[1:]:
        assert set(f) == {"index", "function"} and set(f["function"]) == {"arguments"}
    assert len(frags) == -(-len(args) // 5)
    assert "".join(f["function"]["arguments"] for f in frags) == args
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_drop_after_chunks_breaks_the_chunked_body() -> None:
    replies = [Reply(text="abcdefghijkl", chunk_chars=2, drop_after_chunks=2), Reply(text="ok")]
    with ScriptedModelServer(replies) as srv, httpx.Client(timeout=5) as client:
        seen: list[str] = []
        url = srv.base_url + "/chat/completions"
        with pytest.raises(httpx.HTTPError), client.stream("POST", url, json=_chat_body()) as resp:
            seen.extend(_events(resp))
        assert "[DONE]" not in seen
        assert len(seen) <= 3  # role chunk + at most two pieces
        # the client recovers on a fresh connection
        assert _stream(client, srv.base_url, _chat_body())[-1] == "[DONE]"
        assert srv.connections == 2


def test_error_reply_carries_retry_after_and_keeps_connection() -> None:
    replies = [Reply(status=429, retry_after=0.5, error_message="slow down"), Reply(text="ok")]
    with ScriptedModelServer(replies) as srv, httpx.Client(timeout=5) as client:
        resp = client.post(srv.base_url + "/chat/completions", json=_chat_body())
        assert resp.status_code == 429
        assert resp.headers["retry-after"] == "0.5"
        err = resp.json()["error"]
        assert err["code"] == 429 and err["message"] == "slow down" and err["type"]
        assert _stream(client, srv.base_url, _chat_body())[-1] == "[DONE]"
        missing = client.get(srv.base_url + "/nope")
        assert missing.status_code == 404
        assert srv.connections == 1


def test_authorization_header_and_body_are_recorded() -> None:
    with ScriptedModelServer([Reply(text="x")]) as srv:
        headers = {"Authorization": "Bearer sk-test"}
        with httpx.Client(timeout=5, headers=headers) as client:
            _stream(client, srv.base_url, _chat_body())
        rec = srv.chat_requests[0]
    assert rec.method == "POST"
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == "Bearer sk-test"
    assert rec.body is not None and rec.body["model"] == "m1"


def _raw_chunked_post(port: int, path: str, body: dict) -> tuple[bytes, list[bytes]]:
    """POST over a raw socket; returns the whole response and its HTTP chunks, in order."""
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        raw = b""
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(65536)
            assert data, "connection closed early"
            raw += data
    head, _, body_bytes = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    chunks: list[bytes] = []
    while body_bytes:
        size_line, _, rest = body_bytes.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        body_bytes = rest[size + 2:]
    return raw, chunks


def test_pings_and_raw_chunk_framing() -> None:
    """Each SSE event is one HTTP chunk; pings are SSE comments; body ends with 0-chunk."""
    with ScriptedModelServer([Reply(text="abcd", chunk_chars=1, ping_every=2)]) as srv:
        raw, chunks = _raw_chunked_post(srv.port, "/v1/chat/completions", _chat_body())
    assert all(c.endswith(b"\n\n") for c in chunks)
    assert chunks.count(b": ping\n\n") == 2
    assert chunks[-1] == b"data: [DONE]\n\n"


# --------------------------------------------------------------------------- Responses over HTTP
def _responses_sse(resp: httpx.Response) -> list[dict]:
    """Parse `event:` + `data:` pairs; check each event name matches its payload's type."""
    events: list[dict] = []
    name: str | None = None
    for line in resp.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            obj = json.loads(line[len("data: ") :])
            assert obj["type"] == name
            events.append(obj)
            name = None
    return events


def _post_responses(client: httpx.Client, url: str, body: dict) -> tuple[list[dict], int]:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    with client.stream("POST", url + "/responses", content=raw, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["transfer-encoding"] == "chunked"
        return _responses_sse(resp), len(raw)


def _resp_body(**extra: object) -> dict:
    body: dict = {"model": "m1", "stream": True, "input": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    return body


def test_responses_http_text_events_sequence_and_usage() -> None:
    reply = Reply(text="Hello world", chunk_chars=4, cached_tokens=3)
    with ScriptedModelServer([reply]) as srv, httpx.Client(timeout=5) as client:
        events, body_len = _post_responses(client, srv.base_url, _resp_body())
        assert len(srv.responses_requests) == 1 and srv.chat_requests == []
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    created = events[0]["response"]
    assert created["id"].startswith("resp_") and created["status"] == "in_progress"
    item = events[2]["item"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["id"].startswith("msg_")
    deltas = events[4:7]
    for d in deltas:
        assert (d["item_id"], d["output_index"], d["content_index"]) == (item["id"], 0, 0)
    assert [d["delta"] for d in deltas] == ["Hell", "o wo", "rld"]
    assert events[7]["text"] == "Hello world"
    assert events[9]["item"]["content"][0]["text"] == "Hello world"
    done = events[-1]["response"]
    assert done["id"] == created["id"] and done["object"] == "response"
    assert done["status"] == "completed" and done["model"] == "m1"
    assert done["output"] == [events[9]["item"]]
    usage = done["usage"]
    assert usage["input_tokens"] == body_len // 4
    assert usage["input_tokens_details"] == {"cached_tokens": 3}
    assert usage["output_tokens"] == 3
    assert usage["total_tokens"] == body_len // 4 + 3


def test_responses_http_tool_call_one_chunk_per_event_no_done() -> None:
    args = json.dumps({"path": "calc.py"})
    reply = Reply(text="Look.", tool_calls=[ToolCall("read_file", args)], chunk_chars=6,
                  ping_every=2)
    with ScriptedModelServer([reply]) as srv:
        raw, chunks = _raw_chunked_post(srv.port, "/v1/responses", _resp_body())
    assert b"[DONE]" not in raw
    pings = [c for c in chunks if c == b": ping\n\n"]
    events = []
    for c in chunks:
        if c in pings:
            continue
        name, data = c.decode().removesuffix("\n\n").split("\n")
        events.append(json.loads(data.removeprefix("data: ")))
        assert name == "event: " + events[-1]["type"]
    n_pieces = 1 + -(-len(args) // 6)
    assert len(pings) == n_pieces // 2
    calls = [e for e in events if e["type"].startswith("response.function_call")]
    added = [e for e in events if e["type"] == "response.output_item.added"][1]
    fc = added["item"]
    assert added["output_index"] == 1
    assert fc["type"] == "function_call" and fc["id"].startswith("fc_")
    assert fc["call_id"] == "call_1" and fc["name"] == "read_file" and fc["arguments"] == ""
    assert "".join(e["delta"] for e in calls[:-1]) == args
    assert all(e["item_id"] == fc["id"] and e["output_index"] == 1 for e in calls)
    assert calls[-1]["type"] == "response.function_call_arguments.done"
    assert calls[-1]["arguments"] == args
    item_done = events[-2]
    assert item_done["type"] == "response.output_item.done"
    assert item_done["item"] == {**fc, "status": "completed", "arguments": args}
    final = events[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["message", "function_call"]
    assert final["output"][1] == item_done["item"]
    assert final["usage"]["output_tokens"] == n_pieces


def test_responses_http_errors_store_and_previous_id() -> None:
    replies = [Reply(status=429, retry_after=2, error_message="slow down"), Reply(text="a"),
               Reply(text="b")]
    with ScriptedModelServer(replies, store=True) as srv, httpx.Client(timeout=5) as client:
        resp = client.post(srv.base_url + "/responses", json=_resp_body())
        assert resp.status_code == 429 and resp.headers["retry-after"] == "2"
        assert resp.json()["error"]["message"] == "slow down"
        first, _ = _post_responses(client, srv.base_url, _resp_body())
        first_id = first[-1]["response"]["id"]
        events, _ = _post_responses(client, srv.base_url, _resp_body(previous_response_id=first_id))
        assert events[-1]["response"]["previous_response_id"] == first_id
        missing = client.post(srv.base_url + "/responses",
                              json=_resp_body(previous_response_id="resp_nope"))
        assert srv.replies_left == 0
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "previous_response_not_found"
    assert missing.json()["error"]["param"] == "previous_response_id"
    # stateless by default: no id is ever found over HTTP
    with ScriptedModelServer([Reply(text="x")]) as srv, httpx.Client(timeout=5) as client:
        first, _ = _post_responses(client, srv.base_url, _resp_body())
        again = client.post(srv.base_url + "/responses",
                            json=_resp_body(previous_response_id=first[-1]["response"]["id"]))
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "previous_response_not_found"


# --------------------------------------------------------------------------- Responses over WS
def _create(**extra: object) -> str:
    body: dict = {"type": "response.create", "model": "m1", "store": False,
                  "input": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    return json.dumps(body)


def _turn(ws: ClientConnection, message: str | None = None) -> list[dict]:
    """Send one message (if given) and collect events up to a terminal or error event."""
    if message is not None:
        ws.send(message)
    events: list[dict] = []
    while True:
        events.append(json.loads(ws.recv(timeout=5)))
        if events[-1]["type"] in ("response.completed", "response.incomplete", "error"):
            return events


def test_ws_two_turns_continue_on_one_connection_and_are_recorded() -> None:
    args = json.dumps({"path": "calc.py"})
    replies = [Reply(text="Hello", chunk_chars=2),
               Reply(tool_calls=[ToolCall("read_file", args, id="call_x")], chunk_chars=4)]
    with ScriptedModelServer(replies) as srv:
        with connect(srv.ws_url, additional_headers={"Authorization": "Bearer sk-ws"}) as ws:
            first = _turn(ws, _create())
            first_id = first[-1]["response"]["id"]
            # a large message sent as fragments (continuation frames) continues the first turn
            big = _create(previous_response_id=first_id, input=[{"type": "function_call_output",
                          "call_id": "c", "output": "x" * 200_000}])
            ws.send(iter([big[:10], big[10:70_000], big[70_000:]]))
            second = _turn(ws)
            wrong = _turn(ws, _create(previous_response_id="resp_other"))
            assert ws.ping().wait(5)
        assert srv.ws_connections == 1 and srv.connections == 1
        assert srv.replies_left == 0
        recs = srv.responses_requests
    assert [e["type"] for e in first][:2] == ["response.created", "response.in_progress"]
    assert [e["sequence_number"] for e in first] == list(range(len(first)))
    assert "".join(e["delta"] for e in first if e["type"].endswith("text.delta")) == "Hello"
    assert second[-1]["type"] == "response.completed"
    assert second[-1]["response"]["previous_response_id"] == first_id
    assert second[-1]["response"]["usage"]["input_tokens"] == len(big.encode()) // 4
    item = second[-1]["response"]["output"][0]
    assert item["type"] == "function_call" and item["call_id"] == "call_x"
    assert item["arguments"] == args
    assert wrong == [{"type": "error", "status": 400, "error": {
        "type": "invalid_request_error", "code": "previous_response_not_found",
        "message": "Previous response with id 'resp_other' not found.",
        "param": "previous_response_id"}}]
    assert len(recs) == 3
    assert all(r.method == "WS" and r.path == "/v1/responses" for r in recs)
    assert recs[0].headers["authorization"] == "Bearer sk-ws"
    assert recs[1].body is not None and recs[1].body["previous_response_id"] == first_id


def test_ws_warmup_only_when_enabled() -> None:
    with ScriptedModelServer([Reply(text="go")], warmup=True) as srv, connect(srv.ws_url) as ws:
        warm = _turn(ws, _create(generate=False, input=[]))
        assert [e["type"] for e in warm] == ["response.created", "response.completed"]
        assert warm[-1]["response"]["output"] == []
        assert srv.replies_left == 1
        turn = _turn(ws, _create(previous_response_id=warm[-1]["response"]["id"]))
        assert turn[-1]["type"] == "response.completed" and srv.replies_left == 0
    with ScriptedModelServer([Reply(text="go")]) as srv, connect(srv.ws_url) as ws:
        err = _turn(ws, _create(generate=False))[0]
        assert err["status"] == 400 and err["error"]["code"] == "unknown_parameter"
        assert err["error"]["param"] == "generate" and srv.replies_left == 1


def test_ws_error_event_carries_retry_after_and_connection_survives() -> None:
    replies = [Reply(status=429, retry_after=1.5, error_message="slow down"), Reply(text="ok")]
    with ScriptedModelServer(replies) as srv, connect(srv.ws_url) as ws:
        err = _turn(ws, _create())
        ok = _turn(ws, _create())
    assert err == [{"type": "error", "status": 429, "error": {
        "type": "rate_limit_error", "code": "rate_limit_exceeded", "message": "slow down",
        "headers": {"retry-after": "1.5"}}}]
    assert ok[-1]["response"]["output"][0]["content"][0]["text"] == "ok"


def test_ws_stream_field_is_rejected_without_consuming_a_reply() -> None:
    with ScriptedModelServer([Reply(text="x")]) as srv, connect(srv.ws_url) as ws:
        err = _turn(ws, _create(stream=True))[0]
        assert err["type"] == "error" and err["status"] == 400
        assert err["error"]["code"] == "unknown_parameter" and err["error"]["param"] == "stream"
        assert srv.replies_left == 1


def test_ws_drop_after_chunks_closes_without_close_frame() -> None:
    replies = [Reply(text="abcdefgh", chunk_chars=2, drop_after_chunks=2)]
    with ScriptedModelServer(replies) as srv, connect(srv.ws_url) as ws:
        ws.send(_create())
        seen: list[dict] = []
        with pytest.raises(ConnectionClosedError) as info:
            while True:
                seen.append(json.loads(ws.recv(timeout=5)))
    assert info.value.rcvd is None  # abrupt: no close frame from the server
    assert sum(e["type"] == "response.output_text.delta" for e in seen) == 2
    assert all(e["type"] != "response.completed" for e in seen)


def test_ws_close_after_sends_1001_and_cache_dies_with_the_socket() -> None:
    replies = [Reply(text="one", close_after=True), Reply(text="two")]
    with ScriptedModelServer(replies) as srv:
        with connect(srv.ws_url) as ws:
            first = _turn(ws, _create())
            assert first[-1]["type"] == "response.completed"
            with pytest.raises(ConnectionClosedOK) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        with connect(srv.ws_url) as ws:
            stale = _turn(ws, _create(previous_response_id=first[-1]["response"]["id"]))
            fresh = _turn(ws, _create())
        assert srv.ws_connections == 2
    assert stale[0]["error"]["code"] == "previous_response_not_found"
    assert fresh[-1]["type"] == "response.completed"


def test_switches_turn_websocket_and_responses_off() -> None:
    with ScriptedModelServer([Reply(text="http")], websocket=False) as srv:
        with pytest.raises(InvalidStatus) as info:
            connect(srv.ws_url, open_timeout=5)
        assert info.value.response.status_code == 404
        with httpx.Client(timeout=5) as client:
            events, _ = _post_responses(client, srv.base_url, _resp_body())
        assert events[-1]["type"] == "response.completed" and srv.ws_connections == 0
    with ScriptedModelServer([Reply(text="chat")], responses=False) as srv:
        with pytest.raises(InvalidStatus) as info:
            connect(srv.ws_url, open_timeout=5)
        assert info.value.response.status_code == 404
        with httpx.Client(timeout=5) as client:
            resp = client.post(srv.base_url + "/responses", json=_resp_body())
            assert resp.status_code == 404 and resp.json()["error"]["code"] == 404
            assert _stream(client, srv.base_url, _chat_body())[-1] == "[DONE]"


def _frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    key = b"\x01\x02\x03\x04"
    head = bytes(((0x80 if fin else 0) | opcode,))
    n = len(payload)
    size = bytes((n,)) if n < 126 else bytes((126,)) + n.to_bytes(2, "big")
    if not mask:
        return head + size + payload
    size = bytes((size[0] | 0x80,)) + size[1:]
    return head + size + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _read_frame(rfile: object) -> tuple[int, bytes]:
    b0, b1 = rfile.read(2)  # type: ignore[attr-defined]
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(rfile.read(2), "big")  # type: ignore[attr-defined]
    elif n == 127:
        n = int.from_bytes(rfile.read(8), "big")  # type: ignore[attr-defined]
    assert not b1 & 0x80, "server frames are not masked"
    return b0 & 0x0F, rfile.read(n)  # type: ignore[attr-defined]


def _raw_upgrade(port: int) -> tuple[socket.socket, object]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /v1/responses HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    rfile = sock.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += rfile.readline()
    assert head.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455 example
    return sock, rfile


def test_ws_raw_frames_fragments_ping_close_echo_and_unmasked_frame() -> None:
    with ScriptedModelServer([Reply(text="ok")]) as srv:
        sock, rfile = _raw_upgrade(srv.port)
        with sock:
            msg = _create().encode()
            sock.sendall(_frame(0x1, msg[:5], fin=False) + _frame(0x9, b"hi")
                         + _frame(0x0, msg[5:20], fin=False) + _frame(0x0, msg[20:]))
            assert _read_frame(rfile) == (0xA, b"hi")  # pong, answered between fragments
            types = []
            while not types or types[-1] != "response.completed":
                opcode, data = _read_frame(rfile)
                assert opcode == 0x1
                types.append(json.loads(data)["type"])
            sock.sendall(_frame(0x8, (1000).to_bytes(2, "big")))
            assert _read_frame(rfile) == (0x8, (1000).to_bytes(2, "big"))
            assert rfile.read(1) == b""  # then the server ends the TCP connection
        sock, rfile = _raw_upgrade(srv.port)
        with sock:
            sock.sendall(_frame(0x1, b"{}", mask=False))
            opcode, data = _read_frame(rfile)
            assert opcode == 0x8 and int.from_bytes(data[:2], "big") == 1002
        assert srv.ws_connections == 2 and srv.replies_left == 0


# --------------------------------------------------------------------------- TLS and RTT
def test_tls_serves_chat_over_https_and_responses_over_wss(tmp_path: Path) -> None:
    ctx, cert = self_signed_context(tmp_path)
    replies = [Reply(text="secure"), Reply(text="wss")]
    with ScriptedModelServer(replies, ssl_context=ctx) as srv:
        assert srv.base_url.startswith("https://") and srv.ws_url.startswith("wss://")
        with httpx.Client(timeout=5, verify=False) as client:
            events = _stream(client, srv.base_url, _chat_body())
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                       for e in events[:-1])
        assert text == "secure"
        client_ctx = ssl.create_default_context(cafile=str(cert))
        with connect(srv.ws_url, ssl=client_ctx) as ws:
            turn = _turn(ws, _create())
        assert turn[-1]["response"]["output"][0]["content"][0]["text"] == "wss"


def test_rtt_delays_new_connections_requests_and_ws_streams() -> None:
    rtt = 0.05
    with ScriptedModelServer([Reply(text="a"), Reply(text="b")], rtt_s=rtt) as srv:
        with httpx.Client(timeout=5) as client:
            t0 = time.monotonic()
            client.get(srv.base_url + "/models")
            cold = time.monotonic() - t0
            t0 = time.monotonic()
            client.get(srv.base_url + "/models")
            warm = time.monotonic() - t0
        t0 = time.monotonic()
        with connect(srv.ws_url) as ws:
            opened = time.monotonic() - t0
            t0 = time.monotonic()
            ws.send(_create())
            ws.recv(timeout=5)
            first_event = time.monotonic() - t0
            _turn(ws)
    assert cold >= 2 * rtt  # TCP handshake + request/response
    assert warm >= rtt
    assert opened >= 2 * rtt  # TCP handshake + upgrade
    assert first_event >= rtt


def test_timings_give_the_servers_own_time_without_the_emulated_network(tmp_path: Path) -> None:
    paced = [Reply(text="abcdefgh", chunk_chars=2)] * 2  # 4 pieces at 20/s: >= 150 ms of work
    with ScriptedModelServer(paced, rtt_s=0.1, tokens_per_s=20) as srv:
        srv.timings_file = tmp_path / "timings.jsonl"
        with httpx.Client(timeout=5) as client:
            _stream(client, srv.base_url, _chat_body())
        with connect(srv.ws_url) as ws:
            _turn(ws, _create())
    timings = srv.timings
    assert [t["protocol"] for t in timings] == ["chat", "responses-ws"]
    assert [json.loads(line) for line in srv.timings_file.read_text().splitlines()] == timings
    # the chat request paid a TCP handshake and one round trip; the WebSocket stream one trip
    assert [round(t["network_delay_ms"], -2) for t in timings] == [200, 100]
    assert all(150 <= t["server_ms"] < 1000 for t in timings)  # the pacing, not the delay
