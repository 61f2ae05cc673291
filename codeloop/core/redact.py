"""Secrets off every output: the one function that scrubs them, and the event filter that runs it.

The event stream hands each subscriber (the recorder and `--json`, the progress printer, the line
REPL, the TUI) only what `Redactor.filter` returns, so no output path can forget to redact. What
a front end prints outside the event stream (an exception's message, a command's answer) goes
through `EventStream.redact`, the same function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from codeloop.core.events import Event, ModelTextDelta, TestOutput

REDACTED = "[redacted]"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every occurrence of each secret value replaced by REDACTED; the longest
    first, so a secret that begins with another goes whole."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class Redactor:
    """Scrubs the secret values out of events before anyone sees them.

    Streamed text is scrubbed across its pieces: the end of a piece that could be the start of a
    secret is held back, unscrubbed, until the next piece shows whether it is one (a model
    streams a key as several tokens; a whole secret may be the start of a longer one). Held text
    goes out, scrubbed, before any other event, so nothing is lost or reordered.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(s for s in secrets if s)
        self._held: ModelTextDelta | TestOutput | None = None  # its end waits for the next piece

    def text(self, text: str) -> str:
        return redact(text, self.secrets)

    def filter(self, event: Event) -> list[Event]:
        """The events to hand on in place of `event`. Never the loop's own object when a field
        had to change: the conversation keeps what the model really said."""
        held, self._held = self._held, None
        if isinstance(event, ModelTextDelta | TestOutput):  # pieces a secret can straddle
            if held is not None and type(held) is type(event) and held.turn == event.turn:
                return self._piece(event, held.text + event.text)
            return [*self._let_out(held), *self._piece(event, event.text)]
        changed = {name: scrubbed for name, value in vars(event).items() if name != "t"
                   for scrubbed in [self._scrub(value)] if scrubbed is not value}
        return [*self._let_out(held), dataclasses.replace(event, **changed) if changed else event]

    def _let_out(self, held: ModelTextDelta | TestOutput | None) -> list[Event]:
        """What was held back, scrubbed: no next piece of it came."""
        return [dataclasses.replace(held, text=self.text(held.text))] if held else []

    def _piece(self, event: ModelTextDelta | TestOutput, text: str) -> list[Event]:
        """A streamed piece (after what was held back, unscrubbed): out, scrubbed, up to where
        a secret may start."""
        keep = self._cut(text)
        if keep < len(text):
            self._held = dataclasses.replace(event, text=text[keep:])
        if not keep:
            return []
        shown = self.text(text[:keep])
        return [event if shown == event.text else dataclasses.replace(event, text=shown)]

    def _scrub(self, value: Any) -> Any:
        """`value` with secrets replaced in every string it holds; the same object if none."""
        if isinstance(value, str):
            return self.text(value)  # (`redact` returns the very string when nothing matched)
        if isinstance(value, dict):
            items = {key: self._scrub(item) for key, item in value.items()}
            return items if any(items[k] is not value[k] for k in value) else value
        if isinstance(value, list):
            parts = [self._scrub(item) for item in value]
            return parts if any(a is not b for a, b in zip(parts, value, strict=True)) else value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a record (a test
            # failure): a copy when one of its fields held a secret
            changed = {name: scrubbed for name, item in vars(value).items()
                       for scrubbed in [self._scrub(item)] if scrubbed is not item}
            return dataclasses.replace(value, **changed) if changed else value
        return value

    def _cut(self, text: str) -> int:
        """Where unscrubbed `text` may be cut: before its longest end that is the start of a
        secret, and never inside a whole secret (that end may begin inside one)."""
        cut = len(text) - self._unfinished(text)
        moved = True
        while moved:
            moved = False
            for secret in self.secrets:
                at = text.find(secret, max(0, cut - len(secret) + 1))
                if at != -1 and at < cut:  # (so it ends after the cut)
                    cut, moved = at, True
        return cut

    def _unfinished(self, text: str) -> int:
        """Length of the longest end of `text` that some secret begins with (but is not)."""
        longest = 0
        for secret in self.secrets:
            start = max(0, len(text) - len(secret) + 1)
            at = text.find(secret[0], start)
            while at != -1 and len(text) - at > longest:
                if secret.startswith(text[at:]):
                    longest = len(text) - at
                    break
                at = text.find(secret[0], at + 1)
        return longest
