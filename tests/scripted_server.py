"""Scripted model server: a local test double for an OpenAI-compatible chat endpoint.

This module owns a small, standard-library-only HTTP/1.1 server that speaks the
Chat Completions streaming wire format the way llama.cpp's ``llama-server`` does
(``data: <json>`` SSE events, one per HTTP chunk, ``timings`` on the finish chunk,
an optional ``choices: []`` usage chunk, then ``data: [DONE]``).  Tests hand it a
list of :class:`Reply` objects; each ``POST /v1/chat/completions`` consumes the
next one.  Replies can also misbehave on purpose: HTTP errors with Retry-After,
stalls before the headers, SSE ping comments, pacing, and abrupt connection drops.

Every request is recorded (:class:`RecordedRequest`) and accepted TCP connections
are counted, so tests can assert on headers, bodies and connection reuse.

Standalone use (manual testing, benchmarks)::

    python -m tests.scripted_server --script replies.json [--port N] [--tokens-per-s X]

where ``replies.json`` is a JSON list of objects holding :class:`Reply` fields
(``tool_calls`` as a list of ``{"name": ..., "arguments": ..., "id": ...}``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import secrets
import signal
import socket
import socketserver
import string
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

EXHAUSTED_TEXT = "(scripted server: no more replies)"
MODEL_ID = "scripted"

_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


@dataclass
class ToolCall:
    """One tool call the scripted model emits."""

    name: str
    arguments: str  # JSON text, streamed in pieces of `chunk_chars`
    id: str = ""  # auto "call_<n>" when empty


@dataclass
class Reply:
    """What the server answers to one chat request."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    chunk_chars: int = 4
    status: int = 200
    error_message: str = "scripted error"
    retry_after: float | None = None
    drop_after_chunks: int | None = None
    stall_s: float = 0.0
    ping_every: int = 0
    cached_tokens: int | None = None
    finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop"
    hold_open_s: float = 0.0  # after [DONE], keep the body open this long before ending it
    raw_events: list[str] = field(default_factory=list)  # extra `data:` payloads sent first

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        """Build a Reply from plain JSON data (``tool_calls`` as a list of dicts)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Reply fields: {sorted(unknown)}")
        kwargs = dict(data)
        kwargs["tool_calls"] = [
            tc if isinstance(tc, ToolCall) else ToolCall(**tc) for tc in data.get("tool_calls", [])
        ]
        return cls(**kwargs)


@dataclass
class RecordedRequest:
    """One HTTP request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict | None  # parsed JSON body or None


class _DropConnection(Exception):
    """Raised inside the handler once the socket was closed on purpose."""


def _split(text: str, size: int) -> list[str]:
    if size <= 0 or len(text) <= size:
        return [text]
    return [text[i : i + size] for i in range(0, len(text), size)]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _is_chat_path(path: str) -> bool:
    return path.split("?", 1)[0].rstrip("/") == "/v1/chat/completions"


def _completion_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "chatcmpl-" + "".join(secrets.choice(alphabet) for _ in range(32))


