"""The OpenAI Responses API, whatever carries it (HTTP SSE or a WebSocket): request shape,
continuation and the parser of its event stream.

Owns the rendering of codeloop's conversation (`core.conversation` items) as Responses
`instructions`, `input` items and `tools`; the continuation rule (send only the new items with
`previous_response_id` when everything else is identical and the server's previous response is
the last thing in our history, else the full input); and the parsing of `response.*` events.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from codeloop.core import encoded
from codeloop.core.conversation import Instructions, Item, ToolCall, ToolOutput, UserText
from codeloop.core.conversation import Reply as ModelReply
from codeloop.core.events import Event, TransportChange
from codeloop.core.kinds import CallKind, TransportChangeKind
from codeloop.transport.base import TransportError
from codeloop.transport.http import classify_error
from codeloop.transport.reply import Reply

TERMINAL = ("response.completed", "response.done", "response.incomplete")
# events of generated output other than text: each is a token on the reply's clock
GENERATED = ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta",
             "response.apply_patch_call_operation_diff.delta", "response.reasoning_text.delta",
             "response.reasoning_summary_text.delta", "response.refusal.delta")


BUILTIN_TOOLS = frozenset({"apply_patch"})  # the tools the Responses API has built in


def tools_for_responses(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat `{"type": "function", "function": {...}}` tools as Responses function tools; one
    marked `"builtin": NAME` as that built-in tool (`{"type": "apply_patch"}`) instead."""
    return [{"type": tool["builtin"]} if tool.get("builtin") in BUILTIN_TOOLS
            else {"type": "function", **tool["function"]} for tool in tools]


_OUTPUT_TYPES = {CallKind.FUNCTION: "function_call_output",
                 CallKind.CUSTOM: "custom_tool_call_output",
                 CallKind.PATCH: "apply_patch_call_output"}


def _call_item(call: ToolCall) -> dict[str, Any]:
    if call.kind is CallKind.CUSTOM:
        return {"type": "custom_tool_call", "call_id": call.call_id, "name": call.name,
                "input": call.arguments}
    if call.kind is CallKind.PATCH:
        return {"type": "apply_patch_call", "call_id": call.call_id, "status": "completed",
                "operation": json.loads(call.arguments)}
    return {"type": "function_call", "call_id": call.call_id, "name": call.name,
            "arguments": call.arguments}


def _output_item(output: ToolOutput) -> dict[str, Any]:
    item = {"type": _OUTPUT_TYPES[output.kind], "call_id": output.call_id,
            "output": output.output}
    if output.kind is CallKind.PATCH:
        item["status"] = "failed" if output.failed else "completed"
    return item


def input_items(history: list[Item]) -> list[dict[str, Any]]:
    """The conversation after its instructions as Responses input items."""
    rendered: list[dict[str, Any]] = []
    for item in history:
        if isinstance(item, ToolOutput):
            rendered.append(_output_item(item))
        elif isinstance(item, UserText | ModelReply):
            if item.text:
                rendered.append({"type": "message",
                                 "role": "user" if isinstance(item, UserText) else "assistant",
                                 "content": item.text})
            rendered += [_call_item(c) for c in (item.calls if isinstance(item, ModelReply)
                                                 else ())]
    return rendered


@lru_cache(maxsize=encoded.MEMO_ITEMS)
def input_json(item: Item) -> str:
    """The item's input items (none, one, or a reply's message and its calls) as JSON text,
    comma-separated."""
    return ",".join(encoded.compact(value) for value in input_items([item]))


def prepare(items: list[Item]) -> None:
    """Encode the history ahead (`ModelClient.prepare`)."""
    encoded.prepare(split_system(items)[1], input_json)


def split_system(items: list[Item]) -> tuple[str, list[Item]]:
    if items and isinstance(items[0], Instructions):
        return items[0].text, items[1:]
    return "", items


def _same(a: list[Item], b: list[Item]) -> bool:
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True))


class Continuation:
    """What the server holds from our last request, so the next can send only what is new."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.response_id: str | None = None
        self.history: list[Item] = []
        self.fixed = ""  # instructions + tools + model, serialised
        self.reply_in_history = True  # a warm-up response has no output to skip

    def plan(self, history: list[Item], fixed: str) -> tuple[str | None, list[Item]]:
        """(previous_response_id, the items to send): a delta when it is safe, else all."""
        done = self.history
        skip = 1 if self.reply_in_history else 0
        if (self.response_id and fixed == self.fixed and len(history) >= len(done) + skip
                and _same(history[:len(done)], done)
                and (not skip or isinstance(history[len(done)], ModelReply))):
            return self.response_id, history[len(done) + skip:]
        return None, history

    def completed(self, response_id: str, history: list[Item], fixed: str,
                  reply_in_history: bool = True) -> None:
        self.response_id, self.history, self.fixed = response_id, list(history), fixed
        self.reply_in_history = reply_in_history


def _call_of(item: dict[str, Any]) -> dict[str, str] | None:
    """A finished output item as the reply's tool call (None for messages, reasoning...)."""
    kind, call_id = item.get("type"), str(item.get("call_id") or "")
    if kind == "function_call":
        return {"id": call_id, "name": str(item.get("name") or ""),
                "arguments": str(item.get("arguments") or "")}
    if kind == "custom_tool_call":
        return {"id": call_id, "name": str(item.get("name") or ""),
                "arguments": str(item.get("input") or ""), "kind": CallKind.CUSTOM}
    if kind == "apply_patch_call":
        operation = item.get("operation")
        return {"id": call_id, "name": "apply_patch", "kind": CallKind.PATCH,
                "arguments": json.dumps(operation if isinstance(operation, dict) else {})}
    return None


