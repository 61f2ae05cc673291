"""The one small async interface every model transport implements, and its error type.

The loop talks to a `ModelClient` and never learns which wire is underneath. Implementations
measure their own timing at the wire and hand it up as fields of the events they yield.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from codeloop.events import Event


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
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.shown = shown


class ModelClient(Protocol):
    """A connection to a model. One instance lives for the whole session."""

    name: str
    model: str

    async def connect(self) -> None:
        """Open the connection ahead of the first request; never raises."""

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


def make_client(transport: str, base_url: str, model: str, api_key: str | None,
                max_output_tokens: int, request_timeout_s: float) -> ModelClient:
    """Build the client for the configured transport (`auto` picks Chat Completions for now)."""
    from codeloop.transport.chat import ChatCompletionsClient

    return ChatCompletionsClient(base_url, model, api_key, max_output_tokens, request_timeout_s)
