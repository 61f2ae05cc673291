"""`codeloop --plain`: the interactive line REPL, for terminals where a full-screen app is unwanted.

Owns the prompt (prompt-toolkit: history file, multi-line input with Ctrl+J, slash-command
completion) and Ctrl-C handling; the model's text and one latency line per turn are printed by
the same progress printer headless mode uses, on stdout. It drives the session through the
`Agent` port only.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.patch_stdout import patch_stdout

from codeloop.core.dirs import state_dir
from codeloop.core.kinds import ExitCode, SessionOutcome
from codeloop.core.port import COMMANDS, Agent, Answer, complete
from codeloop.frontends.headless import ProgressPrinter
from codeloop.frontends.presenter import CANCELLED, failure_text
from codeloop.interrupts import let_go_of_sigint

T = TypeVar("T")
BANNER = ("codeloop line mode · Enter sends · Ctrl+J new line · Tab completes /commands · "
          "Ctrl-C cancels a turn, or quits at the prompt · /help")


class SlashCompleter(Completer):
    def get_completions(self, document, complete_event):
        text = document.text_before_cursor
        if text.startswith("/") and " " not in text:
            for name in complete(text):
                yield Completion(name, start_position=-len(text), display_meta=COMMANDS[name])


def _keys() -> KeyBindings:
    keys = KeyBindings()

    @keys.add("enter")
    def _send(event) -> None:
        buffer = event.current_buffer
        state = buffer.complete_state
        if state and (state.current_completion or len(state.completions) == 1):
            buffer.apply_completion(state.current_completion or state.completions[0])
        buffer.validate_and_handle()

    @keys.add("c-j")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    return keys


async def _cancellable(agent: Agent, coro: Coroutine[Any, Any, T]) -> T | None:
    """Run one turn's or command's work; Ctrl-C cancels it and returns to the prompt, and so
    does an error, once reported (None then): nothing that goes wrong in one ends the REPL."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    outside = signal.getsignal(signal.SIGINT)
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        print(f"\n{CANCELLED}", flush=True)
    except Exception as exc:  # noqa: BLE001 - reported; the user decides what next
        print(f"\n{failure_text(exc, agent.events.redact)}", flush=True)
    finally:
        let_go_of_sigint(loop, outside)  # (codeloop's, which only notes a press)
    return None


class _Stdout:
    """Whatever `sys.stdout` is at each write: while the prompt is up, prompt-toolkit's proxy,
    which writes above the prompt and draws it again under (the start-up's lines, the
    baseline's), and during a turn the terminal itself."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()


async def _repl(agent: Agent, diffs: bool) -> ExitCode:
    agent.events.subscribe(ProgressPrinter(_Stdout(), diffs=diffs))  # type: ignore[arg-type]
    history_file = state_dir() / "repl-history"
    history_file.parent.mkdir(parents=True, exist_ok=True)
    prompt = PromptSession(history=FileHistory(str(history_file)), multiline=True,
                           key_bindings=_keys(), completer=SlashCompleter(),
                           prompt_continuation="  ")
    print(BANNER, flush=True)
    opening = asyncio.ensure_future(agent.open())  # pre-warm while the user types
    while True:
        try:
            with patch_stdout(raw=True):  # (raw: the printer's colours pass through)
                line = (await prompt.prompt_async("› ")).strip()
        except (KeyboardInterrupt, EOFError):
            break
        if not line:
            continue
        if line.startswith("/"):
            answer = await _cancellable(agent, _command_after(opening, agent, line))
            if answer is None:  # (cancelled, or failed and said so)
                continue
            if answer.quit:
                break
            # not an event, so redacted here: /diff shows what the model wrote (empty: the
            # command's events have said it all)
            if text := agent.events.redact(answer.text):
                print(text, flush=True)
            continue
        await _cancellable(agent, _ask_after(opening, agent, line))
    if not opening.done():
        opening.cancel()
    await asyncio.gather(opening, return_exceptions=True)  # its end is recorded before the last
    return await agent.finish(SessionOutcome.INTERACTIVE)


async def _command_after(opening: asyncio.Future, agent: Agent, line: str) -> Answer:
    if line.split()[0] != "/quit":  # (which needs nothing of a start-up, even a failed one)
        await asyncio.shield(opening)  # a Ctrl-C here cancels the command, not the start-up
    return await agent.command(line)


async def _ask_after(opening: asyncio.Future, agent: Agent, text: str) -> None:
    await asyncio.shield(opening)  # a Ctrl-C here cancels the turn, not the start-up
    await agent.ask(text)


def run_repl(agent: Agent, diffs: bool = True) -> int:
    """The REPL on `agent`; `diffs` False (`--quiet`): an applied patch is one line, no diff."""
    return asyncio.run(_repl(agent, diffs))
