"""The one small async interface every model transport implements, and its error type.

The loop talks to a `ModelClient` and never learns which wire is underneath. Implementations
measure their own timing at the wire and hand it up as fields of the events they yield.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from codeloop.core.events import Event


class TransportError(Exception):
    """A request failed. `shown` is true once any of the reply was handed up."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        shown: bool = False,
        code: str = "",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.shown = shown
        self.code = code


class ModelClient(Protocol):
    """A connection to a model. One instance lives for the whole session."""

    name: str
    model: str

    async def connect(self) -> None:
        """Open the connection ahead of the first request; never raises."""

    async def warm_up(self, instructions: str, tools: list[dict[str, Any]]) -> str:
        """Send the stable prefix ahead where the wire supports it; returns what happened
        (empty when nothing was done). Never raises."""

    def stream(
        self, turn: int, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[Event]:
        """Send one request and yield ModelFirstByte, ModelTextDelta, ModelToolCall, ModelDone.

        Raises TransportError when the request fails or the stream ends before it is complete.
        """

    async def aclose(self) -> None:
        """Close the connection."""


def is_loopback(base_url: str) -> bool:
    """True when the URL points at this machine (a local server needs no API key)."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# `transport = "auto"`: the wire picked by provider, first match on the base URL's host wins.
# Everything else (Cerebras, Groq, OpenRouter, vLLM, llama.cpp, Ollama, ...) speaks Chat
# Completions. An auto choice that answers 404 falls back to chat once, with an event.
AUTO_TRANSPORTS: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "responses-ws"),
    ("api.x.ai", "responses-ws"),
    (".openai.azure.com", "responses-ws"),
)


def pick_transport(transport: str, base_url: str) -> str:
    if transport != "auto":
        return transport
    host = urlsplit(base_url).hostname or ""
    return next((wire for suffix, wire in AUTO_TRANSPORTS if host.endswith(suffix)), "chat")


def make_client(transport: str, base_url: str, model: str, api_key: str | None,
                max_output_tokens: int, request_timeout_s: float,
                responses_store: bool = False, cache_key: str = "") -> ModelClient:
    """Build the client for the configured transport (`auto` picks by provider).

    `cache_key` becomes `prompt_cache_key` (one per repository) where the provider supports it.
    """
    from codeloop.transport.chat import ChatCompletionsClient

    wire = pick_transport(transport, base_url)
    args = (base_url, model, api_key, max_output_tokens, request_timeout_s)
    chat = ChatCompletionsClient(*args, cache_key=cache_key)
    if wire == "chat":
        return chat
    if wire == "responses-http":
        from codeloop.transport.responses_http import ResponsesHttpClient

        client: ModelClient = ResponsesHttpClient(*args, store=responses_store,
                                                  cache_key=cache_key)
    else:
        from codeloop.transport.responses_ws import ResponsesWebSocketClient

        client = ResponsesWebSocketClient(*args, store=responses_store, cache_key=cache_key)
    if transport == "auto":
        from codeloop.transport.fallback import FallbackClient

        return FallbackClient(client, chat)
    return client
