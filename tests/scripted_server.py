"""Scripted model server: a local test double for OpenAI-compatible model endpoints.

This module owns a small, standard-library-only HTTP/1.1 server that speaks three wire formats on
one port, all answered from one shared script of :class:`Reply` objects (each generating request,
whatever its protocol, consumes the next one):

* ``POST /v1/chat/completions``: Chat Completions SSE the way llama.cpp's ``llama-server`` sends
  it (``data: <json>`` events, one per HTTP chunk, ``timings`` on the finish chunk, an optional
  ``choices: []`` usage chunk, then ``data: [DONE]``).
* ``POST /v1/responses`` with ``"stream": true``: OpenAI Responses SSE (``event: <type>`` +
  ``data: <json>``, one per HTTP chunk, ``sequence_number`` on every event, no ``[DONE]``).
* ``GET /v1/responses`` with ``Upgrade: websocket``: the Responses API WebSocket mode (RFC 6455,
  one JSON event per text message, ``response.create`` client messages, a connection-local
  ``previous_response_id`` cache, optional ``generate: false`` warm-ups).

Each reply can carry a provider's own account of its time (``Reply.timing``: llama.cpp
``timings``, Groq ``x_groq.usage``/``usage`` times, Cerebras ``time_info``; what was sent is kept
in ``served_timings``), and the server echoes a request's ``service_tier`` as the tier that served
(``Reply.served_tier`` serves another; ``Reply.refuse_tier`` answers a tiered request with Groq's
HTTP 498 ``capacity_exceeded``).

Replies can also misbehave on purpose: HTTP errors with Retry-After (``error`` events on a
WebSocket), stalls before the first byte, SSE ping comments (WebSocket pings), pacing, abrupt
connection drops and, on a WebSocket, a server-initiated close (1001) after a reply.  Switches on
:class:`ScriptedModelServer` turn the Responses API or its WebSocket mode off (to test a client's
fall-back), add warm-up and ``store`` semantics, emulate a network round trip (``rtt_s``) and
serve TLS (``ssl_context``; :func:`self_signed_context` makes one with the ``openssl`` CLI).

Every request is recorded (:class:`RecordedRequest`; WebSocket messages with method ``"WS"``) and
accepted TCP connections and WebSocket upgrades are counted, so tests can assert on headers,
bodies and connection reuse. The server's own time on each reply is kept in ``timings`` (and,
standalone, appended to ``--timings FILE``), so a benchmark can tell its time from the client's.

Standalone use (manual testing, benchmarks)::

    python -m tests.scripted_server --script replies.json [--port N] [--tokens-per-s X]
        [--no-responses] [--no-websocket] [--warmup] [--store] [--rtt-s S]
        [--tls | --certfile CERT --keyfile KEY] [--timings FILE]

where ``replies.json`` is a JSON list of objects holding :class:`Reply` fields
(``tool_calls`` as a list of ``{"name": ..., "arguments": ..., "id": ...}``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import socketserver
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

EXHAUSTED_TEXT = "(scripted server: no more replies)"
MODEL_ID = "scripted"
RESPONSES_PATH = "/v1/responses"

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
    498: "capacity_exceeded",
}

# `error.code` of a WebSocket `error` event for a scripted failure status (else the error type).
_ERROR_CODES: dict[int, str] = {
    401: "invalid_api_key",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_is_overloaded",
    498: "capacity_exceeded",
}

# how each provider reports its own time on a reply (`Reply.timing`)
TIMING_STYLES = ("llama.cpp", "groq", "cerebras", "")
CAPACITY_MESSAGE = "flex tier capacity exceeded. This is a temporary condition, please try again."

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class ToolCall:
    """One tool call the scripted model emits."""

    name: str
    arguments: str  # JSON text, streamed in pieces of `chunk_chars`
    id: str = ""  # auto "call_<n>" when empty
    custom: bool = False  # a freeform (custom) tool's call: `arguments` is its raw input


@dataclass
class PatchCall:
    """One ``apply_patch_call`` of the built-in apply_patch tool (Responses wires only): a file
    operation, its V4A ``diff`` streamed in pieces of ``chunk_chars``."""

    type: str  # create_file | update_file | delete_file
    path: str
    diff: str = ""  # none for delete_file
    id: str = ""  # the call id; auto "call_<n>" when empty


@dataclass
class Reply:
    """What the server answers to one generating request (chat or responses, HTTP or WS)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    patch_calls: list[PatchCall] = field(default_factory=list)  # Responses only; chat: ignored
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
    close_after: bool = False  # then close: WS close 1001, HTTP `Connection: close`
    # the server's account of its time: "llama.cpp" (`timings`), "groq" (`x_groq.usage` on chat,
    # `usage` times), "cerebras" (`time_info`) or "" (none); None: the wire's default (chat:
    # llama.cpp's, as the real server; Responses: none, as OpenAI)
    timing: str | None = None
    served_tier: str | None = None  # the tier said to serve; None: the one the request named
    # a request naming a service_tier gets Groq's 498 capacity_exceeded, and this reply stays
    # next in the script (for the request again without a tier)
    refuse_tier: bool = False
    # a captured HTTP answer (tests/data/transcripts/*.txt: status line, headers, body), whose
    # body is sent byte for byte (one HTTP chunk per SSE event) instead of a generated one
    transcript: str = ""

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
        kwargs["patch_calls"] = [
            pc if isinstance(pc, PatchCall) else PatchCall(**pc)
            for pc in data.get("patch_calls", [])
        ]
        reply = cls(**kwargs)
        if reply.timing is not None and reply.timing not in TIMING_STYLES:
            raise ValueError(f"unknown timing style {reply.timing!r}: one of {TIMING_STYLES}")
        return reply