class ResponsesParser:
    """Accumulates one Responses reply from its events (SSE `data:` payloads or WS messages)."""

    def __init__(self, turn: int) -> None:
        self.reply = Reply(turn)
        self.response_id = ""
        # the server sent this response's last event (terminal, failed or error): nothing more
        # of it can follow, so what comes next on the same stream belongs to another request
        self.ended = False

    def on_data(self, data: str, at: float) -> list[Event]:
        if data.strip() == "[DONE]":  # some Responses-compatible servers send it; ignore
            return []
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise TransportError(f"the server sent a malformed event: {data[:200]!r}",
                                 retryable=True, shown=self.reply.pieces > 0)
        return self.on_event(event, at)

    def on_event(self, event: dict[str, Any], at: float) -> list[Event]:
        reply = self.reply
        kind = event.get("type", "")
        if kind == "response.output_text.delta":
            return [reply.text_delta(str(event.get("delta", "")), at)]
        if kind in GENERATED:
            reply.token(at)
        elif kind == "response.created":
            self.response_id = (event.get("response") or {}).get("id", "")
            self._note_server(event)
        elif kind == "response.output_item.done":
            call = _call_of(event.get("item") or {})
            if call:
                reply.calls[len(reply.calls)] = call
        elif kind in TERMINAL:
            self.ended = True
            self._note_server(event)
            self._complete(event.get("response") or {})
        elif kind == "response.failed":
            self.ended = True
            error = (event.get("response") or {}).get("error") or {}
            raise TransportError(f"the response failed: {error.get('message', error)}",
                                 retryable=True, shown=reply.pieces > 0,
                                 code=str(error.get("code") or ""))
        elif kind == "error":
            self.ended = True
            raise self.error(event)
        return []

    def _note_server(self, event: dict[str, Any]) -> None:
        """The server's timing and tier, from the event (llama.cpp puts `timings` beside the
        response: tests/data/transcripts/responses_stream.txt) or its response object (where
        the tier is, and where other providers' time fields would be)."""
        self.reply.note_server(event)
        if isinstance(response := event.get("response"), dict):
            self.reply.note_server(response)

    def _complete(self, response: dict[str, Any]) -> None:
        reply = self.reply
        self.response_id = response.get("id") or self.response_id
        usage = response.get("usage") or {}
        details = usage.get("input_tokens_details") or {}
        reply.usage = {"prompt_tokens": int(usage.get("input_tokens") or 0),
                       "completion_tokens": int(usage.get("output_tokens") or 0),
                       "cached_tokens": int(details.get("cached_tokens") or 0)}
        incomplete = (response.get("incomplete_details") or {}).get("reason")
        reply.finish_reason = ("length" if incomplete == "max_output_tokens"
                               else "tool_calls" if reply.calls else "stop")
        reply.complete = True

    def error(self, event: dict[str, Any]) -> TransportError:
        """An `error` event (WebSocket errors carry an HTTP-like status and headers)."""
        error = event.get("error") if isinstance(event.get("error"), dict) else event
        status = int(event.get("status") or error.get("status") or 500)
        code = str(error.get("code") or error.get("type") or "")
        failure = classify_error(status, code, str(error.get("message") or error),
                                 error.get("headers") or {})
        failure.shown = self.reply.pieces > 0
        return failure


class ResponsesRequest:
    """The fields of one Responses request, and the continuation bookkeeping around it."""

    def __init__(self, model: str, max_output_tokens: int, store: bool,
                 cache_key: str = "", service_tier: str = "") -> None:
        self.model = model
        self.service_tier = service_tier  # sent as given; "" sends none (the provider's default)
        self.cache_key = cache_key
        self.max_output_tokens = max_output_tokens
        self.store = store
        self.continuation = Continuation()

    def build(self, items: list[Item], tools: list[dict[str, Any]],
              delta: bool) -> tuple[dict[str, Any], list[Item], str]:
        """(fields, the history this request represents, the fixed part's fingerprint)."""
        instructions, history = split_system(items)
        response_tools = tools_for_responses(tools)
        fixed = json.dumps([self.model, instructions, response_tools], sort_keys=True)
        previous, new = self.continuation.plan(history, fixed) if delta else (None, history)
        fields: dict[str, Any] = {
            "model": self.model, "instructions": instructions,
            "input": encoded.array(map(input_json, new)),
            "store": self.store, "max_output_tokens": self.max_output_tokens,
        }
        if response_tools:
            fields["tools"] = response_tools
        if previous:
            fields["previous_response_id"] = previous
        if self.cache_key:
            fields["prompt_cache_key"] = self.cache_key
        if self.service_tier:
            fields["service_tier"] = self.service_tier
        return fields, history, fixed

    def resend(self, items: list[Item], tools: list[dict[str, Any]], transport: str,
               why: str) -> tuple[TransportChange, dict[str, Any], list[Item], str]:
        """The whole conversation again, for a server that no longer holds the previous
        response: the event that says so, then what `build` returns."""
        self.continuation.reset()
        return (TransportChange(kind=TransportChangeKind.RESEND, transport=transport,
                                message=why), *self.build(items, tools, delta=False))
