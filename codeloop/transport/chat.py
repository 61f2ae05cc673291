"""Chat Completions over HTTP + SSE: the request body and the parser of its stream.

Works against any OpenAI-compatible `/chat/completions` (OpenAI, Cerebras, Groq, OpenRouter, vLLM,
llama.cpp, Ollama). Connection handling and timing live in `transport.http`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from codeloop.core import encoded
from codeloop.core.conversation import Item
from codeloop.core.events import Event
from codeloop.core.kinds import CallKind
from codeloop.transport.base import TransportError
from codeloop.transport.http import HttpStreamClient
from codeloop.transport.reply import Reply

_MAX_COMPLETION_HOSTS = ("api.openai.com", "api.cerebras.ai", "api.groq.com", "openrouter.ai")


class ChatParser:
    """Accumulates one streamed Chat Completions reply from its `data:` payloads."""

    def __init__(self, turn: int) -> None:
        self.reply = Reply(turn)

    def on_data(self, data: str, at: float) -> list[Event]:
        reply = self.reply
        if data.strip() == "[DONE]":
            reply.complete = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise TransportError(f"the server sent a malformed chunk in the stream: "
                                 f"{data[:200]!r}", retryable=True, shown=reply.pieces > 0)
        if error := chunk.get("error"):
            message = error.get("message", error) if isinstance(error, dict) else error
            raise TransportError(f"the server reported an error mid-stream: {message}",
                                 retryable=False, shown=reply.pieces > 0)
        reply.note_server(chunk)
        if usage := chunk.get("usage"):
            details = usage.get("prompt_tokens_details") or {}
            reply.usage = {
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
                "cached_tokens": int(details.get("cached_tokens") or 0),
            }
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                events.append(reply.text_delta(content, at))
            if delta.get("reasoning") or delta.get("reasoning_content"):
                reply.token(at)
            for call in delta.get("tool_calls") or ():
                reply.token(at)
                slot = reply.calls.setdefault(int(call.get("index") or 0),
                                              {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                if isinstance(call.get("custom"), dict):  # a freeform tool's: raw input text
                    slot["kind"] = CallKind.CUSTOM
                function = call.get("custom") or call.get("function") or {}
                slot["name"] = function.get("name") or slot["name"]
                slot["arguments"] += function.get("input") or function.get("arguments") or ""
            if choice.get("finish_reason"):
                reply.finish_reason = choice["finish_reason"]
                reply.complete = True
        return events


def portable_json(item: Item) -> str:
    """An item as this wire sends it: every call as a function call."""
    return encoded.chat_json(item, portable=True)


class ChatCompletionsClient(HttpStreamClient):
    """A `ModelClient` for any OpenAI-compatible `/chat/completions` endpoint."""

    name = "chat"
    builtin_tools: frozenset[str] = frozenset()

    def __init__(self, base_url: str, model: str, api_key: str | None,
                 max_output_tokens: int, request_timeout_s: float, cache_key: str = "",
                 service_tier: str = "") -> None:
        super().__init__(base_url, model, api_key, max_output_tokens, request_timeout_s)
        self.service_tier = service_tier  # sent as given; "" sends none (the provider's default)
        host = urlsplit(self.base_url).hostname or ""
        self._max_tokens_key = ("max_completion_tokens"
                                if host.endswith(_MAX_COMPLETION_HOSTS) else "max_tokens")
        # only OpenAI documents prompt_cache_key on Chat Completions; others may reject it
        self._cache_key = cache_key if host.endswith("api.openai.com") else ""

    def request_body(self, items: list[Item],
                     tools: list[dict[str, Any]]) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": encoded.array(portable_json(item) for item in items),
            "stream": True,
            "stream_options": {"include_usage": True},
            self._max_tokens_key: self.max_output_tokens,
        }
        if tools:  # a tool another wire has built in goes as the function it also is
            body["tools"] = [{"type": "function", "function": t["function"]} for t in tools]
        if self._cache_key:
            body["prompt_cache_key"] = self._cache_key
        if self.service_tier:
            body["service_tier"] = self.service_tier
        return encoded.dumps(body).encode()

    def prepare(self, items: list[Item]) -> None:
        encoded.prepare(items, portable_json)

    def stream(self, turn: int, items: list[Item],
               tools: list[dict[str, Any]]) -> AsyncIterator[Event]:
        return self.post_stream(turn, "/chat/completions", self.request_body(items, tools),
                                ChatParser(turn))
