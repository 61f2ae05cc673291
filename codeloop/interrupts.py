"""Ctrl-C outside an asyncio loop: noted, never raised in the middle of a line.

Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be:
halfway through an import, between starting a sandbox and keeping its handle, right after the
recording was opened. Until a loop takes SIGINT over (and again once it lets go), codeloop's
handler only notes the press; the CLI acts on it where stopping is safe. Imported by the entry
point before anything else, so it imports only `signal` (and `typing`, which the CLI needs too).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

class CtrlC:
    """The process's SIGINT handler: `pressed` once Ctrl-C came. `ignored`: SIGINT was ignored
    when codeloop started (a non-interactive shell starts its background jobs so, because a
    Ctrl-C at the script reaches them too); codeloop then never takes it over."""

    def __init__(self) -> None:
        self.pressed = False
        self.ignored = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.pressed = True


CTRL_C = CtrlC()


def hold_ctrl_c() -> CtrlC:
    """Make SIGINT a noted press from now on (again, once a loop has let go of it); returns the
    one handler, so a press noted by the entry point is still known to `main`. A SIGINT
    ignored by whoever started codeloop stays ignored."""
    CTRL_C.ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if not CTRL_C.ignored:
        signal.signal(signal.SIGINT, CTRL_C)
    return CTRL_C


def let_go_of_sigint(loop: AbstractEventLoop, handler: Callable[[int, FrameType | None], Any]
                     ) -> None:
    """Remove the loop's SIGINT handler and put `handler` back. The loop puts Python's own in
    between, whose KeyboardInterrupt a press at that instant would raise wherever the main thread
    goes next: such a press comes after the work it was for, and is dropped, and the removal
    (cut short, perhaps before the loop's wakeup fd was let go of) is done again."""
    while True:
        try:
            loop.add_signal_handler(signal.SIGINT, _dropped)  # (the same state, every time)
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, handler)
            return
        except KeyboardInterrupt:
            continue


def _dropped() -> None:
    """A press while the loop lets go of SIGINT: after the work it was for."""
