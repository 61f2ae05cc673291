"""Slash commands shared by the TUI and the line REPL: their names, help, completion, effect.

Owns what each command does to a Session and the text it answers with; the front ends only
display the answer. `/quit` is answered with `quit=True` and left to the front end.
"""

from __future__ import annotations

from dataclasses import dataclass

from codeloop.agent.session import Session
from codeloop.context.prompt import test_report
from codeloop.edits.patch import PatchError
from codeloop.workspace.sandbox import SandboxError

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


@dataclass
class Answer:
    """What a command produced: text to show, whether it is a diff, whether to quit."""

    text: str
    is_diff: bool = False
    quit: bool = False
    ok: bool = True


def complete(prefix: str) -> list[str]:
    """Commands starting with `prefix` (which starts with '/')."""
    word = prefix.split(" ", 1)[0]
    return [name for name in COMMANDS if name.startswith(word)]


def help_text(keys: str = "") -> str:
    lines = [f"{name:<8} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines + ([keys] if keys else []))


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
