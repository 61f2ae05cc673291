"""The conversation with the model, in no wire's shape: instructions, user text, the model's
replies with their tool calls, and the tools' results.

Every wire renders it: Chat Completions as `messages` (`chat_messages`, also the form the
recording's `model.request` events hold, and what prefix reuse is measured on), the Responses
API as `instructions` and `input` items (`transport/responses.py`). A recording's messages read
back with `from_chat_messages`. Items are immutable: a request's history can be compared with
the last one item by item.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Instructions:
    """The system prompt: always the first item."""

    text: str


@dataclass(frozen=True)
class UserText:
    """What the user said, or what codeloop tells the model in the user's place (the task, test
    results, a summary of older turns)."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """One call the model made, arguments complete."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    """One reply of the model: its text and the tool calls it made."""

    text: str
    calls: tuple[ToolCall, ...] = field(default=())


@dataclass(frozen=True)
class ToolOutput:
    """The answer to one tool call."""

    call_id: str
    output: str


Item = Instructions | UserText | Reply | ToolOutput


def chat_message(item: Item) -> dict[str, Any]:
    """One item as a Chat Completions message."""
    if isinstance(item, Instructions):
        return {"role": "system", "content": item.text}
    if isinstance(item, UserText):
        return {"role": "user", "content": item.text}
    if isinstance(item, ToolOutput):
        return {"role": "tool", "tool_call_id": item.call_id, "content": item.output}
    message: dict[str, Any] = {"role": "assistant",
                               "content": item.text or (None if item.calls else "")}
    if item.calls:
        message["tool_calls"] = [
            {"id": c.call_id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}} for c in item.calls]
    return message


def chat_messages(items: Iterable[Item]) -> list[dict[str, Any]]:
    """The items as Chat Completions `messages`."""
    return [chat_message(item) for item in items]


def from_chat_messages(messages: Sequence[dict[str, Any]]) -> list[Item]:
    """Chat Completions messages (a recording's) as items; raises ValueError on a message that
    is none of the four kinds."""
    items: list[Item] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role == "system":
            items.append(Instructions(str(content or "")))
        elif role == "user":
            items.append(UserText(str(content or "")))
        elif role == "tool":
            items.append(ToolOutput(str(message.get("tool_call_id", "")), str(content or "")))
        elif role == "assistant":
            calls = tuple(ToolCall(str(c.get("id", "")), str(c["function"]["name"]),
                                   str(c["function"]["arguments"]))
                          for c in message.get("tool_calls") or ())
            items.append(Reply(str(content or ""), calls))
        else:
            raise ValueError(f"not a conversation message (role {role!r})")
    return items
