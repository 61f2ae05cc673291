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


class FallbackClient:
    """Delegates to `primary` until it answers 404, then to `secondary` for good."""

    def __init__(self, primary: ModelClient, secondary: ModelClient) -> None:
        self.active = primary
        self.secondary: ModelClient | None = secondary
        self._spare = secondary

    @property
    def name(self) -> str:
        return self.active.name

    @property
    def builtin_tools(self) -> frozenset[str]:
        return self.active.builtin_tools

    @property
    def model(self) -> str:
        return self.active.model

    @model.setter
    def model(self, name: str) -> None:
        self.active.model = name
        self._spare.model = name

    @property
    def service_tier(self) -> str:
        return self.active.service_tier

    @service_tier.setter
    def service_tier(self, tier: str) -> None:
        self.active.service_tier = tier
        self._spare.service_tier = tier

    async def connect(self) -> None:
        await self.active.connect()

    async def warm_up(self, instructions: str, tools: list[dict[str, Any]]) -> str:
        return await self.active.warm_up(instructions, tools)

    def prepare(self, items: list[Item]) -> None:
        self.active.prepare(items)

    async def stream(self, turn: int, items: list[Item],
                     tools: list[dict[str, Any]]) -> AsyncIterator[Event]:
        try:
            async for event in self.active.stream(turn, items, tools):
                yield event
            return
        except TransportError as error:
            if error.status != 404 or error.shown or self.secondary is None:
                raise
            old, self.active, self.secondary = self.active, self.secondary, None
            await old.aclose()
            yield TransportChange(kind=TransportChangeKind.FALLBACK, transport=self.active.name,
                                  message=f"{old.name} is not offered here ({error}); "
                                          f"using {self.active.name} from now on")
        async for event in self.active.stream(turn, items, tools):
            yield event

    async def aclose(self) -> None:
        await self.active.aclose()
        if self.secondary is not None:
            await self.secondary.aclose()
