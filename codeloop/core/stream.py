"""The event stream: stamps each event with the session clock and hands it to every subscriber.

A subscriber that raises (a rendering bug, a closed pipe) never fails the producer: its first
failure is reported to the other subscribers as an `error` event (kind `subscriber`), and the
session goes on; it still gets the events that follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from codeloop.core.events import ErrorEvent, Event
from codeloop.core.kinds import ErrorKind

if TYPE_CHECKING:
    from codeloop.core.redact import Redactor


Subscriber = Callable[[Event], None]


class EventStream:
    """Stamps each event with the session clock and hands it to every subscriber, in order.

    With a redactor, subscribers get the events it lets out (secrets scrubbed); `emit` still
    returns the producer's own event, untouched.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        self._start = time.perf_counter()
        self._subscribers: list[Subscriber] = []
        self._redactor = redactor
        self._failed: list[Subscriber] = []  # those whose failure was reported

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def now(self) -> float:
        """Seconds since the session started."""
        return time.perf_counter() - self._start

    def redact(self, text: str) -> str:
        """`text` fit to print: for what a front end shows outside the stream (an exception)."""
        return self._redactor.text(text) if self._redactor else text

    def emit(self, event: Event) -> Event:
        event.t = self.now()
        for shown in self._redactor.filter(event) if self._redactor else (event,):
            self._hand_out(shown)
        return event

    def _hand_out(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception as exc:  # noqa: BLE001 - a consumer's bug is not the session's
                if subscriber in self._failed:
                    continue
                self._failed.append(subscriber)
                name = getattr(subscriber, "__qualname__", type(subscriber).__qualname__)
                self._hand_out(ErrorEvent(
                    kind=ErrorKind.SUBSCRIBER, t=self.now(), message=self.redact(
                        f"{name} failed on a {event.type} event and may show less from now on: "
                        f"{type(exc).__name__}: {exc}")))
