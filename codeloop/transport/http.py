"""What every HTTP + SSE transport shares: one keep-alive httpx client, error mapping, wire timing.

Owns the pooled connection (opened at start-up, idle expiry of minutes so a long test run costs
no reconnect), the timing taken at the socket through httpx trace hooks (connect, upload, first
byte), the SSE read loop (drained to EOF after the reply so the connection is reused, but never
waiting long on a server that keeps the body open), and turning HTTP errors into TransportError.
httpx itself is imported by `connect`, on a worker thread: not before the TUI's first paint,
which it would delay by ~56 ms (of the ~410 ms codeloop's imports take; `python -X importtime`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from codeloop.core.events import Event, ModelFirstByte
from codeloop.transport.base import TransportError
from codeloop.transport.reply import Reply, ms
from codeloop.transport.sse import SSEParser

if TYPE_CHECKING:
    import httpx

KEEPALIVE_EXPIRY_S = 600.0
DRAIN_S = 2.0
_BILLING_CODES = ("insufficient_quota", "billing", "credit", "spend")


def parse_retry_after(headers: httpx.Headers | dict[str, str]) -> float | None:
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


def classify_error(status: int, code: str, message: str, headers: httpx.Headers | dict[str, str]
                   ) -> TransportError:
    """One rule for every transport: 408/409/429/5xx retry, billing and other 4xx fail at once."""
    billing = status == 429 and any(word in (code + message).lower() for word in _BILLING_CODES)
    retryable = (status in (408, 409, 429) or status >= 500) and not billing
    if headers.get("x-should-retry") in ("true", "false"):
        retryable = headers["x-should-retry"] == "true" and not billing
    label = f"HTTP {status}" + (f" ({code})" if code else "")
    return TransportError(f"{label}: {message}", retryable=retryable, status=status,
                          retry_after=parse_retry_after(headers), code=code)


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
    return classify_error(status, code, message, headers)


class WireClock:
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
        return ms(start, end)

    def request_sent(self, fallback: float) -> float:
        return self.marks.get("http11.send_request_headers.started", fallback)

    def upload_ms(self) -> float:
        start = self.marks.get("http11.send_request_headers.started")
        end = self.marks.get("http11.send_request_body.complete")
        return ms(start, end) if start is not None and end is not None else 0.0


class StreamParser(Protocol):
    """A protocol's reply: fed each SSE data payload, it returns the events it completes."""

    reply: Reply

    def on_data(self, data: str, at: float) -> list[Event]: ...


class HttpStreamClient:
    """The shared base of the HTTP transports: one pooled httpx client for the whole session."""

    def __init__(self, base_url: str, model: str, api_key: str | None,
                 max_output_tokens: int, request_timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_output_tokens = max_output_tokens
        self._api_key = api_key
        self._timeout_s = request_timeout_s
        self._client: httpx.AsyncClient | None = None  # made by the first use

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            httpx = _httpx()
            self._client = httpx.AsyncClient(
                headers={"Authorization": f"Bearer {self._api_key}"} if self._api_key else {},
                # a plain-HTTP endpoint never makes a TLS connection (no redirects are
                # followed): not loading the CA bundle saves ~20 ms of start-up
                verify=self.base_url.startswith("https:"),
                timeout=httpx.Timeout(self._timeout_s, connect=10.0),
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=2,
                                    keepalive_expiry=KEEPALIVE_EXPIRY_S),
            )
        return self._client

    async def connect(self) -> None:
        """Open the connection now (a cheap GET), so the first turn does not pay for it."""
        # the import and the client (its TLS context: ~20 ms), beside the event loop: a TUI
        # stays live meanwhile
        await asyncio.to_thread(lambda: self._http)
        try:
            response = await self._http.get(f"{self.base_url}/models")
            await response.aread()
        except _httpx().HTTPError:
            pass

    async def warm_up(self, instructions: str, tools: list[dict[str, Any]]) -> str:
        return ""

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def post_stream(self, turn: int, path: str, body: bytes, parser: StreamParser
                          ) -> AsyncIterator[Event]:
        """POST `body`, then yield ModelFirstByte, the parser's events and the closing events."""
        clock = WireClock()
        started = time.perf_counter()
        httpx = _httpx()
        request = self._http.build_request(
            "POST", f"{self.base_url}{path}", content=body,
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            extensions={"trace": clock},
        )
        reply = parser.reply
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {self.base_url}: {exc!r}", retryable=True) from None
        try:
            headers_at = time.perf_counter()
            if response.status_code != 200:
                raise error_from_response(response.status_code, await response.aread(),
                                          response.headers)
            sent = clock.request_sent(started)
            connect_ms = clock.connect_ms()
            yield ModelFirstByte(turn=turn, status=200, request_bytes=len(body),
                                 connect_ms=connect_ms, reused=connect_ms == 0.0,
                                 ttfb_ms=ms(sent, headers_at), upload_ms=clock.upload_ms())
            sse = SSEParser()
            chunks = response.aiter_raw()
            try:
                while True:
                    try:
                        # once the reply is complete, drain to EOF (so the connection is
                        # reused) but never hang on a server that keeps the body open
                        chunk = await (asyncio.wait_for(anext(chunks), DRAIN_S)
                                       if reply.complete else anext(chunks))
                    except StopAsyncIteration:
                        break
                    at = time.perf_counter()
                    for _, data in sse.feed(chunk):
                        for event in parser.on_data(data, at):
                            yield event  # the consumer dispatches it before we resume
                    reply.processing_s += time.perf_counter() - at
                for _, data in sse.flush():
                    for event in parser.on_data(data, time.perf_counter()):
                        yield event
            except (httpx.HTTPError, TimeoutError) as exc:
                if not reply.complete:
                    raise TransportError(
                        f"the connection to {self.base_url} broke mid-stream "
                        f"({type(exc).__name__}: {exc}) after {reply.pieces} pieces of the reply",
                        retryable=True, shown=reply.pieces > 0) from None
            if not reply.complete:
                raise TransportError(
                    f"the stream from {self.base_url} ended before the reply was complete "
                    f"after {reply.pieces} pieces", retryable=True, shown=reply.pieces > 0)
            for event in reply.finish(sent):
                yield event
        finally:
            await response.aclose()


def _httpx() -> ModuleType:
    """httpx, imported on first use (then it is sys.modules' own)."""
    # httpx's package imports its command-line tool where click and rich are installed (rich
    # comes with textual): ~55 ms of its ~140 ms import here, for a tool codeloop never runs.
    # A None in sys.modules makes that import fail, which httpx expects (it then defines a
    # `main` that says how to install the tool)
    sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]
    return import_module("httpx")
