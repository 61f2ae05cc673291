"""The conversation with the model, in no wire's shape: instructions, user text, the model's
replies with their tool calls, and the tools' results.

Every wire renders it: Chat Completions as `messages` (`chat_messages`, also the form the
recording's `model.request` events hold, and what prefix reuse is measured on), the Responses
API as `instructions` and `input` items (`transport/responses.py`). A recording's messages read
back with `from_chat_messages`. Items are immutable: a request's history can be compared with
the last one item by item.

Calls of a freeform tool and of the built-in apply_patch tool (Responses only) keep their kind:
the recording's Chat form marks them (`type` `custom` / `apply_patch_call`, and on their outputs)
so a replay renders them as they were; `portable=True` renders the built-in's calls as the
function calls any Chat server takes (a session that moved to the Chat wire).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from codeloop.core.kinds import CallKind


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
    """One call the model made, arguments complete: a function's JSON arguments, a freeform
    tool's input text, or the built-in apply_patch tool's operation as JSON."""

    call_id: str
    name: str
    arguments: str
    kind: CallKind = CallKind.FUNCTION


@dataclass(frozen=True)
class Reply:
    """One reply of the model: its text and the tool calls it made."""

    text: str
    calls: tuple[ToolCall, ...] = field(default=())


@dataclass(frozen=True)
class ToolOutput:
    """The answer to one tool call, of the call's kind; `failed` is the built-in apply_patch
    tool's status (its operation was not applied)."""

    call_id: str
    output: str
    kind: CallKind = CallKind.FUNCTION
    failed: bool = False


Item = Instructions | UserText | Reply | ToolOutput


def chat_message(item: Item, portable: bool = False) -> dict[str, Any]:
    """One item as a Chat Completions message (`portable`: every call as a function call)."""
    if isinstance(item, Instructions):
        return {"role": "system", "content": item.text}
    if isinstance(item, UserText):
        return {"role": "user", "content": item.text}
    if isinstance(item, ToolOutput):
        message = {"role": "tool", "tool_call_id": item.call_id, "content": item.output}
        if item.kind is not CallKind.FUNCTION and not portable:
            message["type"] = item.kind.value
            if item.kind is CallKind.PATCH:
                message["status"] = "failed" if item.failed else "completed"
        return message
    message = {"role": "assistant", "content": item.text or (None if item.calls else "")}
    if item.calls:
        message["tool_calls"] = [_chat_call(call, portable) for call in item.calls]
    return message


def _chat_call(call: ToolCall, portable: bool) -> dict[str, Any]:
    if call.kind is CallKind.CUSTOM:  # Chat Completions has freeform tools too
        return {"id": call.call_id, "type": "custom",
                "custom": {"name": call.name, "input": call.arguments}}
    if call.kind is CallKind.PATCH and not portable:
        return {"id": call.call_id, "type": "apply_patch_call",
                "operation": json.loads(call.arguments)}
    arguments = call.arguments  # (the built-in's operation, portably: the function's argument)
    if call.kind is CallKind.PATCH:
        arguments = json.dumps({"operation": json.loads(call.arguments)})
    return {"id": call.call_id, "type": "function",
            "function": {"name": call.name, "arguments": arguments}}


def chat_messages(items: Iterable[Item], portable: bool = False) -> list[dict[str, Any]]:
    """The items as Chat Completions `messages`."""
    return [chat_message(item, portable) for item in items]


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
            kind = CallKind(message.get("type") or CallKind.FUNCTION)
            items.append(ToolOutput(str(message.get("tool_call_id", "")), str(content or ""),
                                    kind, message.get("status") == "failed"))
        elif role == "assistant":
            calls = tuple(_call_from_chat(c) for c in message.get("tool_calls") or ())
            items.append(Reply(str(content or ""), calls))
        else:
            raise ValueError(f"not a conversation message (role {role!r})")
    return items


def _call_from_chat(call: dict[str, Any]) -> ToolCall:
    call_id = str(call.get("id", ""))
    if call.get("type") == "custom":
        return ToolCall(call_id, str(call["custom"]["name"]), str(call["custom"]["input"]),
                        CallKind.CUSTOM)
    if call.get("type") == "apply_patch_call":
        return ToolCall(call_id, "apply_patch", json.dumps(call["operation"]), CallKind.PATCH)
    return ToolCall(call_id, str(call["function"]["name"]), str(call["function"]["arguments"]))
