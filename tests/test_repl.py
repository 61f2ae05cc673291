"""`codeloop --plain`, the line REPL, driven through a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

from tests.conftest import PYTEST_CMD, fix_diff, make_repo
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall


class Terminal:
    """A child process on a pty: type into it, read what it printed."""

    def __init__(self, args: list[str], cwd, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(args, cwd=cwd, env=env, stdin=slave, stdout=slave,
                                        stderr=slave, close_fds=True)
        os.close(slave)
        self.output = ""

    def read_until(self, text: str, timeout: float = 30.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.output[start:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared in:\n{self.output[-2000:]}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 65536).decode("utf-8", "replace")
                except OSError:
                    break
        return self.output

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            code = self.process.wait(timeout=20)
        finally:
            os.close(self.master)
        return code


def test_plain_mode_runs_a_turn_then_commands_then_quits(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    env = {**isolated_env, "PROMPT_TOOLKIT_NO_CPR": "1", "XDG_STATE_HOME": str(tmp_path / "st"),
           "TERM": "xterm"}
    reply = Reply(text="Fixing the page count.",
                  tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))])
    with ScriptedModelServer([reply]) as server:
        terminal = Terminal([sys.executable, "-m", "codeloop", "--plain", "--base-url",
                             server.base_url, "--test-cmd", PYTEST_CMD], repo, env)
        terminal.read_until("tests: 2 failed")  # pre-warmed baseline, while at the prompt
        time.sleep(0.3)
        terminal.type("fix the pager\r")
        terminal.read_until("Fixing the page count.")
        terminal.read_until("tests: 7 passed")
        output = terminal.read_until("turn 1: applied")  # the one-line latency summary
        terminal.read_until("›", start=output.index("turn 1: applied"))  # back at the prompt
        terminal.type("/di")
        time.sleep(0.3)
        terminal.type("\t")  # Tab completes the slash command
        time.sleep(0.3)
        terminal.type("\r")
        output = terminal.read_until("+    return (total + per_page - 1) // per_page")
        terminal.read_until("›", start=output.index("+    return (total"))
        time.sleep(0.3)
        terminal.type("/quit")
        time.sleep(0.3)
        terminal.type("\r")
        assert terminal.close() == 0
    history = (tmp_path / "st" / "codeloop" / "repl-history").read_text()
    assert "fix the pager" in history


def test_the_prompt_is_on_screen_while_the_session_starts(tmp_path, isolated_env):
    # before: the start-up's lines were written over the prompt, which came back only once a
    # first message had been sent
    repo = make_repo(tmp_path, "offbyone")
    env = {**isolated_env, "PROMPT_TOOLKIT_NO_CPR": "1", "XDG_STATE_HOME": str(tmp_path / "st"),
           "TERM": "xterm"}
    with ScriptedModelServer([]) as server:
        terminal = Terminal([sys.executable, "-m", "codeloop", "--plain", "--base-url",
                             server.base_url, "--test-cmd", PYTEST_CMD], repo, env)
        output = terminal.read_until("tests: 2 failed")  # the baseline, with nothing typed
        terminal.read_until("›", start=output.index("tests: 2 failed"))  # drawn again under it
        terminal.type("\x04")  # Ctrl-D at the prompt: leave (the tests still fail: exit 1)
        assert terminal.close() == 1


def test_the_repl_shows_the_applied_diff_in_colour(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    env = {**isolated_env, "PROMPT_TOOLKIT_NO_CPR": "1", "XDG_STATE_HOME": str(tmp_path / "st"),
           "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    reply = Reply(text="Fixing the page count.",
                  tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))])
    with ScriptedModelServer([reply]) as server:
        terminal = Terminal([sys.executable, "-m", "codeloop", "--plain", "--base-url",
                             server.base_url, "--test-cmd", PYTEST_CMD], repo, env)
        terminal.read_until("tests: 2 failed")
        time.sleep(0.3)
        terminal.type("fix the pager\r")
        output = terminal.read_until("turn 1: applied")
        applied = output[output.index("patch applied to pager/paginate.py"):]
        assert "\x1b[32m+    return (total + per_page - 1) // per_page\x1b[0m" in applied
        assert "\x1b[31m-    return total // per_page + 1 if total else 0\x1b[0m" in applied
        terminal.read_until("›", start=output.index("turn 1: applied"))
        terminal.type("\x04")
        assert terminal.close() == 0
