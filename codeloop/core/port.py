"""The port between the agent and its front ends: all a front end may know of a session.

The TUI, the line REPL, the headless printer — and the editor-protocol server and batch runner
to come — hold an `Agent` and an `EventSource`, never the session itself: they subscribe to the
events, send user messages and slash commands, read a status line's figures, and end it.
Watching a recording needs only an `EventSource`. The command catalogue (names, help,
completion) lives here too, because front ends complete and list commands without an agent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from codeloop.core.events import Event
    from codeloop.core.kinds import ExitCode, SessionOutcome

COMMANDS: dict[str, str] = {
    "/add": "FILE  pin a file into the model's context",
    "/apply": "apply the session's changes to your working tree",
    "/clear": "forget the conversation (the sandbox keeps its commits)",
    "/compact": "replace older turns by a summary now (the latest turns stay verbatim)",
    "/diff": "show the whole session's diff",
    "/help": "list the commands and keys",
    "/model": "NAME  switch the model (no name: show it)",
    "/quit": "leave codeloop (the sandbox branch stays; `codeloop clean` removes it)",
    "/test": "run the tests again",
    "/undo": "put the sandbox back at the previous turn's commit",
}
# commands that touch the sandbox or run tests: one thing at a time, and Ctrl+C cancels them
IDLE_ONLY = ("/test", "/undo", "/apply", "/clear", "/diff", "/compact")


def complete(prefix: str) -> list[str]:
    """Commands starting with `prefix` (which starts with '/')."""
    word = prefix.split(" ", 1)[0]
    return [name for name in COMMANDS if name.startswith(word)]


def help_text(keys: str = "") -> str:
    lines = [f"{name:<8} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines + ([keys] if keys else []))


@dataclass
class Answer:
    """What a command produced: text to show, whether it is a diff, whether to quit."""

    text: str
    is_diff: bool = False
    quit: bool = False
    ok: bool = True


@dataclass
class Status:
    """The figures a status line shows, as they are now."""

    model: str
    transport: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    estimated: bool = False  # some counts are estimated from the text (a cancelled reply's)


class EventSource(Protocol):
    """Where events come from (a live session, or a recording played back)."""

    def subscribe(self, subscriber: Callable[[Event], None]) -> None:
        """Every event from now on, in order, to `subscriber` (secrets already redacted)."""

    def now(self) -> float:
        """Seconds since the session started, on the clock that stamps the events."""

    def redact(self, text: str) -> str:
        """`text` fit to show (secrets scrubbed): for what a front end shows that is no event,
        such as a command's answer or an error's message."""


class Agent(Protocol):
    """A session as its front ends drive it."""

    @property
    def events(self) -> EventSource:
        """The session's events."""

    async def open(self) -> None:
        """Start up: the sandbox, the baseline tests, the connection (pre-warm while the user
        types). Raises a `CodeloopError` when the session cannot start."""

    async def ask(self, text: str) -> str:
        """Work on one user message until it is done; returns the outcome. Cancelling it
        (Ctrl-C) stops the stream and the tests and leaves the sandbox at its last commit."""

    async def command(self, line: str) -> Answer:
        """Carry out one slash-command line (`/quit` is answered, and left to the front end)."""

    def status(self) -> Status:
        """The figures of a status line."""

    async def finish(self, outcome: SessionOutcome) -> ExitCode:
        """End the session (its `session.end` event, the connection, the test runner) and
        return the exit code its tests decide."""
