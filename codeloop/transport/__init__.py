"""Model transports: the interface (`base.py`), one module per wire, and `make_client`, which
picks the wire for the configuration (imported lazily: a session loads only the wire it uses).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from codeloop.transport.base import ModelClient, TransportError, is_loopback

__all__ = ["ModelClient", "TransportError", "is_loopback", "make_client", "pick_transport"]


# `transport = "auto"`: the wire picked by provider, first match on the base URL's host wins.
# Everything else (Cerebras, Groq, OpenRouter, vLLM, llama.cpp, Ollama, ...) speaks Chat
# Completions. An auto choice that answers 404 falls back to chat once, with an event.
AUTO_TRANSPORTS: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "responses-ws"),
    ("api.x.ai", "responses-ws"),
    (".openai.azure.com", "responses-ws"),
)


def pick_transport(transport: str, base_url: str) -> str:
    if transport != "auto":
        return transport
    host = urlsplit(base_url).hostname or ""
    return next((wire for suffix, wire in AUTO_TRANSPORTS if host.endswith(suffix)), "chat")


def make_client(transport: str, base_url: str, model: str, api_key: str | None,
                max_output_tokens: int, request_timeout_s: float,
                responses_store: bool = False, cache_key: str = "",
                service_tier: str = "") -> ModelClient:
    """Build the client for the configured transport (`auto` picks by provider).

    `cache_key` becomes `prompt_cache_key` (one per repository) where the provider supports it.
    `service_tier`, when set, goes unchanged in every request; a capacity refusal of it falls
    back to the default tier once (`transport.tier`).
    """
    client = _wire_client(transport, base_url, model, api_key, max_output_tokens,
                          request_timeout_s, responses_store, cache_key)
    if not service_tier:
        return client
    from codeloop.transport.tier import TierClient

    return TierClient(client, service_tier)


def _wire_client(transport: str, base_url: str, model: str, api_key: str | None,
                 max_output_tokens: int, request_timeout_s: float, responses_store: bool,
                 cache_key: str) -> ModelClient:
    from codeloop.transport.chat import ChatCompletionsClient

    wire = pick_transport(transport, base_url)
    args = (base_url, model, api_key, max_output_tokens, request_timeout_s)
    chat = ChatCompletionsClient(*args, cache_key=cache_key)
    if wire == "chat":
        return chat
    if wire == "responses-http":
        from codeloop.transport.responses_http import ResponsesHttpClient

        client: ModelClient = ResponsesHttpClient(*args, store=responses_store,
                                                  cache_key=cache_key)
    else:
        from codeloop.transport.responses_ws import ResponsesWebSocketClient

        client = ResponsesWebSocketClient(*args, store=responses_store, cache_key=cache_key)
    if transport == "auto":
        from codeloop.transport.fallback import FallbackClient

        return FallbackClient(client, chat)
    return client
