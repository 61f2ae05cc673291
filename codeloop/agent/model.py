"""The session's side of the model connection: the tools offered, connecting and warming up
ahead, measuring and announcing each request, streaming its reply onto the turn's clock.

Owns the `model.request` event (the new messages, the prefix reuse measured on the Chat
rendering of the whole conversation), the tools each request offers (`edit_tool`: the
apply_patch function, or the provider's built-in apply_patch where the wire and the model have
it) and their withdrawal when a server refuses them, and the connection's warm-up task. The
wire itself is the transport's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from codeloop.agent.clock import TurnClock
from codeloop.context import prompt
from codeloop.context.layout import PrefixProbe, PrefixTracker
from codeloop.context.tools import offers_builtin_patch, tool_names, tool_schemas
from codeloop.core import encoded
from codeloop.core.conversation import Item, chat_messages
from codeloop.core.events import (
    ModelDone,
    ModelFirstByte,
    ModelRequest,
    ModelRetry,
    ModelToolCall,
    TransportChange,
)
from codeloop.core.kinds import EditTool, TransportChangeKind
from codeloop.core.stream import EventStream
from codeloop.transport import ModelClient, TransportError
from codeloop.transport.retry import stream_with_retries


@dataclass
class Streamed:
    """One streamed model reply: its end and the tool calls it made."""

    done: ModelDone
    calls: list[ModelToolCall] = field(default_factory=list)


class ModelLink:
    """Sends the conversation to the model, one request at a time."""

    def __init__(self, client: ModelClient, edit_tool: str, builtin_models: str,
                 events: EventStream) -> None:
        self.client = client
        self.edit_tool = edit_tool
        self.builtin_models = builtin_models
        self.events = events
        self.with_tools = edit_tool != EditTool.TEXT
        self.builtin_refused = False  # the server refused the built-in apply_patch tool
        self.offered_builtin = False  # the last request offered it
        self.prefix = PrefixTracker()
        self.probe = PrefixProbe(0.0, 0, "")  # the last request's
        self._connecting: asyncio.Task[None] | None = None

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The tools the next request offers (the wire and the model may change meanwhile)."""
        if not self.with_tools:
            return []
        return tool_schemas(builtin_patch=not self.builtin_refused and offers_builtin_patch(
            self.edit_tool, self.client.builtin_tools, self.client.model, self.builtin_models))

    def start_connecting(self) -> None:
        """Connect, and warm the server up where the wire supports it, in a task of its own."""
        self._connecting = asyncio.create_task(self._prepare())

    async def _prepare(self) -> None:
        await self.client.connect()
        note = await self.client.warm_up(prompt.system_prompt(self.with_tools), self.tools)
        if note:
            self.events.emit(TransportChange(kind=TransportChangeKind.WARMUP,
                                             transport=self.client.name, message=note))

    def refuses_tools(self, error: TransportError, first: bool) -> bool:
        """In `auto` edit mode, a server that refuses tools on the first request gets the same
        request again without them, asking for ```diff blocks instead."""
        return (first and self.with_tools and self.edit_tool == EditTool.AUTO
                and error.status == 400 and "tool" in str(error).lower())

    def refuses_builtin(self, error: TransportError) -> bool:
        """A request that offered the built-in apply_patch tool was refused for it: the same
        request goes again with the apply_patch function (once: it is not offered again)."""
        said = str(error).lower()
        return (self.offered_builtin and error.status == 400
                and ("apply_patch" in said or "tool" in said))

    def drop_builtin(self) -> None:
        self.builtin_refused = True

    def drop_tools(self) -> str:
        """No tools from now on; returns the instructions that go with that."""
        self.with_tools = False
        return prompt.system_prompt(False)

    def prepare(self, items: list[Item]) -> None:
        """The next request's prompt, ahead: what it repeats of `items` is encoded now (for
        the wire, the prefix probe and the compaction check)."""
        encoded.prepare(items, encoded.chat_json)
        self.client.prepare(items)

    async def send(self, turn: int, items: list[Item], new: list[Item],
                   clock: TurnClock) -> Streamed:
        """One request for the conversation `items` (`new`: what the last one lacked)."""
        if self._connecting is not None and not self._connecting.done():
            await asyncio.shield(self._connecting)  # never race the warm-up on one socket
        tools = self.tools
        self.offered_builtin = any(t.get("builtin") for t in tools)
        probe = self.probe = self.prefix.measure(items, tools)
        self.events.emit(ModelRequest(turn=turn, messages=chat_messages(new),
                                      tools=tool_names(tools),
                                      prompt_tokens_estimate=probe.sent_tokens,
                                      prefix_reuse=probe.reuse, prefix_changed=probe.changed))
        done: ModelDone | None = None
        calls: list[ModelToolCall] = []
        async for event in stream_with_retries(self.client, turn, items, tools):
            self.events.emit(event)
            if isinstance(event, ModelFirstByte):
                clock.first_byte(event)
            elif isinstance(event, ModelToolCall):
                calls.append(event)
            elif isinstance(event, ModelRetry):
                clock.retried(event)
            elif isinstance(event, ModelDone):
                done = event
        assert done is not None, "every transport's reply ends with ModelDone"
        clock.replied(done)
        return Streamed(done, calls)

    async def summarise(self, turn: int, items: list[Item]) -> str:
        """The text of the model's reply to `items`, its events unshown (a compaction's)."""
        text = ""
        async for event in stream_with_retries(self.client, turn, items, self.tools):
            if isinstance(event, ModelDone):
                text = event.text
        return text

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        await self.client.aclose()
