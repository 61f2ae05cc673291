"""Long text kept to its head and tail: test output, tool output, a huge reply on screen.

A run's output or a patch can be megabytes; what is shown or sent keeps its first and last
characters and says how many it left out between them. Pure.
"""

from __future__ import annotations

from collections.abc import Callable

HEAD_CHARS = 12_000
TAIL_CHARS = 12_000


def elided(count: int) -> str:
    """What stands for `count` characters a BoundedText dropped (in what the model reads)."""
    return f"\n[... {count} characters elided ...]\n"


class BoundedText:
    """Keeps the first and last characters of a long text and counts what it drops; `marker`
    says how many were dropped, between the two."""

    def __init__(self, head: int = HEAD_CHARS, tail: int = TAIL_CHARS,
                 marker: Callable[[int], str] = elided) -> None:
        self.head_limit, self.tail_limit, self.marker = head, tail, marker
        self.head = ""
        self.tail = ""
        self.elided = 0

    def add(self, text: str) -> str:
        """Append; returns the part that went into the head (what may be shown live)."""
        room = self.head_limit - len(self.head)
        shown, rest = text[:max(room, 0)], text[max(room, 0):]
        self.head += shown
        if rest:
            self.tail += rest
            if len(self.tail) > self.tail_limit:
                cut = len(self.tail) - self.tail_limit
                self.elided += cut
                self.tail = self.tail[cut:]
        return shown

    def text(self) -> str:
        return self.head + (self.marker(self.elided) if self.elided else "") + self.tail


def bound(text: str, head: int = HEAD_CHARS, tail: int = TAIL_CHARS,
          marker: Callable[[int], str] = elided) -> str:
    bounded = BoundedText(head, tail, marker)
    bounded.add(text)
    return bounded.text()