@dataclass
class RecordedRequest:
    """One HTTP request (or one WebSocket message, method "WS") as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names (a WS message: those of its upgrade request)
    body: dict | None  # parsed JSON body or None


class _DropConnection(Exception):
    """Raised inside the handler once the socket was closed on purpose."""


class _PeerGone(Exception):
    """The WebSocket peer closed, vanished or broke the protocol; stop serving it."""


@dataclass
class _ApiError:
    """An OpenAI-style request error: HTTP JSON body or WebSocket `error` event."""

    status: int
    code: str
    message: str
    param: str | None = None

    def http_body(self) -> bytes:
        err = {"message": self.message, "type": "invalid_request_error", "param": self.param,
               "code": self.code}
        return _dumps({"error": err}).encode()

    def ws_event(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": "invalid_request_error", "code": self.code,
                               "message": self.message}
        if self.param is not None:
            err["param"] = self.param
        return {"type": "error", "status": self.status, "error": err}


def _split(text: str, size: int) -> list[str]:
    if size <= 0 or len(text) <= size:
        return [text]
    return [text[i : i + size] for i in range(0, len(text), size)]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _is_chat_path(path: str) -> bool:
    return path.split("?", 1)[0].rstrip("/") == "/v1/chat/completions"


def _is_responses_path(path: str) -> bool:
    return path.split("?", 1)[0].rstrip("/") == RESPONSES_PATH


def _completion_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "chatcmpl-" + "".join(secrets.choice(alphabet) for _ in range(32))


def _object_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _error_body(status: int, message: str) -> bytes:
    fallback = "server_error" if status >= 500 else "invalid_request_error"
    err_type = _ERROR_TYPES.get(status, fallback)
    code: int | str = _ERROR_CODES[498] if status == 498 else status  # Groq names it
    return _dumps({"error": {"code": code, "message": message, "type": err_type}}).encode()


def _served_tier(reply: Reply, body: dict) -> str:
    """The tier the answer names: the reply's own, else the one asked for ("" for none)."""
    if reply.served_tier is not None:
        return reply.served_tier
    tier = body.get("service_tier")
    return tier if isinstance(tier, str) else ""


def _seconds(queue_s: float, prompt_s: float, completion_s: float) -> dict[str, float]:
    """Groq's and Cerebras' time fields (seconds)."""
    return {"queue_time": queue_s, "prompt_time": prompt_s, "completion_time": completion_s,
            "total_time": queue_s + prompt_s + completion_s}


def _llama_timings(prompt_n: int, cached: int, prompt_ms: float, predicted_n: int,
                   predicted_ms: float) -> dict[str, float]:
    return {
        "cache_n": cached,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
        "prompt_per_second": prompt_n * 1000.0 / prompt_ms if prompt_ms > 0 else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
        "predicted_per_second": predicted_n * 1000.0 / predicted_ms if predicted_ms > 0 else 0.0,
    }


def _reply_error_event(reply: Reply) -> dict[str, Any]:
    """The WebSocket `error` event for a Reply with status != 200."""
    status = reply.status
    fallback = "server_error" if status >= 500 else "invalid_request_error"
    err_type = _ERROR_TYPES.get(status, fallback)
    err: dict[str, Any] = {
        "type": err_type,
        "code": _ERROR_CODES.get(status, err_type),
        "message": reply.error_message,
    }
    if reply.retry_after is not None:
        err["headers"] = {"retry-after": f"{reply.retry_after:g}"}
    return {"type": "error", "status": status, "error": err}


def _unknown_parameter(name: str) -> _ApiError:
    return _ApiError(400, "unknown_parameter", f"Unknown parameter: '{name}'.", name)


