"""The headless human-readable printer: progress on stderr and the final summary.

A consumer of events only; it decides nothing and words nothing (the presenter does). Model text
streams through as it arrives, up to a bound: a reply or message of megabytes (a huge patch)
shows its head and its tail, and how much was left out between them. An applied patch is shown
compactly under its line, in colour on a terminal (never under NO_COLOR or into a file).
"""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING

from codeloop.core.events import (
    Event,
    PatchApplied,
    PatchProposed,
    PatchRejected,
    SessionEnd,
    SessionStart,
    TurnEnd,
    TurnStart,
    UserMessage,
)
from codeloop.frontends.presenter import (
    DiffLine,
    Style,
    bounded_stream,
    compact_diff,
    left_out,
    present,
    tiers_text,
)

if TYPE_CHECKING:
    from codeloop.core.bounded import BoundedText

# the user typed these (the REPL's input, the task in the first line); a notice is shown: a
# command's answer leaves to it what it announces (`agent.commands`)
SHOWN_ELSEWHERE = frozenset({UserMessage})
# SGR codes per diff line kind; context keeps the terminal's own colour (readable on any theme)
DIFF_SGR = {DiffLine.FILE: "1", DiffLine.HUNK: "36", DiffLine.ADDED: "32",
            DiffLine.REMOVED: "31", DiffLine.CONTEXT: "", DiffLine.MORE: "2"}


def wants_colour(stream: IO[str]) -> bool:
    """Colour only for a terminal, and never where NO_COLOR is set (no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb" \
        and bool(isatty and isatty())


class ProgressPrinter:
    """Writes what happens, as it happens, for a person watching a terminal or a CI log."""

    def __init__(self, stream: IO[str] | None = None, *, diffs: bool = True,
                 colour: bool | None = None) -> None:
        self._out = stream or sys.stderr
        self._text: BoundedText | None = None  # the text streaming now: its head is written
        self._diffs = diffs  # False: `--quiet`, the patch's line only
        self._colour = wants_colour(self._out) if colour is None else colour
        self._proposed: list[str] = []  # the running turn's patches, shown once applied
        self._patches = {PatchProposed: self._propose, PatchRejected: self._forget,
                         TurnStart: self._forget, SessionStart: self._asked,
                         TurnEnd: self._served}
        self._tier_asked = ""
        self._tiers_served: dict[str, int] = {}  # tier -> turns it served (the final summary)

    def __call__(self, event: Event) -> None:
        if track := self._patches.get(type(event)):
            track(event)
        if type(event) in SHOWN_ELSEWHERE:
            return
        for shown in present(event):
            if shown.style == Style.MODEL:
                self._stream(shown.text)
            else:
                self._line(shown.text)
        if isinstance(event, PatchApplied):
            self._show_applied(event)
        elif isinstance(event, SessionEnd) and (tiers := tiers_text(self._tier_asked,
                                                                     self._tiers_served)):
            self._line(tiers)

    def _asked(self, event: SessionStart) -> None:
        self._tier_asked = event.service_tier

    def _served(self, event: TurnEnd) -> None:
        if tier := event.cache.get("service_tier"):
            self._tiers_served[tier] = self._tiers_served.get(tier, 0) + 1

    def _propose(self, event: PatchProposed) -> None:
        self._proposed.append(event.patch)

    def _forget(self, _: Event) -> None:
        self._proposed.clear()

    def _show_applied(self, event: PatchApplied) -> None:
        patches, self._proposed = self._proposed, []
        if not (self._diffs and event.files):
            return
        for kind, line in (shown for patch in patches for shown in compact_diff(patch)):
            sgr = DIFF_SGR[kind] if self._colour else ""
            self._line(f"  \x1b[{sgr}m{line}\x1b[0m" if sgr else f"  {line}")

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
