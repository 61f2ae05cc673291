"""Re-indenting a hunk's added lines to the indentation the file uses where the hunk lands.

Owns the mapping from the hunk's indentation to the file's, learnt from the lines both share;
pure: text in, text out.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip(" \t"))]


def _unit(indents: list[str]) -> str | None:
    """One level of indentation among `indents`: a tab, or the spaces they are multiples of."""
    used = [indent for indent in indents if indent]
    if used and all(set(indent) == {"\t"} for indent in used):
        return "\t"
    if used and all(set(indent) == {" "} for indent in used):
        return " " * math.gcd(*map(len, used))
    return None


def _unchanged(line: str) -> str:
    return line


def reindent(hunk_side: list[str], file_side: list[str]) -> Callable[[str], str]:
    """How the hunk's added lines must be indented to fit the file, learnt from the context and
    removed lines placed on the file's: unchanged unless their indentation differed (placement
    tolerated it), else an indentation seen there maps as it did, and any other level of the
    hunk's unit becomes that level of the file's, shifted by as many levels as the seen ones
    were (a hunk written one level too shallow stays one level too shallow nowhere)."""
    if hunk_side == file_side:  # (the usual case: placed exactly, nothing to learn)
        return _unchanged
    pairs = {_indent(h): _indent(f) for h, f in zip(hunk_side, file_side, strict=True)
             if h.strip()}
    if all(h == f for h, f in pairs.items()):
        return _unchanged
    ours, theirs = _unit(list(pairs)), _unit(list(pairs.values()))
    shifts = {len(f) // len(theirs) - len(h) // len(ours) for h, f in pairs.items()
              } if ours and theirs else set()
    shift = shifts.pop() if len(shifts) == 1 else None

    def fit(line: str) -> str:
        indent = _indent(line)
        if indent in pairs:
            return pairs[indent] + line[len(indent):]
        levels = len(indent) // len(ours) if ours else 0
        if shift is not None and theirs and indent == ours * levels and levels + shift >= 0:
            return theirs * (levels + shift) + line[len(indent):]
        return line
    return fit