# --------------------------------------------------------------------------- Responses events
def _response_plan(
    owner: ScriptedModelServer,
    reply: Reply,
    *,
    resp_id: str,
    model: str,
    previous_id: str | None,
    input_tokens: int,
    warmup: bool = False,
    service_tier: str = "",
) -> list[tuple[str, Any]]:
    """All events of one streamed response, in order, without sequence numbers.

    Each entry is ``(kind, payload)``: kind "event" (a status/item event), "piece" (one delta of
    generated output, counted for pacing, pings, drops and `output_tokens`), "raw" (a raw text
    payload from ``Reply.raw_events``) or "terminal" (``response.completed``/``.incomplete``).
    """
    created_at = int(time.time())

    def response(status: str, output: list[dict], usage: dict | None) -> dict[str, Any]:
        obj = {
            "id": resp_id,
            "object": "response",
            "created_at": created_at,
            "status": status,
            "model": model,
            "previous_response_id": previous_id,
            "output": output,
            "usage": usage,
        }
        if service_tier:
            obj["service_tier"] = service_tier
        return obj

    started = response("in_progress", [], None)
    plan: list[tuple[str, Any]] = [("event", {"type": "response.created", "response": started})]
    output: list[dict] = []
    pieces = 0
    if not warmup:
        plan.append(("event", {"type": "response.in_progress", "response": started}))
        plan.extend(("raw", payload) for payload in reply.raw_events)
        if reply.text:
            index, item_id = len(output), _object_id("msg")
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            plan.append(("event", {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {"id": item_id, "type": "message", "status": "in_progress",
                         "role": "assistant", "content": []},
            }))
            empty_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            plan.append(("event", {"type": "response.content_part.added", **where,
                                   "part": empty_part}))
            for piece in _split(reply.text, reply.chunk_chars):
                plan.append(("piece", {"type": "response.output_text.delta", **where,
                                       "delta": piece, "logprobs": []}))
                pieces += 1
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": reply.text}
            plan.append(("event", {"type": "response.output_text.done", **where,
                                   "text": reply.text, "logprobs": []}))
            plan.append(("event", {"type": "response.content_part.done", **where, "part": part}))
            item = {"id": item_id, "type": "message", "status": "completed",
                    "role": "assistant", "content": [part]}
            plan.append(("event", {"type": "response.output_item.done", "output_index": index,
                                   "item": item}))
            output.append(item)
        for call in reply.tool_calls:
            index, item_id = len(output), _object_id("ctc" if call.custom else "fc")
            call_id = call.id or owner._next_call_id()
            # a freeform tool's call carries `input` and streams `custom_tool_call_input` events
            kind, field_name, stream = (
                ("custom_tool_call", "input", "response.custom_tool_call_input") if call.custom
                else ("function_call", "arguments", "response.function_call_arguments"))
            item = {"id": item_id, "type": kind, "status": "in_progress",
                    "call_id": call_id, "name": call.name, field_name: ""}
            plan.append(("event", {"type": "response.output_item.added", "output_index": index,
                                   "item": item}))
            where = {"item_id": item_id, "output_index": index}
            for piece in _split(call.arguments, reply.chunk_chars):
                if piece:
                    plan.append(("piece", {"type": f"{stream}.delta", **where, "delta": piece}))
                    pieces += 1
            plan.append(("event", {"type": f"{stream}.done", **where,
                                   "name": call.name, field_name: call.arguments}))
            item = {**item, "status": "completed", field_name: call.arguments}
            plan.append(("event", {"type": "response.output_item.done", "output_index": index,
                                   "item": item}))
            output.append(item)

        for patch in reply.patch_calls:
            pieces += _plan_patch_call(owner, patch, plan, output, reply.chunk_chars)

    cached = 0 if warmup else reply.cached_tokens or 0
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": pieces,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + pieces,
    }
    reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(
        "" if warmup else reply.finish_reason or ""
    )
    final = response("incomplete" if reason else "completed", output, usage)
    if reason:
        final["incomplete_details"] = {"reason": reason}
    kind = "response.incomplete" if reason else "response.completed"
    plan.append(("terminal", {"type": kind, "response": final}))
    return plan


def _plan_patch_call(owner: ScriptedModelServer, patch: PatchCall, plan: list[tuple[str, Any]],
                     output: list[dict], chunk_chars: int) -> int:
    """The events of one ``apply_patch_call`` item (added in progress, the diff's deltas, its
    done event, the completed item), appended to ``plan``; returns the pieces generated."""
    index, item_id = len(output), _object_id("apc")
    operation: dict[str, Any] = {"type": patch.type, "path": patch.path}
    if patch.type != "delete_file":
        operation["diff"] = patch.diff
    item = {"id": item_id, "type": "apply_patch_call", "status": "in_progress",
            "call_id": patch.id or owner._next_call_id(),
            "operation": {**operation, "diff": ""} if "diff" in operation else operation}
    plan.append(("event", {"type": "response.output_item.added", "output_index": index,
                           "item": item}))
    where = {"item_id": item_id, "output_index": index}
    pieces = 0
    if "diff" in operation:
        for piece in _split(patch.diff, chunk_chars):
            if piece:
                plan.append(("piece", {"type": "response.apply_patch_call_operation_diff.delta",
                                       **where, "delta": piece}))
                pieces += 1
        plan.append(("event", {"type": "response.apply_patch_call_operation_diff.done",
                               **where, "diff": patch.diff}))
    item = {**item, "status": "completed", "operation": operation}
    plan.append(("event", {"type": "response.output_item.done", "output_index": index,
                           "item": item}))
    output.append(item)
    return pieces


