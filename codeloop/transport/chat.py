"""Chat Completions over HTTP + SSE on one keep-alive httpx connection.

Owns the request body, the stream's parsing into codeloop events and the wire timing (httpx trace
hooks, perf_counter at the socket). Every stream is read to EOF so the connection goes back to the
pool; the pool keeps idle connections for minutes so a long test run does not cost a reconnect.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from codeloop.events import Event, ModelDone, ModelFirstByte, ModelTextDelta, ModelToolCall
from codeloop.transport import TransportError
from codeloop.transport.sse import SSEParser

KEEPALIVE_EXPIRY_S = 600.0
DRAIN_S = 2.0
_MAX_COMPLETION_HOSTS = ("api.openai.com", "api.cerebras.ai", "api.groq.com", "openrouter.ai")
_BILLING_CODES = ("insufficient_quota", "billing", "credit", "spend")


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait as the server asked (`retry-after-ms`, or `retry-after` secs/HTTP date)."""
    if value := headers.get("retry-after-ms"):
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def error_from_response(status: int, body: bytes, headers: httpx.Headers) -> TransportError:
    """Turn a non-200 answer into a TransportError with the server's own message."""
    message = body.decode("utf-8", "replace").strip()[:500]
    code = ""
    try:
        err = json.loads(body).get("error", {})
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code = str(err.get("code") or err.get("type") or "")
        elif isinstance(err, str):
            message = err
    except (ValueError, AttributeError):
        pass
    billing = status == 429 and any(word in (code + message).lower() for word in _BILLING_CODES)
    retryable = (status in (408, 409, 429) or status >= 500) and not billing
    if headers.get("x-should-retry") in ("true", "false"):
        retryable = headers["x-should-retry"] == "true" and not billing
    label = f"HTTP {status}" + (f" ({code})" if code else "")
    return TransportError(f"{label}: {message}", retryable=retryable, status=status,
                          retry_after=parse_retry_after(headers))


