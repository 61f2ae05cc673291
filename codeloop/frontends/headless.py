"""The headless human-readable printer: progress on stderr and the final summary.

A consumer of events only; it decides nothing and words nothing (the presenter does). Model text
streams through as it arrives, up to a bound: a reply or message of megabytes (a huge patch)
shows its head and its tail, and how much was left out between them.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING

from codeloop.core.events import Event, Notice, UserMessage
from codeloop.frontends.presenter import Style, bounded_stream, left_out, present

if TYPE_CHECKING:
    from codeloop.core.bounded import BoundedText

# the user typed these (the REPL's input, the task in the first line) or the command that
# caused them answers with the same news
SHOWN_ELSEWHERE = frozenset({UserMessage, Notice})


class ProgressPrinter:
    """Writes what happens, as it happens, for a person watching a terminal or a CI log."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._out = stream or sys.stderr
        self._text: BoundedText | None = None  # the text streaming now: its head is written

    def __call__(self, event: Event) -> None:
        if type(event) in SHOWN_ELSEWHERE:
            return
        for shown in present(event):
            if shown.style == Style.MODEL:
                self._stream(shown.text)
            else:
                self._line(shown.text)

    def _line(self, text: str) -> None:
        if self._text is not None:
            self._end_text()
        self._out.write(text + "\n")
        self._out.flush()

    def _stream(self, text: str) -> None:
        """A piece of streaming text: written while within the head, else kept for the tail."""
        if self._text is None:
            self._text = bounded_stream()
        if shown := self._text.add(text):
            self._out.write(shown)
            self._out.flush()

    def _end_text(self) -> None:
        text, self._text = self._text, None
        assert text is not None
        self._out.write((left_out(text.elided) if text.elided else "") + text.tail + "\n")