class _Sink:
    """Where a Responses event stream goes: SSE chunks on HTTP, text messages on a WebSocket."""

    def event(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def raw(self, payload: str) -> None:
        raise NotImplementedError

    def ping(self) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError


def _pace(start: float, sent: int, delay: float) -> None:
    """Sleep until piece `sent` is due on a fixed schedule (no drift from sleep overshoot)."""
    wait = start + sent * delay - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


Finish = Callable[[dict[str, Any], float | None], dict[str, Any]]


def _play(
    owner: ScriptedModelServer, reply: Reply, plan: list[tuple[str, Any]], sink: _Sink,
    finish: Finish | None = None,
) -> None:
    """Send a planned response: sequence numbers, pacing, pings and drops as the Reply says;
    `finish` completes the terminal event once the rest is sent (given the first piece's
    monotonic time)."""
    delay = 1.0 / owner.tokens_per_s if owner.tokens_per_s else 0.0
    drop_at = reply.drop_after_chunks
    seq = sent = 0
    start = time.perf_counter()
    first_at: float | None = None
    for kind, payload in plan:
        if kind == "terminal" and finish is not None:
            payload = finish(payload, first_at)
        if kind == "raw":
            sink.raw(payload)
            continue
        if drop_at is not None and sent >= drop_at and kind in ("piece", "terminal"):
            sink.drop()
        if kind == "piece" and sent and delay:
            _pace(start, sent, delay)
        sink.event({**payload, "sequence_number": seq})
        seq += 1
        if kind == "piece":
            first_at = first_at or time.monotonic()
            sent += 1
            if reply.ping_every > 0 and sent % reply.ping_every == 0:
                sink.ping()
            if drop_at is not None and sent >= drop_at:
                sink.drop()


# --------------------------------------------------------------------------- WebSocket framing
class _WebSocket:
    """Server side of RFC 6455 framing (no extensions) over an accepted, upgraded connection."""

    def __init__(self, rfile: Any, wfile: Any) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self.close_sent = False

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n) if n else b""
        if len(data) < n:
            raise _PeerGone("connection closed mid-frame")
        return data

    def send_frame(self, opcode: int, payload: bytes = b"") -> None:
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, n))
        elif n < 1 << 16:
            header = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
        self.wfile.write(header + payload)

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def close(self, code: int, reason: str = "") -> None:
        if not self.close_sent:
            self.close_sent = True
            self.send_frame(0x8, code.to_bytes(2, "big") + reason.encode()[:120])

    def _fail(self, code: int, reason: str) -> None:
        with contextlib.suppress(OSError):
            self.close(code, reason)
        raise _PeerGone(reason)

    def read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read(2)
        fin, opcode, length = bool(b0 & 0x80), b0 & 0x0F, b1 & 0x7F
        if length == 126:
            length = int.from_bytes(self._read(2), "big")
        elif length == 127:
            length = int.from_bytes(self._read(8), "big")
        if b0 & 0x70:
            self._fail(1002, "reserved bits set")
        if not b1 & 0x80:
            self._fail(1002, "client frames must be masked")
        if opcode >= 0x8 and (not fin or length > 125):
            self._fail(1002, "bad control frame")
        mask = self._read(4)
        data = self._read(length)
        if length:
            key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
            data = (int.from_bytes(data, "big") ^ key).to_bytes(length, "big")
        return fin, opcode, data

    def recv_message(self) -> str | None:
        """The next whole data message (fragments joined); answers pings; None on a close."""
        parts: list[bytes] = []
        message_opcode: int | None = None
        while True:
            fin, opcode, data = self.read_frame()
            if opcode == 0x9:  # ping
                self.send_frame(0xA, data)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode == 0x8:  # close: echo the status code, then the caller ends the TCP
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                if not self.close_sent:
                    self.close_sent = True
                    self.send_frame(0x8, b"" if code is None else code.to_bytes(2, "big"))
                return None
            if opcode == 0x0:
                if message_opcode is None:
                    self._fail(1002, "continuation without a message")
            elif opcode in (0x1, 0x2):
                if message_opcode is not None:
                    self._fail(1002, "new message inside a fragmented one")
                message_opcode = opcode
            else:
                self._fail(1002, f"reserved opcode {opcode}")
            parts.append(data)
            if fin:
                try:
                    return b"".join(parts).decode("utf-8")
                except UnicodeDecodeError:
                    self._fail(1007, "invalid UTF-8")

    def await_close(self, timeout: float) -> None:
        """After our close frame: read until the peer's close frame (or EOF/timeout)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(_PeerGone, OSError, ValueError):
            while time.monotonic() < deadline:
                _fin, opcode, _data = self.read_frame()
                if opcode == 0x8:
                    return


# --------------------------------------------------------------------------- HTTP server
class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: ScriptedModelServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # Without this, Nagle + the client's delayed ACK stall a keep-alive response ~40 ms
        # (headers and body are separate writes): an artefact no latency test should see.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.owner.ssl_context
        if ctx is not None:
            # The TLS handshake runs in the handler thread (see _Handler.handle).
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._connection_opened(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.owner._connection_closed(request)
        super().shutdown_request(request)


class _HTTPSink(_Sink):
    def __init__(self, handler: _Handler) -> None:
        self.handler = handler

    def event(self, obj: dict[str, Any]) -> None:
        self.handler._write_chunk(f"event: {obj['type']}\ndata: {_dumps(obj)}\n\n".encode())

    def raw(self, payload: str) -> None:
        self.handler._write_chunk(f"data: {payload}\n\n".encode())

    def ping(self) -> None:
        self.handler._write_chunk(b": ping\n\n")

    def drop(self) -> None:
        self.handler._drop()


class _WSSink(_Sink):
    def __init__(self, handler: _Handler, ws: _WebSocket) -> None:
        self.handler = handler
        self.ws = ws

    def event(self, obj: dict[str, Any]) -> None:
        self.ws.send_text(_dumps(obj))

    def raw(self, payload: str) -> None:
        self.ws.send_text(payload)

    def ping(self) -> None:
        self.ws.send_frame(0x9, b"ping")

    def drop(self) -> None:
        self.handler._drop()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TCPServer

    def version_string(self) -> str:
        return "scripted-llama.cpp"

    # ----------------------------------------------------------------- plumbing
    def setup(self) -> None:
        super().setup()
        self._fresh_connection = True
        self._received = 0.0  # when the request being answered was read (perf_counter)
        self._delayed_s = 0.0  # emulated network time spent answering it

    def handle(self) -> None:
        conn = self.connection
        if isinstance(conn, ssl.SSLSocket):
            try:
                conn.settimeout(10.0)
                conn.do_handshake()
                conn.settimeout(None)
            except (OSError, ValueError):
                self.close_connection = True
                return
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.owner.log_requests:
            super().log_message(format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._network_delay()
        super().send_response(code, message)

    def _network_delay(self) -> None:
        """Emulated round trip before a response's first byte (and connection set-up)."""
        owner = self.server.owner
        if owner.rtt_s <= 0:
            return
        trips = 1
        if self._fresh_connection:
            self._fresh_connection = False
            trips += 1  # the TCP handshake
            if owner.ssl_context is not None:
                trips += 1  # the TLS 1.3 handshake
        began = time.perf_counter()
        time.sleep(owner.rtt_s * trips)
        self._delayed_s += time.perf_counter() - began

    def parse_request(self) -> bool:
        self._begin()  # its request line has arrived: the server's time on it starts now
        return super().parse_request()

    def _begin(self) -> None:
        self._received = time.perf_counter()
        self._delayed_s = 0.0

    def _generated(self, protocol: str, warmup: bool = False) -> None:
        """The reply's last byte is written: record the server's time on it."""
        self.server.owner._timed({
            "protocol": protocol, "warmup": warmup,
            "server_ms": (time.perf_counter() - self._received - self._delayed_s) * 1000,
            "network_delay_ms": self._delayed_s * 1000,
        })

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

    def _lower_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _record(self, raw: bytes) -> RecordedRequest:
        body: dict | None = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            body = parsed if isinstance(parsed, dict) else None
        headers = self._lower_headers()
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

    def _close_after(self, reply: Reply) -> None:
        if reply.close_after:
            self.send_header("Connection", "close")
            self.close_connection = True

    def _send_reply_error(self, reply: Reply) -> None:
        extra: dict[str, str] = {}
        if reply.retry_after is not None:
            extra["Retry-After"] = f"{reply.retry_after:g}"
        if reply.close_after:
            extra["Connection"] = "close"
            self.close_connection = True
        self._send_json(reply.status, _error_body(reply.status, reply.error_message), extra)

    # ----------------------------------------------------------------- routes
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        owner = self.server.owner
        self._record(self._read_body())
        if "websocket" in self.headers.get("Upgrade", "").lower():
            if _is_responses_path(self.path) and owner.responses and owner.websocket:
                self._serve_websocket()
            else:
                self.close_connection = True
                self._send_json(404, _error_body(404, "File Not Found"), {"Connection": "close"})
        elif self.path.rstrip("/") == "/v1/models":
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
        chat = _is_chat_path(self.path)
        if not chat and not (_is_responses_path(self.path) and self.server.owner.responses):
            self._send_json(404, _error_body(404, f"File Not Found: {self.path}"))
            return
        if rec.body is None:
            self._send_json(400, _error_body(400, "request body is not a JSON object"))
            return
        if rec.body.get("stream") is not True:
            self._send_json(400, _error_body(400, "scripted server only supports stream=true"))
            return
        try:
            if chat:
                reply = self.server.owner._next_reply(rec.body)
                self._serve_reply(reply, rec.body, len(raw), started)
            else:
                self._serve_responses_http(rec.body, len(raw), started)
        except _DropConnection:
            return
        except OSError:  # the client went away (BrokenPipe, ConnectionReset, TLS EOF, ...)
            self.close_connection = True

    # ----------------------------------------------------------------- chat streaming
    def _serve_reply(self, reply: Reply, body: dict, body_len: int, started: float) -> None:
        owner = self.server.owner
        if reply.stall_s > 0:
            time.sleep(reply.stall_s)
        if reply.status != 200:
            self._send_reply_error(reply)
            return
        if reply.transcript:
            self._serve_transcript(reply, "chat")
            return

        model = str(body.get("model") or MODEL_ID)
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        base = {"created": int(time.time()), "id": _completion_id(), "model": model}
        if tier := _served_tier(reply, body):
            base["service_tier"] = tier  # on every chunk, as OpenAI sends it

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
            kind, field_name = ("custom", "input") if call.custom else ("function", "arguments")
            for j, p in enumerate(_split(call.arguments, reply.chunk_chars)):
                if j == 0:
                    frag = {
                        "index": i,
                        "id": call_id,
                        "type": kind,
                        kind: {"name": call.name, field_name: p},
                    }
                else:
                    frag = {"index": i, kind: {field_name: p}}
                pieces.append(event(delta({"tool_calls": [frag]})))

        self.send_response(200)
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self._close_after(reply)
        self.end_headers()

        self._write_chunk(event(delta({"role": "assistant", "content": None})))
        for payload in reply.raw_events:
            self._write_chunk(f"data: {payload}\n\n".encode())
        first_piece_at: float | None = None
        delay = 1.0 / owner.tokens_per_s if owner.tokens_per_s else 0.0
        start = time.perf_counter()
        sent = 0
        for chunk in pieces:
            if reply.drop_after_chunks is not None and sent >= reply.drop_after_chunks:
                self._drop()
            if sent and delay:
                _pace(start, sent, delay)
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
        account = self._account(reply.timing if reply.timing is not None else "llama.cpp",
                                reply.stall_s, started, first_piece_at, done_at,
                                prompt_tokens, cached, sent)
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        self._write_chunk(event(delta({}, finish), **account))
        if include_usage:
            usage: dict[str, Any] = {
                "completion_tokens": sent,
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + sent,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
            extra = dict(account)
            if groq := extra.pop("x_groq", None):  # Groq's usage carries the times itself
                usage.update(groq["usage"])
            # llama.cpp repeats `timings` on this final chunk as well.
            self._write_chunk(event([], usage=usage, **extra))
        self._write_chunk(b"data: [DONE]\n\n")
        self._generated("chat")
        if reply.hold_open_s > 0:
            self.wfile.flush()
            time.sleep(reply.hold_open_s)
        self.wfile.write(b"0\r\n\r\n")

    def _serve_transcript(self, reply: Reply, protocol: str) -> None:
        """A captured stream's body, byte for byte: each SSE event (through its blank line)
        one HTTP chunk, as llama-server writes them."""
        head, _, body = reply.transcript.partition("\r\n\r\n" if "\r\n\r\n" in
                                                   reply.transcript else "\n\n")
        status = int(head.split(None, 2)[1])
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self._close_after(reply)
        self.end_headers()
        for event in body.split("\n\n"):
            if event:
                self._write_chunk(f"{event}\n\n".encode())
        self.wfile.write(b"0\r\n\r\n")
        self._generated(protocol)

    def _account(self, style: str, stall_s: float, started: float, first_at: float,
                 done_at: float, prompt_tokens: int, cached: int, generated: int
                 ) -> dict[str, Any]:
        """The fields a provider of `style` adds to a reply's last chunk (monotonic times);
        kept in the owner's `served_timings`."""
        if not style:
            return {}
        prompt_n = max(prompt_tokens - cached, 0)
        if style == "llama.cpp":
            account: dict[str, Any] = {"timings": _llama_timings(
                prompt_n, cached, (first_at - started) * 1000.0, generated,
                (done_at - first_at) * 1000.0)}
        else:
            # the stall before the reply is the server's queue; the emulated network is not
            # server time
            queue_s = min(stall_s, max(first_at - started, 0.0))
            prompt_s = max(first_at - started - queue_s - self._delayed_s, 0.0)
            times = _seconds(queue_s, prompt_s, max(done_at - first_at, 0.0))
            account = ({"x_groq": {"id": _object_id("req"), "usage": times}} if style == "groq"
                       else {"time_info": {**times, "created": time.time()}})
        self.server.owner._served_timing(account)
        return account

    def _responses_finish(self, reply: Reply, started: float, warmup: bool) -> Finish:
        """The terminal event with the reply's account of the server's time (none by default
        on Responses): llama.cpp's `timings` beside the response (as llama-server sends it),
        Groq's times in the response's `usage`, Cerebras' `time_info` in the response."""
        style = "" if warmup or reply.timing is None else reply.timing

        def finish(payload: dict[str, Any], first_at: float | None) -> dict[str, Any]:
            if not style:
                return payload
            done_at = time.monotonic()
            response = payload["response"]
            usage = response["usage"]
            account = self._account(style, reply.stall_s, started, first_at or done_at, done_at,
                                    usage["input_tokens"],
                                    usage["input_tokens_details"]["cached_tokens"],
                                    usage["output_tokens"])
            if style == "llama.cpp":
                return {**payload, **account}
            if style == "groq":
                response = {**response, "usage": {**usage, **account["x_groq"]["usage"]}}
            else:
                response = {**response, **account}
            return {**payload, "response": response}

        return finish

    # ----------------------------------------------------------------- Responses over HTTP
    def _serve_responses_http(self, body: dict, body_len: int, started: float) -> None:
        owner = self.server.owner
        error = owner._check_create(body, websocket=False, latest=None)
        if error is not None:
            self._send_json(error.status, error.http_body())
            return
        warmup = body.get("generate") is False
        reply = Reply() if warmup else owner._next_reply(body)
        if reply.stall_s > 0:
            time.sleep(reply.stall_s)
        if reply.status != 200:
            self._send_reply_error(reply)
            return
        if reply.transcript:
            self._serve_transcript(reply, "responses-http")
            return
        resp_id = _object_id("resp")
        plan = _response_plan(
            owner, reply, resp_id=resp_id, model=str(body.get("model") or MODEL_ID),
            previous_id=body.get("previous_response_id"), input_tokens=body_len // 4,
            warmup=warmup, service_tier=_served_tier(reply, body),
        )
        self.send_response(200)
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self._close_after(reply)
        self.end_headers()
        _play(owner, reply, plan, _HTTPSink(self), self._responses_finish(reply, started, warmup))
        owner._response_completed(resp_id)
        if reply.hold_open_s > 0:
            self.wfile.flush()
            time.sleep(reply.hold_open_s)
        self.wfile.write(b"0\r\n\r\n")
        self._generated("responses-http", warmup)

    # ----------------------------------------------------------------- Responses over WebSocket
    def _serve_websocket(self) -> None:
        owner = self.server.owner
        self.close_connection = True
        key = self.headers.get("Sec-WebSocket-Key", "").strip()
        if self.headers.get("Sec-WebSocket-Version", "").strip() != "13":
            self._send_json(426, _error_body(426, "unsupported WebSocket version"),
                            {"Sec-WebSocket-Version": "13", "Connection": "close"})
            return
        if not key or "upgrade" not in self.headers.get("Connection", "").lower():
            self._send_json(400, _error_body(400, "bad WebSocket upgrade request"),
                            {"Connection": "close"})
            return
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        owner._websocket_opened()
        ws = _WebSocket(self.rfile, self.wfile)
        headers = self._lower_headers()
        latest: str | None = None  # the connection-local continuation cache
        try:
            while True:
                text = ws.recv_message()
                if text is None:
                    return
                latest, close = self._ws_message(ws, text, headers, latest)
                if close:
                    ws.close(1001, "server going away")
                    ws.await_close(timeout=2.0)
                    return
        except (_DropConnection, _PeerGone, OSError, ValueError):
            return

    def _ws_message(
        self, ws: _WebSocket, text: str, headers: dict[str, str], latest: str | None
    ) -> tuple[str | None, bool]:
        """Answer one client message; returns (the connection's latest response id, close?)."""
        self._begin()
        started = time.monotonic()
        owner = self.server.owner
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        owner._record(RecordedRequest(method="WS", path=self.path, headers=dict(headers),
                                      body=body))
        if body is None:
            error: _ApiError | None = _ApiError(400, "invalid_json", "Not a JSON object.")
        elif body.get("type") != "response.create":
            kind = body.get("type")
            error = _ApiError(400, "invalid_event_type", f"Unsupported event type: {kind!r}.",
                              "type")
        else:
            error = owner._check_create(body, websocket=True, latest=latest)
        if error is not None or body is None:
            assert error is not None
            self._network_delay()
            ws.send_text(_dumps(error.ws_event()))
            return latest, False

        warmup = body.get("generate") is False
        previous_id = body.get("previous_response_id")
        reply = Reply() if warmup else owner._next_reply(body)
        if reply.stall_s > 0:
            time.sleep(reply.stall_s)
        self._network_delay()
        if reply.status != 200:
            ws.send_text(_dumps(_reply_error_event(reply)))
            # A failed continuation evicts the id it continued from (as the real API does).
            return (None if previous_id and previous_id == latest else latest), reply.close_after
        resp_id = _object_id("resp")
        plan = _response_plan(
            owner, reply, resp_id=resp_id, model=str(body.get("model") or MODEL_ID),
            previous_id=previous_id, input_tokens=len(text.encode()) // 4, warmup=warmup,
            service_tier=_served_tier(reply, body),
        )
        _play(owner, reply, plan, _WSSink(self, ws), self._responses_finish(reply, started, warmup))
        owner._response_completed(resp_id)
        self._generated("responses-ws", warmup)
        return resp_id, reply.close_after


class ScriptedModelServer:
    """A threaded local HTTP/WebSocket server that replays scripted model replies.

    Keyword switches (defaults keep the plain Chat Completions behaviour plus stateless
    Responses over HTTP and WebSocket):

    * ``responses=False``: ``/v1/responses`` answers 404 (HTTP and WebSocket upgrade alike).
    * ``websocket=False``: the WebSocket upgrade answers a plain 404; HTTP Responses still work.
    * ``warmup=True``: ``response.create`` with ``"generate": false`` is a warm-up (no reply
      consumed); without it any ``generate`` field is an ``unknown_parameter`` error.
    * ``store=True``: ``previous_response_id`` may name any response this server completed on
      any connection (HTTP, or a WebSocket beyond its connection-local latest one); without it
      HTTP rejects every ``previous_response_id`` with ``previous_response_not_found``.
    * ``rtt_s``: emulated network round trip: each HTTP response and each WebSocket response
      stream waits ``rtt_s`` before its first byte; a new connection's first response waits one
      more (TCP handshake) and, with TLS, one more again (TLS 1.3 handshake).
    * ``ssl_context``: serve TLS with this server-side context (``base_url`` becomes https).
    * ``builtin_patch=False``: a Responses request listing the built-in ``{"type":
      "apply_patch"}`` tool is refused (400 ``invalid_value``), as by a server without it.
    """

    def __init__(
        self,
        replies: list[Reply],
        *,
        tokens_per_s: float | None = None,
        responses: bool = True,
        websocket: bool = True,
        warmup: bool = False,
        store: bool = False,
        rtt_s: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
        builtin_patch: bool = True,
    ) -> None:
        self.replies: list[Reply] = list(replies)
        self.builtin_patch = builtin_patch
        self.tokens_per_s = tokens_per_s
        self.responses = responses
        self.websocket = websocket
        self.warmup = warmup
        self.store = store
        self.rtt_s = rtt_s
        self.ssl_context = ssl_context
        self.requests: list[RecordedRequest] = []
        # per reply served: the server's own time on it (request read -> last byte written,
        # without the emulated network delay), for benchmarks to subtract from a turn's wall time
        self.timings: list[dict[str, Any]] = []
        self.timings_file: Path | None = None
        # per reply that carried one: the provider-shaped account of its time it was sent with
        # ({"timings": ...}, {"x_groq": ...}, {"time_info": ...}), for tests to compare
        self.served_timings: list[dict[str, Any]] = []
        self.connections: int = 0
        self.ws_connections: int = 0
        self.log_requests = False
        self._lock = threading.Lock()
        self._reply_index = 0
        self._call_counter = 0
        self._completed_ids: set[str] = set()
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
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        """The Responses WebSocket endpoint (ws:// or wss://)."""
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://127.0.0.1:{self.port}{RESPONSES_PATH}"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and _is_chat_path(r.path)]

    @property
    def responses_requests(self) -> list[RecordedRequest]:
        """HTTP ``POST /v1/responses`` and WebSocket ``response.create`` messages, in order."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (r.method == "POST" and _is_responses_path(r.path))
                or (r.method == "WS" and r.body is not None
                    and r.body.get("type") == "response.create")
            ]

    @property
    def replies_left(self) -> int:
        with self._lock:
            return len(self.replies) - self._reply_index

    # ----------------------------------------------------------------- handler hooks
    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _next_reply(self, body: dict | None = None) -> Reply:
        with self._lock:
            if self._reply_index < len(self.replies):
                reply = self.replies[self._reply_index]
                if reply.refuse_tier and body is not None and body.get("service_tier"):
                    return Reply(status=498, error_message=CAPACITY_MESSAGE)
                self._reply_index += 1
                return reply
        return Reply(text=EXHAUSTED_TEXT)

    def _served_timing(self, sent: dict[str, Any]) -> None:
        with self._lock:
            self.served_timings.append(sent)

    def _timed(self, timing: dict[str, Any]) -> None:
        with self._lock:
            self.timings.append(timing)
            if self.timings_file is not None:
                with self.timings_file.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(timing) + "\n")

    def _next_call_id(self) -> str:
        with self._lock:
            self._call_counter += 1
            return f"call_{self._call_counter}"

    def _response_completed(self, resp_id: str) -> None:
        with self._lock:
            self._completed_ids.add(resp_id)

    def _check_create(self, body: dict, *, websocket: bool, latest: str | None) -> _ApiError | None:
        """Validate a Responses create request; None when it may go ahead."""
        if websocket and "stream" in body:
            return _unknown_parameter("stream")
        if "generate" in body and not self.warmup:
            return _unknown_parameter("generate")
        tools = body.get("tools") or []
        if not self.builtin_patch and any(t.get("type") == "apply_patch" for t in tools):
            return _ApiError(400, "invalid_value", "Unsupported tool type: 'apply_patch'.",
                             "tools")
        previous = body.get("previous_response_id")
        if previous is not None:
            with self._lock:
                stored = self.store and previous in self._completed_ids
            if not stored and not (websocket and previous == latest):
                message = f"Previous response with id '{previous}' not found."
                return _ApiError(400, "previous_response_not_found", message,
                                 "previous_response_id")
        return None

    def _connection_opened(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._open_sockets.add(sock)

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open_sockets.discard(sock)

    def _websocket_opened(self) -> None:
        with self._lock:
            self.ws_connections += 1


# --------------------------------------------------------------------------- TLS helpers
def make_self_signed_cert(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a P-256 self-signed cert for IP 127.0.0.1 (1 day) with the ``openssl`` CLI.

    Returns ``(cert_path, key_path)`` (PEM).  The cert doubles as the CA file a client verifies
    the server with.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command-line tool is not installed")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cert, key = out / "scripted-cert.pem", out / "scripted-key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def server_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """A server-side TLS context for ``ScriptedModelServer(ssl_context=...)``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def self_signed_context(directory: str | os.PathLike[str]) -> tuple[ssl.SSLContext, Path]:
    """Make a self-signed cert in ``directory``; returns (server context, cert path for clients)."""
    cert, key = make_self_signed_cert(directory)
    return server_context(cert, key), cert


# --------------------------------------------------------------------------- CLI
def load_script(path: str) -> list[Reply]:
    """Read a JSON list of Reply field dicts."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise ValueError("script must be a JSON list of reply objects")
    return [Reply.from_dict(item) for item in data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve scripted model replies (chat/responses).")
    parser.add_argument("--script", help="JSON list of Reply objects (default: none)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: ephemeral)")
    parser.add_argument("--tokens-per-s", type=float, default=None, help="pace streamed chunks")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    parser.add_argument("--no-responses", action="store_true", help="404 for /v1/responses")
    parser.add_argument("--no-websocket", action="store_true", help="404 for WebSocket upgrades")
    parser.add_argument("--warmup", action="store_true", help='accept "generate": false warm-ups')
    parser.add_argument("--store", action="store_true",
                        help="accept previous_response_id of any completed response")
    parser.add_argument("--rtt-s", type=float, default=0.0, help="emulated network round trip")
    parser.add_argument("--timings", help="append the server's time on each reply to this file "
                                          "(JSON lines)")
    parser.add_argument("--tls", action="store_true",
                        help="serve https/wss with a fresh self-signed cert (path on stderr)")
    parser.add_argument("--certfile", help="serve TLS with this PEM cert (with --keyfile)")
    parser.add_argument("--keyfile", help="PEM private key for --certfile")
    args = parser.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together")

    replies = load_script(args.script) if args.script else []
    ssl_context: ssl.SSLContext | None = None
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    if args.certfile:
        ssl_context = server_context(args.certfile, args.keyfile)
    elif args.tls:
        tmpdir = tempfile.TemporaryDirectory(prefix="scripted-tls-")
        ssl_context, cert = self_signed_context(tmpdir.name)
        print(f"self-signed cert: {cert}", file=sys.stderr, flush=True)
    server = ScriptedModelServer(
        replies,
        tokens_per_s=args.tokens_per_s,
        responses=not args.no_responses,
        websocket=not args.no_websocket,
        warmup=args.warmup,
        store=args.store,
        rtt_s=args.rtt_s,
        ssl_context=ssl_context,
    )
    server.log_requests = not args.quiet
    server.timings_file = Path(args.timings) if args.timings else None
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
        if tmpdir is not None:
            tmpdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
