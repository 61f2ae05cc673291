"""The one small async interface every model transport implements, and its error type.

The agent talks to a `ModelClient` and never learns which wire is underneath. Implementations
measure their own timing at the wire and hand it up as fields of the events they yield.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from codeloop.core.conversation import Item
from codeloop.core.errors import CodeloopError
from codeloop.core.events import Event
from codeloop.core.kinds import ExitCode


class TransportError(CodeloopError):
    """A request failed. `shown` is true once any of the reply was handed up."""

    exit_code = ExitCode.MODEL

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
    # the tools this wire can offer as the provider's built-in tools: a tool in a request marked
    # `"builtin": NAME` goes as that built-in tool where NAME is here, else as its function
    builtin_tools: frozenset[str]
    # the `service_tier` every request carries, as configured ("" carries none: the default)
    service_tier: str

    async def connect(self) -> None:
        """Open the connection ahead of the first request; never raises."""

    async def warm_up(self, instructions: str, tools: list[dict[str, Any]]) -> str:
        """Send the stable prefix ahead where the wire supports it; returns what happened
        (empty when nothing was done). Never raises."""

    def prepare(self, items: list[Item]) -> None:
        """Encode `items` ahead, as the next request will send them (it then encodes only what
        comes after them); called while a verification runs. Never raises."""

    def stream(
        self, turn: int, items: list[Item], tools: list[dict[str, Any]]
    ) -> AsyncIterator[Event]:
        """Send one request for the conversation `items` (each wire renders them its way) with
        `tools` (Chat-shaped function schemas; see `builtin_tools`) and yield ModelFirstByte,
        ModelTextDelta, ModelToolCall, ModelDone.

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
