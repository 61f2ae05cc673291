"""The Responses API over HTTP: `POST {base_url}/responses` with `stream: true` (SSE) on the
shared keep-alive connection.

With `store` on, a turn sends only its new items and `previous_response_id` (the server keeps
the conversation); otherwise, and after `previous_response_not_found`, the full input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from codeloop.core import encoded
from codeloop.core.conversation import Item
from codeloop.core.events import Event
from codeloop.transport.base import TransportError
from codeloop.transport.http import HttpStreamClient
from codeloop.transport.responses import (
    BUILTIN_TOOLS,
    ResponsesParser,
    ResponsesRequest,
    prepare,
)


def encode(fields: dict[str, Any]) -> bytes:
    return encoded.dumps(fields).encode()


class ResponsesHttpClient(HttpStreamClient):
    """A `ModelClient` for `/responses` over HTTP + SSE."""

    name = "responses-http"
    builtin_tools = BUILTIN_TOOLS

    def __init__(self, base_url: str, model: str, api_key: str | None,
                 max_output_tokens: int, request_timeout_s: float, store: bool = False,
                 cache_key: str = "", service_tier: str = "") -> None:
        super().__init__(base_url, model, api_key, max_output_tokens, request_timeout_s)
        self.request = ResponsesRequest(model, max_output_tokens, store, cache_key,
                                        service_tier)

    @property
    def service_tier(self) -> str:
        return self.request.service_tier

    @service_tier.setter
    def service_tier(self, tier: str) -> None:
        self.request.service_tier = tier

    def prepare(self, items: list[Item]) -> None:
        prepare(items)

    async def stream(self, turn: int, items: list[Item],
                     tools: list[dict[str, Any]]) -> AsyncIterator[Event]:
        self.request.model = self.model
        store = self.request.store
        fields, history, fixed = self.request.build(items, tools, delta=store)
        parser = ResponsesParser(turn)
        try:
            async for event in self.post_stream(turn, "/responses",
                                                encode({**fields, "stream": True}), parser):
                yield event
        except TransportError as error:
            if error.code != "previous_response_not_found" or error.shown:
                raise
            notice, fields, history, fixed = self.request.resend(
                items, tools, self.name, "the server no longer has the previous response; "
                "sending the full conversation")
            yield notice
            parser = ResponsesParser(turn)
            async for event in self.post_stream(turn, "/responses",
                                                encode({**fields, "stream": True}), parser):
                yield event
        if store and parser.response_id:
            self.request.continuation.completed(parser.response_id, history, fixed)