def _error_body(status: int, message: str) -> bytes:
    fallback = "server_error" if status >= 500 else "invalid_request_error"
    err_type = _ERROR_TYPES.get(status, fallback)
    return _dumps({"error": {"code": status, "message": message, "type": err_type}}).encode()


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: ScriptedModelServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._connection_opened(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.owner._connection_closed(request)
        super().shutdown_request(request)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TCPServer

    def version_string(self) -> str:
        return "scripted-llama.cpp"

    # ----------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.owner.log_requests:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until the empty line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after the chunk data
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _record(self, raw: bytes) -> RecordedRequest:
        body: dict | None = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            body = parsed if isinstance(parsed, dict) else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        rec = RecordedRequest(method=self.command, path=self.path, headers=headers, body=body)
        self.server.owner._record(rec)
        return rec

    def _send_json(self, status: int, payload: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.close_connection = True
        raise _DropConnection

    # ----------------------------------------------------------------- routes
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._record(self._read_body())
        if self.path.rstrip("/") == "/v1/models":
            payload = {
                "object": "list",
                "data": [{"id": MODEL_ID, "object": "model", "owned_by": "codeloop-tests"}],
            }
            self._send_json(200, _dumps(payload).encode())
        else:
            self._send_json(404, _error_body(404, f"File Not Found: {self.path}"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        started = time.monotonic()
        raw = self._read_body()
        rec = self._record(raw)
        if not _is_chat_path(self.path):
            self._send_json(404, _error_body(404, f"File Not Found: {self.path}"))
            return
        if rec.body is None:
            self._send_json(400, _error_body(400, "request body is not a JSON object"))
            return
        if rec.body.get("stream") is not True:
            self._send_json(400, _error_body(400, "scripted server only supports stream=true"))
            return
        reply = self.server.owner._next_reply()
        try:
            self._serve_reply(reply, rec.body, len(raw), started)
        except _DropConnection:
            return
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ----------------------------------------------------------------- streaming
    def _serve_reply(self, reply: Reply, body: dict, body_len: int, started: float) -> None:
        owner = self.server.owner
        if reply.stall_s > 0:
            time.sleep(reply.stall_s)
        if reply.status != 200:
            extra: dict[str, str] = {}
            if reply.retry_after is not None:
                extra["Retry-After"] = f"{reply.retry_after:g}"
            self._send_json(reply.status, _error_body(reply.status, reply.error_message), extra)
            return

        model = str(body.get("model") or MODEL_ID)
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        base = {"created": int(time.time()), "id": _completion_id(), "model": model}

        def event(choices: list[dict], **extra: Any) -> bytes:
            obj: dict[str, Any] = {"choices": choices, **base}
            obj["system_fingerprint"] = "b0-scripted"
            obj["object"] = "chat.completion.chunk"
            obj.update(extra)
            return f"data: {_dumps(obj)}\n\n".encode()

        def delta(d: dict, finish: str | None = None) -> list[dict]:
            return [{"finish_reason": finish, "index": 0, "delta": d}]

        # Every piece of generated output becomes one SSE event.
        text_pieces = _split(reply.text, reply.chunk_chars) if reply.text else []
        pieces: list[bytes] = [event(delta({"content": p})) for p in text_pieces]
        for i, call in enumerate(reply.tool_calls):
            call_id = call.id or owner._next_call_id()
            for j, p in enumerate(_split(call.arguments, reply.chunk_chars)):
                if j == 0:
                    frag = {
                        "index": i,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": p},
                    }
                else:
                    frag = {"index": i, "function": {"arguments": p}}
                pieces.append(event(delta({"tool_calls": [frag]})))

        self.send_response(200)
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        self._write_chunk(event(delta({"role": "assistant", "content": None})))
        for payload in reply.raw_events:
            self._write_chunk(f"data: {payload}\n\n".encode())
        first_piece_at: float | None = None
        delay = 1.0 / owner.tokens_per_s if owner.tokens_per_s else 0.0
        sent = 0
        for chunk in pieces:
            if reply.drop_after_chunks is not None and sent >= reply.drop_after_chunks:
                self._drop()
            if sent and delay:
                time.sleep(delay)
            self._write_chunk(chunk)
            sent += 1
            if first_piece_at is None:
                first_piece_at = time.monotonic()
            if reply.ping_every > 0 and sent % reply.ping_every == 0:
                self._write_chunk(b": ping\n\n")
        if reply.drop_after_chunks is not None and sent >= reply.drop_after_chunks:
            self._drop()

        done_at = time.monotonic()
        first_piece_at = first_piece_at or done_at
        prompt_tokens = body_len // 4
        cached = reply.cached_tokens or 0
        prompt_n = max(prompt_tokens - cached, 0)
        prompt_ms = (first_piece_at - started) * 1000.0
        predicted_ms = (done_at - first_piece_at) * 1000.0
        timings = {
            "cache_n": cached,
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": prompt_n * 1000.0 / prompt_ms if prompt_ms > 0 else 0.0,
            "predicted_n": sent,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / sent if sent else 0.0,
            "predicted_per_second": sent * 1000.0 / predicted_ms if predicted_ms > 0 else 0.0,
        }
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        self._write_chunk(event(delta({}, finish), timings=timings))
        if include_usage:
            usage = {
                "completion_tokens": sent,
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + sent,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
            # llama.cpp repeats `timings` on this final chunk as well.
            self._write_chunk(event([], usage=usage, timings=timings))
        self._write_chunk(b"data: [DONE]\n\n")
        if reply.hold_open_s > 0:
            self.wfile.flush()
            time.sleep(reply.hold_open_s)
        self.wfile.write(b"0\r\n\r\n")


class ScriptedModelServer:
    """A threaded local HTTP server that replays scripted chat replies."""

    def __init__(self, replies: list[Reply], *, tokens_per_s: float | None = None) -> None:
        self.replies: list[Reply] = list(replies)
        self.tokens_per_s = tokens_per_s
        self.requests: list[RecordedRequest] = []
        self.connections: int = 0
        self.log_requests = False
        self._lock = threading.Lock()
        self._reply_index = 0
        self._call_counter = 0
        self._open_sockets: set[socket.socket] = set()
        self._server: _TCPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self, port: int = 0) -> ScriptedModelServer:
        if self._server is not None:
            return self
        self._server = _TCPServer(("127.0.0.1", port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="scripted-model-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            open_sockets = list(self._open_sockets)
            self._open_sockets.clear()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- inspection
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and _is_chat_path(r.path)]

    @property
    def replies_left(self) -> int:
        with self._lock:
            return len(self.replies) - self._reply_index

    # ----------------------------------------------------------------- handler hooks
    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _next_reply(self) -> Reply:
        with self._lock:
            if self._reply_index < len(self.replies):
                reply = self.replies[self._reply_index]
                self._reply_index += 1
                return reply
        return Reply(text=EXHAUSTED_TEXT)

    def _next_call_id(self) -> str:
        with self._lock:
            self._call_counter += 1
            return f"call_{self._call_counter}"

    def _connection_opened(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._open_sockets.add(sock)

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open_sockets.discard(sock)


def load_script(path: str) -> list[Reply]:
    """Read a JSON list of Reply field dicts."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise ValueError("script must be a JSON list of reply objects")
    return [Reply.from_dict(item) for item in data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve scripted chat-completion replies.")
    parser.add_argument("--script", help="JSON list of Reply objects (default: none)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: ephemeral)")
    parser.add_argument("--tokens-per-s", type=float, default=None, help="pace streamed chunks")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)

    replies = load_script(args.script) if args.script else []
    server = ScriptedModelServer(replies, tokens_per_s=args.tokens_per_s)
    server.log_requests = not args.quiet
    server.start(port=args.port)
    print(server.base_url, flush=True)

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
