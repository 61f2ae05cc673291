"""What each slash command does to a session, and the text it answers with.

The catalogue (names, help, completion) is `core.port`'s; the front ends only display the
answer. `/quit` is answered with `quit=True` and left to the front end.
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
            return Answer(f"sandbox back at commit {session.undo()[:10]}")
        if name == "/diff":
            diff = session.diff()
            return Answer(diff or "no changes yet", is_diff=bool(diff))
        if name == "/apply":
            files = session.apply()
            return Answer("applied to your working tree: " + (", ".join(files) or "nothing"))
        if name == "/test":
            return Answer(test_report(await session.rerun_tests()))
        if name == "/add":
            if not arg:
                return Answer("usage: /add FILE", ok=False)
            return Answer(f"pinned {session.pin(arg)}")
        if name == "/model":
            if arg:
                session.set_model(arg)
            return Answer(f"model: {session.config.model}")
        if name == "/compact":
            done = await session.compact("manual")
            return Answer("compacted" if done else "nothing old enough to compact")
        if name == "/clear":
            session.clear()
            return Answer("conversation cleared")
    except (SandboxError, PatchError) as exc:
        return Answer(str(exc), ok=False)
    matches = complete(name)
    hint = f" (did you mean {', '.join(matches)}?)" if matches else ""
    return Answer(f"unknown command {name}{hint}; /help lists them", ok=False)
