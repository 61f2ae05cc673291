"""The conversation's shape and size: the cache-friendly layout, prefix reuse, and compaction.

Layout, in the order a provider's prompt cache sees it, and what may change:

  [system instructions] [tool schemas] [project context: AGENTS.md + repo map]   byte-identical
  [summary of older turns]                                                       replaced rarely
  [the task, then turn after turn: the reply, tool results, test feedback]       append-only

Nothing volatile (times, counters, temp paths, unordered output) goes before the history; a file
that changes is re-shown by appending, never by rewriting an earlier message. This module measures
how much of each request repeats the previous one from the start (prefix reuse; bytes, as no
tokenizer is available offline), names the section where they first differ, and plans a
compaction: older turns out, a summary in, the most recent turns kept verbatim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from codeloop.core.conversation import Item, Reply, UserText
from codeloop.core.encoded import canonical_json

SECTIONS = ("instructions", "tools", "project context", "summary", "history")
SUMMARY_MARK = "Summary of the earlier turns of this session"
BYTES_PER_TOKEN = 4  # estimate used where no tokenizer is available (labelled as such)
# context windows (tokens) by model-name prefix; first match wins, else DEFAULT_WINDOW
WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576), ("gpt-5", 400_000), ("o3", 200_000), ("o4", 200_000),
    ("gpt-4o", 128_000), ("gpt-oss", 131_072), ("llama", 131_072), ("qwen", 32_768),
    ("gemma", 131_072), ("claude", 200_000),
)
DEFAULT_WINDOW = 128_000


def window_for(model: str, configured: int) -> int:
    """The model's context window in tokens: the configured one, else a known default."""
    if configured > 0:
        return configured
    name = model.lower().rsplit("/", 1)[-1]
    return next((size for prefix, size in WINDOWS if name.startswith(prefix)), DEFAULT_WINDOW)


def estimate_tokens(text: str) -> int:
    return (len(text.encode("utf-8")) + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def _lines(texts: list[str]) -> str:
    # one item per line, no closing bracket: appending keeps the earlier text a prefix
    return "".join(text + "\n" for text in texts)


def sections(items: list[Item], tools: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The request as the provider's cache sees it, cut into the named layout sections."""
    texts = [canonical_json(item) for item in items]
    parts = [("instructions", _lines(texts[:1])),
             ("tools", _lines([json.dumps(tool, ensure_ascii=False, separators=(",", ":"),
                                          sort_keys=True) for tool in tools])),
             ("project context", _lines(texts[1:2]))]
    at = 2
    if len(items) > at and isinstance(items[at], UserText) and items[at].text.startswith(
            SUMMARY_MARK):
        parts.append(("summary", _lines(texts[at:at + 1])))
        at += 1
    parts.append(("history", _lines(texts[at:])))
    return parts


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix (compares blocks first, then characters)."""
    limit, block, at = min(len(a), len(b)), 4096, 0
    while at + block <= limit and a[at:at + block] == b[at:at + block]:
        at += block
    while at < limit and a[at] == b[at]:
        at += 1
    return at


@dataclass
class PrefixProbe:
    """How much of this request repeats the previous one, and where it first differs."""

    reuse: float
    sent_tokens: int
    changed: str  # the first section that differs ("" when all of the previous one repeats)


class PrefixTracker:
    """Remembers the previous request to measure the next one against it."""

    def __init__(self) -> None:
        self._previous: list[tuple[str, str]] = []

    def measure(self, items: list[Item], tools: list[dict[str, Any]]) -> PrefixProbe:
        current = sections(items, tools)
        text = "".join(body for _, body in current)
        previous_text = "".join(body for _, body in self._previous)
        common = _common_prefix(text, previous_text)
        changed = ""
        if self._previous and common < len(previous_text):
            end = 0  # the section of the previous request where the bytes stopped matching
            for name, body in self._previous:
                end += len(body)
                if common < end:
                    changed = name
                    break
        self._previous = current
        reuse = common / len(text) if text and previous_text else 0.0
        return PrefixProbe(round(reuse, 4), estimate_tokens(text), changed)


def turn_groups(history: list[Item]) -> list[list[Item]]:
    """History cut into turns: each reply of the model with the items that answer it."""
    groups: list[list[Item]] = []
    for item in history:
        if isinstance(item, Reply) or not groups:
            groups.append([item])
        else:
            groups[-1].append(item)
    return groups


def summary_message(facts: str, model_summary: str) -> UserText:
    text = f"{SUMMARY_MARK} (older turns were replaced by this):\n\n{facts}"
    if model_summary.strip():
        text += f"\n\nWhat was decided and tried, in the model's words:\n{model_summary.strip()}"
    return UserText(text)


SUMMARY_REQUEST = (
    "Codeloop is about to replace the older turns of this conversation with a summary. Write "
    "that summary now, as plain text without tool calls and without patches: the decisions made, "
    "the approaches tried and why they failed or worked, and what remains to do. At most 250 "
    "words.")
