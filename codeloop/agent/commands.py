"""What each slash command does to a session, and the text it answers with.

The catalogue (names, help, completion) is `core.port`'s; the front ends only display the
answer. An answer says only what no event has said: where the session announces the effect
(`notice`, `test.done`, `context.compaction`), a front end showing the events has shown it
already, and the answer's text is empty. `/quit` is answered with `quit=True` and left to the
front end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codeloop.context.prompt import test_report
from codeloop.core.port import Answer, complete, help_text
from codeloop.edits.errors import PatchError
from codeloop.workspace.errors import SandboxError

if TYPE_CHECKING:
    from codeloop.agent.session import Session


async def run(session: Session, line: str) -> Answer:
    """Carry out one slash command line."""
    name, _, arg = line.strip().partition(" ")
    arg = arg.strip()
    try:
        if name == "/quit":
            return Answer("bye", quit=True)
        if name == "/help":
            return Answer(help_text())
        if name == "/undo":
            session.undo()  # (its notice says where the sandbox is now)
            return Answer("")
        if name == "/diff":
            diff = session.diff()
            return Answer(diff or "no changes yet", is_diff=bool(diff))
        if name == "/apply":
            session.apply()
            return Answer("")
        if name == "/test":
            # (test.done shows the run and its failures; this says what becomes of it)
            head = test_report(await session.rerun_tests()).split("\n", 1)[0]
            return Answer(f"{head} The model sees it with your next message.")
        if name == "/add":
            if not arg:
                return Answer("usage: /add FILE", ok=False)
            session.pin(arg)
            return Answer("")
        if name == "/model":
            if arg:
                session.set_model(arg)
                return Answer("")
            return Answer(f"model: {session.config.model}")
        if name == "/compact":
            done = await session.compact("manual")
            return Answer("" if done else "nothing old enough to compact")
        if name == "/clear":
            session.clear()
            return Answer("")
    except (SandboxError, PatchError) as exc:
        return Answer(str(exc), ok=False)
    matches = complete(name)
    hint = f" (did you mean {', '.join(matches)}?)" if matches else ""
    return Answer(f"unknown command {name}{hint}; /help lists them", ok=False)