class _WireClock:
    """Collects httpx trace hook timestamps for one request."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.marks.setdefault(name, time.perf_counter())

    def connect_ms(self) -> float:
        start = self.marks.get("connection.connect_tcp.started")
        if start is None:
            return 0.0
        end = self.marks.get("connection.start_tls.complete",
                             self.marks.get("connection.connect_tcp.complete", start))
        return _ms(start, end)

    def request_sent(self, fallback: float) -> float:
        return self.marks.get("http11.send_request_headers.started", fallback)


class ChatCompletionsClient:
    """A `ModelClient` for any OpenAI-compatible `/chat/completions` endpoint."""

    name = "chat"

    def __init__(self, base_url: str, model: str, api_key: str | None,
                 max_output_tokens: int, request_timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_output_tokens = max_output_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(request_timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2,
                                keepalive_expiry=KEEPALIVE_EXPIRY_S),
        )
        host = urlsplit(self.base_url).hostname or ""
        self._max_tokens_key = ("max_completion_tokens"
                                if host.endswith(_MAX_COMPLETION_HOSTS) else "max_tokens")

    async def connect(self) -> None:
        try:
            response = await self._http.get(f"{self.base_url}/models")
            await response.aread()
        except httpx.HTTPError:
            pass

    async def aclose(self) -> None:
        await self._http.aclose()

    def request_body(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            self._max_tokens_key: self.max_output_tokens,
        }
        if tools:
            body["tools"] = tools
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    async def stream(self, turn: int, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncIterator[Event]:
        clock = _WireClock()
        started = time.perf_counter()
        body = self.request_body(messages, tools)
        request = self._http.build_request(
            "POST", f"{self.base_url}/chat/completions",
            content=body,
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            extensions={"trace": clock},
        )
        reply = _ReplyState()
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {self.base_url}: {exc!r}", retryable=True) from None
        try:
            headers_at = time.perf_counter()
            if response.status_code != 200:
                body = await response.aread()
                raise error_from_response(response.status_code, body, response.headers)
            sent = clock.request_sent(started)
            yield ModelFirstByte(turn=turn, status=200, request_bytes=len(body),
                                 connect_ms=clock.connect_ms(),
                                 reused=clock.connect_ms() == 0.0, ttfb_ms=_ms(sent, headers_at))
            parser = SSEParser()
            chunks = response.aiter_raw()
            try:
                while True:
                    try:
                        # once [DONE] arrived, drain to EOF (so the connection is reused) but
                        # never hang on a server that keeps the body open
                        chunk = await (asyncio.wait_for(anext(chunks), DRAIN_S) if reply.done
                                       else anext(chunks))
                    except StopAsyncIteration:
                        break
                    for _, data in parser.feed(chunk):
                        for event in reply.on_data(turn, data):
                            yield event
                for _, data in parser.flush():
                    for event in reply.on_data(turn, data):
                        yield event
            except (httpx.HTTPError, TimeoutError) as exc:
                if reply.complete:
                    for event in reply.finish(turn, sent):
                        yield event
                    return
                raise TransportError(
                    f"the connection to {self.base_url} broke mid-stream ({type(exc).__name__}: "
                    f"{exc}) after {reply.pieces} pieces of the reply",
                    retryable=True, shown=reply.pieces > 0) from None
            if not reply.complete:
                raise TransportError(
                    f"the stream from {self.base_url} ended before the reply was complete "
                    f"(no finish_reason / [DONE]) after {reply.pieces} pieces",
                    retryable=True, shown=reply.pieces > 0)
            for event in reply.finish(turn, sent):
                yield event
        finally:
            await response.aclose()


class _ReplyState:
    """Accumulates one streamed Chat Completions reply."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason = ""
        self.usage: dict[str, int] = {}
        self.done = False
        self.pieces = 0
        self.first_token_at: float | None = None
        self.last_token_at = 0.0

    @property
    def complete(self) -> bool:
        return self.done or bool(self.finish_reason)

    def _token(self) -> None:
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now
        self.pieces += 1

    def on_data(self, turn: int, data: str) -> list[Event]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise TransportError(f"the server sent a malformed chunk in the stream: "
                                 f"{data[:200]!r}", retryable=True, shown=self.pieces > 0)
        if error := chunk.get("error"):
            message = error.get("message", error) if isinstance(error, dict) else error
            raise TransportError(f"the server reported an error mid-stream: {message}",
                                 retryable=False, shown=self.pieces > 0)
        if usage := chunk.get("usage"):
            details = usage.get("prompt_tokens_details") or {}
            self.usage = {
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
                "cached_tokens": int(details.get("cached_tokens") or 0),
            }
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                self._token()
                self.text.append(content)
                events.append(ModelTextDelta(turn=turn, text=content))
            if delta.get("reasoning") or delta.get("reasoning_content"):
                self._token()
            for call in delta.get("tool_calls") or ():
                self._token()
                slot = self.calls.setdefault(int(call.get("index") or 0),
                                             {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["name"] = function.get("name") or slot["name"]
                slot["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def finish(self, turn: int, sent: float) -> list[Event]:
        end = time.perf_counter()
        first = self.first_token_at or end
        events: list[Event] = [
            ModelToolCall(turn=turn, call_id=call["id"] or f"call_{turn}_{index}",
                          name=call["name"], arguments=call["arguments"])
            for index, call in sorted(self.calls.items())
        ]
        tokens = self.usage.get("completion_tokens") or self.pieces
        decode_s = end - first
        events.append(ModelDone(
            turn=turn, finish_reason=self.finish_reason or "stop", text="".join(self.text),
            usage=self.usage, ttft_ms=_ms(sent, first), decode_ms=_ms(first, end),
            tokens_per_s=round(tokens / decode_s, 1) if decode_s > 0 else 0.0,
        ))
        return events
