"""Finding the edits in a model reply: `apply_patch` tool calls and fenced ```diff blocks.

Both are always accepted, whatever the edit mode offered. Owns extraction only; placing and
applying the diffs belongs to `patch` and `Sandbox`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_FENCE = re.compile(r"^```[ \t]*([\w+-]*)[^\n]*\n(.*?)(^```[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_DIFF_LANGS = {"diff", "patch", "udiff"}


@dataclass
class ProposedEdit:
    """One unified diff and where it came from (`tool:<call id>` or `text`)."""

    source: str
    diff: str


def _looks_like_diff(body: str) -> bool:
    return bool(re.search(r"^--- .*\n\+\+\+ ", body, re.MULTILINE)) and "@@" in body


def diffs_in_text(text: str, cut_off: bool = False) -> list[str]:
    """Unified diffs in fenced blocks (```diff, ```patch, or an untagged block that is a diff).

    A last block left unclosed counts, unless the reply was cut off at the token limit.
    """
    found = []
    for match in _FENCE.finditer(text):
        lang, body, closed = match.group(1).lower(), match.group(2), bool(match.group(3))
        if cut_off and not closed:
            continue
        if (lang in _DIFF_LANGS or not lang) and _looks_like_diff(body):
            found.append(body)
    return found


def patch_argument(arguments: str) -> str:
    """The diff inside an `apply_patch` call's JSON arguments; raises ValueError if absent."""
    try:
        data = json.loads(arguments) if arguments.strip() else {}
    except ValueError as exc:
        raise ValueError(f"apply_patch arguments are not valid JSON: {exc}") from None
    if isinstance(data, dict):
        for key in ("patch", "diff", "input"):
            if isinstance(data.get(key), str) and data[key].strip():
                return data[key]
    raise ValueError("apply_patch needs a JSON object with a non-empty string field 'patch'")
