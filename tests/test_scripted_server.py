"""Self-test for the scripted model server test double (real sockets, httpx client)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.scripted_server import EXHAUSTED_TEXT, Reply, ScriptedModelServer, ToolCall


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


def test_pings_and_raw_chunk_framing() -> None:
    """Each SSE event is one HTTP chunk; pings are SSE comments; body ends with 0-chunk."""
    with ScriptedModelServer([Reply(text="abcd", chunk_chars=1, ping_every=2)]) as srv:
        payload = json.dumps(_chat_body()).encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
            raw = b""
            while not raw.endswith(b"\r\n0\r\n\r\n"):
                data = sock.recv(65536)
                assert data, "connection closed early"
                raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    chunks: list[bytes] = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        body = rest[size + 2 :]
    assert all(c.endswith(b"\n\n") for c in chunks)
    assert chunks.count(b": ping\n\n") == 2
    assert chunks[-1] == b"data: [DONE]\n\n"
