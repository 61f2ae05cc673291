"""`transport = "auto"`: the provider's preferred wire, and Chat Completions if it answers 404.

Owns the one-time switch; it is an event (`transport.change`), never silent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from codeloop.core.conversation import Item
from codeloop.core.events import Event, TransportChange
from codeloop.core.kinds import TransportChangeKind
from codeloop.transport.base import ModelClient, TransportError
from codeloop.transport.delegate import Delegating


class FallbackClient(Delegating):
    """Delegates to `primary` until it answers 404, then to `secondary` for good."""

    def __init__(self, primary: ModelClient, secondary: ModelClient) -> None:
        self.inner = primary
        self.secondary: ModelClient | None = secondary
        self._spare = secondary

    def clients(self) -> list[ModelClient]:
        return [self.inner, self._spare]

    async def stream(self, turn: int, items: list[Item],
                     tools: list[dict[str, Any]]) -> AsyncIterator[Event]:
        try:
            async for event in self.inner.stream(turn, items, tools):
                yield event
            return
        except TransportError as error:
            if error.status != 404 or error.shown or self.secondary is None:
                raise
            old, self.inner, self.secondary = self.inner, self.secondary, None
            await old.aclose()
            yield TransportChange(kind=TransportChangeKind.FALLBACK, transport=self.inner.name,
                                  message=f"{old.name} is not offered here ({error}); "
                                          f"using {self.inner.name} from now on")
        async for event in self.inner.stream(turn, items, tools):
            yield event

    async def aclose(self) -> None:
        await self.inner.aclose()
        if self.secondary is not None:
            await self.secondary.aclose()
