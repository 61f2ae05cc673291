"""A requested service tier (`service_tier`), and its one fall-back to the provider's default
tier when the provider has no capacity for it.

Owns recognising a capacity refusal of a tier — Groq's HTTP 498 `capacity_exceeded` (its flex
tier), and OpenAI's 429 whose message names flex processing (its flex tier's "resource
unavailable") — and the switch: a `transport.change` event (kind `tier`), the same request again
without `service_tier`, and no tier for the rest of the session. Never silent, never twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from codeloop.core.conversation import Item
from codeloop.core.events import Event, TransportChange
from codeloop.core.kinds import TransportChangeKind
from codeloop.transport.base import ModelClient, TransportError
from codeloop.transport.delegate import Delegating

CAPACITY_STATUS = 498  # Groq: "flex tier capacity exceeded"
CAPACITY_CODE = "capacity_exceeded"


def is_capacity_refusal(error: TransportError) -> bool:
    """True for a provider's "no capacity for the tier you asked for" (not a rate limit)."""
    return (error.status == CAPACITY_STATUS or error.code == CAPACITY_CODE
            or (error.status == 429 and "flex" in str(error).lower()))


class TierClient(Delegating):
    """Delegates to `inner`, which sends `tier` until the provider refuses it for capacity."""

    def __init__(self, inner: ModelClient, tier: str) -> None:
        self.inner = inner
        inner.service_tier = tier

    async def stream(self, turn: int, items: list[Item],
                     tools: list[dict[str, Any]]) -> AsyncIterator[Event]:
        tier = self.inner.service_tier
        if tier:
            try:
                async for event in self.inner.stream(turn, items, tools):
                    yield event
                return
            except TransportError as error:
                if error.shown or not is_capacity_refusal(error):
                    raise
                self.inner.service_tier = ""
                yield TransportChange(
                    kind=TransportChangeKind.TIER, transport=self.inner.name,
                    message=f"the {tier!r} service tier has no capacity now ({error}); "
                            f"asking again in the default tier, and using it from now on")
        async for event in self.inner.stream(turn, items, tools):
            yield event
