"""The Responses API over one persistent WebSocket (`{base_url}/responses`, wss for https).

Owns the socket's life: opened at start-up (before the user finishes typing), kept with pings,
rotated while idle before the provider's 60-minute limit, re-opened after a drop (or after a
request is abandoned: nothing of it may reach a later one) with the full context re-sent, and —
when it cannot be opened — an immediate fall-back to Responses over HTTP for that turn (never a
storm of retries), with another try at the socket at a later idle moment.
Each turn sends only the new input items plus `previous_response_id`; anything that breaks the
continuation resends the full input once, transparently, with an event that says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from codeloop.core import encoded
from codeloop.core.conversation import Instructions, Item
from codeloop.core.events import Event, ModelFirstByte, TransportChange
from codeloop.core.kinds import TransportChangeKind
from codeloop.transport.base import TransportError
from codeloop.transport.reply import ms
from codeloop.transport.responses import (
    BUILTIN_TOOLS,
    ResponsesParser,
    ResponsesRequest,
    prepare,
)
from codeloop.transport.responses_http import ResponsesHttpClient

ROTATE_AFTER_S = 55 * 60
RETRY_SOCKET_AFTER_S = 30.0
PING_INTERVAL_S = 20.0
# an idle socket's close handshake is one round trip; a server that does not answer it must not
# hold up the exit for websockets' default 10 s
CLOSE_TIMEOUT_S = 1.0
_RECONNECT_CODES = ("connection_closed", "websocket_connection_limit_reached")


def websocket_url(base_url: str) -> str:
    url = base_url.rstrip("/") + "/responses"
    return "wss://" + url[8:] if url.startswith("https://") else "ws://" + url.removeprefix(
        "http://")


class ResponsesWebSocketClient:
    """A `ModelClient` for `/responses` over a persistent WebSocket, HTTP as its fall-back."""

    name = "responses-ws"
    builtin_tools = BUILTIN_TOOLS

    def __init__(self, base_url: str, model: str, api_key: str | None,
                 max_output_tokens: int, request_timeout_s: float, store: bool = False,
                 cache_key: str = "", service_tier: str = "") -> None:
        self.url = websocket_url(base_url)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.request = ResponsesRequest(model, max_output_tokens, store, cache_key,
                                        service_tier)
        self.http = ResponsesHttpClient(base_url, model, api_key, max_output_tokens,
                                        request_timeout_s, store, cache_key, service_tier)
        self.timeout = request_timeout_s
        self.retry_socket_after_s = RETRY_SOCKET_AFTER_S
        self.rotate_after_s = ROTATE_AFTER_S
        self.warm_up_supported = True
        self._ws: ClientConnection | None = None
        self._opened_at = 0.0
        self._failed_at: float | None = None
        self._failure = ""
        self._fresh_connect_ms = 0.0
        self._notices: list[TransportChange] = []
        self._reopening: asyncio.Task[None] | None = None

    @property
    def model(self) -> str:
        return self.request.model

    @model.setter
    def model(self, name: str) -> None:
        self.request.model = self.http.model = self.http.request.model = name

    @property
    def service_tier(self) -> str:
        return self.request.service_tier

    @service_tier.setter
    def service_tier(self, tier: str) -> None:
        self.request.service_tier = self.http.service_tier = tier

    # the socket

    async def _open(self) -> bool:
        started = time.perf_counter()
        try:
            self._ws = await connect(self.url, additional_headers=self.headers, compression=None,
                                     ping_interval=PING_INTERVAL_S, ping_timeout=PING_INTERVAL_S,
                                     close_timeout=CLOSE_TIMEOUT_S, max_size=None,
                                     open_timeout=10)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._ws, self._failed_at = None, time.monotonic()
            self._failure = f"{type(exc).__name__}: {exc}"
            return False
        self._fresh_connect_ms = ms(started, time.perf_counter())
        self._opened_at, self._failed_at = time.monotonic(), None
        self.request.continuation.reset()  # a new socket holds no previous response
        return True

    def _usable(self) -> bool:
        return self._ws is not None and self._ws.state.name == "OPEN"

    def _abandon(self, ws: ClientConnection) -> None:
        """Drop a socket whose request stopped before its last event (timed out, cancelled by
        Ctrl-C, or unreadable): the rest of that response must never be read as the reply to a
        later request.

        Matching events to requests is not possible here: there is no cancel event, and an
        `error` sent before `response.created` names no response, so a retry or the next turn
        on this socket would be paired with the abandoned request's late events or error. So
        the socket goes, and the next request opens a fresh one with the full input (the
        continuation cache was local to this socket anyway). It is aborted, not closed: a
        server busy with that response may answer a close frame only once it is done (Ctrl-C
        used to wait out websockets' whole close timeout), and dropping the connection is how a
        WebSocket response is stopped.
        """
        if self._ws is ws:
            self._ws = None
            self.request.continuation.reset()
        ws.transport.abort()

    async def connect(self) -> None:
        """Pre-connect at start-up; if the socket cannot open, say so at the first turn."""
        if await self._open():
            self._fresh_connect_ms = 0.0  # paid before any turn, not by the first one
        else:
            self._notices.append(self._fallback_notice())
            await self.http.connect()

    def _fallback_notice(self) -> TransportChange:
        return TransportChange(kind=TransportChangeKind.FALLBACK, transport=self.http.name,
                               message=f"the WebSocket could not be opened ({self._failure}); "
                                       f"using HTTP, the socket is tried again later")

    async def _reopen_later(self) -> None:
        await asyncio.sleep(self.retry_socket_after_s)
        if not self._usable() and await self._open():
            self._notices.append(TransportChange(kind=TransportChangeKind.RESTORE,
                                                 transport=self.name,
                                                 message="the WebSocket is open again"))

    def _schedule_reopen(self) -> None:
        if self._reopening is None or self._reopening.done():
            self._reopening = asyncio.create_task(self._reopen_later())

    async def warm_up(self, instructions: str, tools: list[dict[str, Any]]) -> str:
        """Send the stable prefix with `generate: false` so the first turn finds it cached."""
        if not self._usable() or not self.warm_up_supported:
            return ""
        fields, history, fixed = self.request.build([Instructions(instructions)], tools,
                                                    delta=False)
        parser = ResponsesParser(0)
        started = time.perf_counter()
        ws = self._ws
        assert ws is not None
        try:
            await ws.send(encoded.dumps({"type": "response.create", **fields,
                                         "generate": False}))
            while not parser.reply.complete:
                parser.on_data(await asyncio.wait_for(ws.recv(), 10), time.perf_counter())
        except TransportError as exc:
            self.warm_up_supported = False
            return f"warm-up not supported by the server ({exc}); continuing without it"
        except (ConnectionClosed, TimeoutError) as exc:
            self.warm_up_supported = False
            return f"warm-up failed ({type(exc).__name__}); continuing without it"
        finally:
            if not parser.ended:
                self._abandon(ws)
        self.request.continuation.completed(parser.response_id, history, fixed,
                                            reply_in_history=False)
        return (f"warmed up: instructions and tools sent ahead with generate=false "
                f"({ms(started, time.perf_counter()):.1f} ms)")

    # one turn

    def prepare(self, items: list[Item]) -> None:
        prepare(items)

    async def stream(self, turn: int, items: list[Item],
                     tools: list[dict[str, Any]]) -> AsyncIterator[Event]:
        while self._notices:
            yield self._notices.pop(0)
        if self._usable() and time.monotonic() - self._opened_at > self.rotate_after_s:
            assert self._ws is not None
            await self._ws.close()
            if await self._open():
                yield TransportChange(kind=TransportChangeKind.ROTATE, transport=self.name,
                                      message="rotated the WebSocket before its 60-minute limit")
        if not self._usable():
            dropped = self._failed_at is None  # it was open and went away
            waited = self._failed_at is not None and (
                time.monotonic() - self._failed_at > self.retry_socket_after_s)
            if (dropped or waited) and await self._open():
                yield TransportChange(kind=TransportChangeKind.RECONNECT, transport=self.name,
                                      message="re-opened the WebSocket; sending the full context")
            elif dropped:
                yield self._fallback_notice()
        if not self._usable():
            async for event in self.http.stream(turn, items, tools):
                yield event
            self._schedule_reopen()
            return
        fields, history, fixed = self.request.build(items, tools, delta=True)
        parser = ResponsesParser(turn)
        try:
            async for event in self._exchange(turn, fields, parser):
                yield event
        except TransportError as error:
            if error.shown or not (error.code == "previous_response_not_found"
                                   or error.code in _RECONNECT_CODES):
                raise
            self.request.continuation.reset()
            if error.code in _RECONNECT_CODES and not await self._open():
                yield self._fallback_notice()
                async for event in self.http.stream(turn, items, tools):
                    yield event
                self._schedule_reopen()
                return
            notice, fields, history, fixed = self.request.resend(
                items, tools, self.name, f"{error.code}: sending the full conversation again")
            yield notice
            parser = ResponsesParser(turn)
            async for event in self._exchange(turn, fields, parser):
                yield event
        self.request.continuation.completed(parser.response_id, history, fixed)

    async def _exchange(self, turn: int, fields: dict[str, Any], parser: ResponsesParser
                        ) -> AsyncIterator[Event]:
        """Send one `response.create` and yield its events until the terminal one."""
        ws = self._ws
        assert ws is not None
        body = encoded.dumps({"type": "response.create", **fields})
        connect_ms, self._fresh_connect_ms = self._fresh_connect_ms, 0.0
        reply = parser.reply
        sent = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            await ws.send(body)
            uploaded = time.perf_counter()
            first = True
            # one deadline, armed only while waiting for a message (never across a yield):
            # cheaper than a wait_for, which makes a task for every message
            async with asyncio.timeout(None) as deadline:
                while not reply.complete:
                    deadline.reschedule(loop.time() + self.timeout)
                    message = await ws.recv()
                    deadline.reschedule(None)
                    at = time.perf_counter()
                    if first:
                        first = False
                        yield ModelFirstByte(turn=turn, status=200,
                                             request_bytes=len(body.encode()),
                                             connect_ms=connect_ms, reused=connect_ms == 0.0,
                                             ttfb_ms=ms(sent, at), upload_ms=ms(sent, uploaded))
                    for event in parser.on_data(message if isinstance(message, str)
                                                else message.decode("utf-8", "replace"), at):
                        yield event  # the consumer dispatches it before we resume
                    reply.processing_s += time.perf_counter() - at
        except ConnectionClosed as exc:
            raise TransportError(f"the WebSocket closed mid-response ({exc}) after "
                                 f"{reply.pieces} pieces", retryable=True,
                                 shown=reply.pieces > 0, code="connection_closed") from None
        except TimeoutError:
            raise TransportError(f"no event from the WebSocket for {self.timeout:g}s",
                                 retryable=True, shown=reply.pieces > 0) from None
        finally:  # also when the consumer stops early: Ctrl-C, or a generator closed unfinished
            if not parser.ended:
                self._abandon(ws)
        for event in reply.finish(sent):
            yield event

    async def aclose(self) -> None:
        if self._reopening is not None:
            self._reopening.cancel()
        if self._ws is not None:
            await self._ws.close()
        await self.http.aclose()
