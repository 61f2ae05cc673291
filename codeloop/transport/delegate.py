"""A `ModelClient` made of another: every call handed to `inner`, the client in use now.

The wrappers that change one thing about a wire (`fallback.py`: another wire after a 404;
`tier.py`: the default tier after a capacity refusal) say only what they change; the rest of
the interface is here, once. A setting made on a wrapper goes to every client it may hand
over to (`clients`).
"""

from __future__ import annotations

from typing import Any

from codeloop.core.conversation import Item
from codeloop.transport.base import ModelClient


class Delegating:
    """Hands each call to `inner`; subclasses change what `stream` (and `aclose`) do."""

    inner: ModelClient

    def clients(self) -> list[ModelClient]:
        """Every client a setting must reach (the one in use, and any it may switch to)."""
        return [self.inner]

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def builtin_tools(self) -> frozenset[str]:
        return self.inner.builtin_tools

    @property
    def model(self) -> str:
        return self.inner.model

    @model.setter
    def model(self, name: str) -> None:
        for client in self.clients():
            client.model = name

    @property
    def service_tier(self) -> str:
        return self.inner.service_tier

    @service_tier.setter
    def service_tier(self, tier: str) -> None:
        for client in self.clients():
            client.service_tier = tier

    async def connect(self) -> None:
        await self.inner.connect()

    async def warm_up(self, instructions: str, tools: list[dict[str, Any]]) -> str:
        return await self.inner.warm_up(instructions, tools)

    def prepare(self, items: list[Item]) -> None:
        self.inner.prepare(items)

    async def aclose(self) -> None:
        await self.inner.aclose()
