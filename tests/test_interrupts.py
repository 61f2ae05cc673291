"""Ctrl-C at any moment: the real `python -m codeloop` interrupted from its first line to its last.

Headless sessions get SIGINT at many moments (while the CLI imports, a sweep of delays after,
during the baseline run, during the model's stream, again and again until codeloop is gone, while
the session closes, from the terminal while git makes the sandbox); each must end the same way:
exit 130, no traceback, any recording complete, any sandbox made so far reported. The line REPL
gets its Ctrl-C from a real terminal: a pty whose line discipline signals the whole foreground
process group, as a user's terminal does.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from codeloop.agent.session import Session, SessionSettings
from codeloop.config import Config
from codeloop.core.events import ErrorEvent, ModelTextDelta, SessionEnd
from codeloop.core.stream import EventStream
from codeloop.transport.chat import ChatCompletionsClient
from tests.conftest import PYTEST_CMD, fix_diff, git, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall


class Headless:
    """`python -X importtime -m codeloop --task ...`, its stderr read as it comes (the import
    lines mark how far start-up got; the model's text streams there in text mode)."""

    def __init__(self, repo: Path, env: dict[str, str], args: list[str],
                 sigint_ignored: bool = False) -> None:
        # `sigint_ignored`: started as a non-interactive shell starts a background job
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        self.process = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "codeloop", *args], cwd=repo, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=ignore)
        self.text = ""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        while chunk := os.read(self.process.stderr.fileno(), 65536):
            with self._changed:
                self.text += chunk.decode("utf-8", "replace")
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60) -> None:
        """Until stderr matches the regular expression `pattern`."""
        with self._changed:
            if not self._changed.wait_for(lambda: re.search(pattern, self.text), timeout):
                raise AssertionError(f"{pattern!r} never on stderr:\n{self.text[-3000:]}")

    def interrupt(self, until_gone: bool = False) -> tuple[int, str]:
        """SIGINT to codeloop (only: its children are not signalled), once or (`until_gone`)
        every 0.5 ms until it has exited; then its exit code and all it wrote on stderr."""
        self.process.send_signal(signal.SIGINT)
        while until_gone and self.process.poll() is None:
            time.sleep(0.0005)
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return code, self.text


def imported(module: str) -> str:
    """The `-X importtime` line of a module, once its import has finished."""
    return r"\|\s+" + re.escape(module) + r"\n"


def assert_ended_cleanly(repo: Path, code: int, stderr: str) -> None:
    """Exit 130, no traceback, the recording absent or whole, every worktree reported."""
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    sessions = repo / ".codeloop" / "sessions"
    recordings = sorted(sessions.glob("*.jsonl")) if sessions.is_dir() else []
    assert len(recordings) <= 1
    ends = []
    for recording in recordings:
        events = [json.loads(line) for line in recording.read_text().splitlines()]
        assert events and events[-1]["type"] == "session.end", events[-3:]
        assert events[-1]["outcome"] == "interrupted" and events[-1]["exit_code"] == 130
        ends.append(events[-1])
    listing = git(repo, "worktree", "list", "--porcelain").split("\n\n")
    worktrees = [dict(line.split(" ", 1) for line in block.splitlines() if " " in line)
                 for block in listing if block.strip()][1:]  # (the first is the repo itself)
    for worktree in worktrees:
        assert worktree["worktree"] in stderr, (worktree, stderr[-3000:])
        branch = worktree.get("branch", "").removeprefix("refs/heads/")
        assert branch in stderr, (branch, stderr[-3000:])
        assert [end["branch"] for end in ends] == [branch] * len(ends)


def session_args(server: ScriptedModelServer, test_command: str = PYTEST_CMD) -> list[str]:
    return ["--task", "x", "--base-url", server.base_url, "--test-cmd", test_command]


@pytest.mark.parametrize("delay", [0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5])
def test_ctrl_c_during_start_up_exits_130_with_everything_made_reported(tmp_path, isolated_env,
                                                                         delay):
    # before: a KeyboardInterrupt traceback and a signal exit, with an empty recording or an
    # unreported worktree, depending on the moment
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(text="Looking. " * 100)], tokens_per_s=50) as server:
        run = Headless(repo, isolated_env, session_args(server))
        run.wait_for(imported("codeloop.cli"))  # from here on, `main` runs
        time.sleep(delay)
        code, stderr = run.interrupt()
    assert_ended_cleanly(repo, code, stderr)


def test_ctrl_c_while_codeloop_is_still_importing_exits_130(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([]) as server:
        run = Headless(repo, isolated_env, session_args(server))
        run.wait_for(imported("argparse"))  # the CLI's first import: the rest is still to come
        code, stderr = run.interrupt()
    assert_ended_cleanly(repo, code, stderr)


def test_ctrl_c_during_the_baseline_run_exits_130(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    started = tmp_path / "started"
    with ScriptedModelServer([]) as server:
        run = Headless(repo, isolated_env,
                       session_args(server, f"sh -c 'touch {started}; sleep 60'"))
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        code, stderr = run.interrupt()
    assert_ended_cleanly(repo, code, stderr)


def test_ctrl_c_during_the_stream_exits_130(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(text="Looking" + " closer" * 200)], tokens_per_s=40) as server:
        run = Headless(repo, isolated_env, session_args(server))
        run.wait_for("Looking closer")
        code, stderr = run.interrupt()
    assert_ended_cleanly(repo, code, stderr)


def test_ctrl_c_pressed_again_and_again_until_codeloop_is_gone_exits_130(tmp_path,
                                                                         isolated_env):
    # before: a press while the loop let go of SIGINT, or while the interpreter wound down,
    # gave a KeyboardInterrupt traceback or a signal exit (5 runs in 10)
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(text="Looking" + " closer" * 200)], tokens_per_s=40) as server:
        run = Headless(repo, isolated_env, session_args(server))
        run.wait_for("Looking closer")
        code, stderr = run.interrupt(until_gone=True)
    assert_ended_cleanly(repo, code, stderr)


def test_a_ctrl_c_while_the_session_closes_does_not_cut_its_end_short(tmp_path, monkeypatch):
    # before: the second press cancelled `close` itself: no session.end, a CancelledError
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "offbyone")
    seen: list[object] = []
    events = EventStream()
    events.subscribe(seen.append)

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        with ScriptedModelServer([Reply(text="Looking" + " closer" * 200)],
                                 tokens_per_s=40) as server:
            config = Config(model="scripted", base_url=server.base_url, test_command=PYTEST_CMD)
            client = ChatCompletionsClient(server.base_url, "scripted", None, 1024, 30.0)
            settings = SessionSettings(session_id="closing", task="x", test_command=PYTEST_CMD)
            running = asyncio.ensure_future(
                Session(repo, config, settings, client, events).run())

            def press(event: object) -> None:  # Ctrl-C, as run_headless delivers it
                if isinstance(event, ModelTextDelta) and not running.cancelling():
                    loop.call_soon(running.cancel)  # mid-stream
                elif isinstance(event, ErrorEvent) and event.kind == "interrupted":
                    loop.call_soon(running.cancel)  # and again, as the session closes

            events.subscribe(press)
            return await running

    assert asyncio.run(scenario()) == 130
    assert isinstance(seen[-1], SessionEnd) and seen[-1].outcome == "interrupted"


class Terminal:
    """codeloop on a pty that is its controlling terminal, codeloop's process group in the
    foreground: a typed Ctrl-C is signalled by the line discipline to that whole group, as in a
    user's terminal (children included)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.output = ""

    def _read(self, timeout: float) -> bool:
        """Add what codeloop printed within `timeout` to the output; False once it has ended."""
        if select.select([self.master], [], [], timeout)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: codeloop has ended, its side of the pty is closed
                return False
            self.output += chunk.decode("utf-8", "replace")
            return bool(chunk)
        return True

    def read_until(self, text: str, start: int = 0, timeout: float = 60) -> int:
        """Where `text` first appears at or after `start` in the output."""
        deadline = time.monotonic() + timeout
        while text not in self.output[start:]:
            if time.monotonic() > deadline or not self._read(0.1):
                raise AssertionError(f"{text!r} never appeared in:\n{self.output[-3000:]}")
        return self.output.index(text, start)

    def read_to_end(self, timeout: float = 60) -> str:
        """All the output, once codeloop has ended."""
        deadline = time.monotonic() + timeout
        while self._read(0.1):
            assert time.monotonic() < deadline, self.output[-3000:]
        return self.output

    def type(self, text: str) -> None:
        time.sleep(0.3)  # (the prompt reads typed keys once it is drawn)
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            os.close(self.master)


def test_the_line_repl_survives_ctrl_c_in_a_stream_and_then_undoes(tmp_path, isolated_env):
    # before: /undo after the Ctrl-C ended the REPL with a BrokenPipeError traceback under
    # `sandbox.head`: the terminal's SIGINT had also killed GitPython's `git cat-file` helpers
    repo = make_repo(tmp_path, "offbyone")
    env = {**isolated_env, "PROMPT_TOOLKIT_NO_CPR": "1", "XDG_STATE_HOME": str(tmp_path / "st"),
           "TERM": "xterm"}
    fix = ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))
    replies = [Reply(text="Fixing.", tool_calls=[fix], chunk_chars=4000),
               Reply(text="Second" + " thought" * 400)]
    with ScriptedModelServer(replies, tokens_per_s=40) as server:
        terminal = Terminal([sys.executable, "-m", "codeloop", "--plain", "--base-url",
                             server.base_url, "--test-cmd", PYTEST_CMD], repo, env)
        terminal.read_until("tests: 2 failed")  # the baseline, while at the prompt
        terminal.type("fix the pager\r")
        at = terminal.read_until("turn 1: applied")
        at = terminal.read_until("›", at)
        terminal.type("and tidy up\r")
        at = terminal.read_until("Second thought", at)
        terminal.type("\x03")  # Ctrl-C, mid-stream
        at = terminal.read_until("cancelled", at)
        at = terminal.read_until("›", at)
        terminal.type("/undo\r")
        at = terminal.read_until("sandbox back at commit", at)
        at = terminal.read_until("›", at)
        # whatever else ends git's helpers (here: SIGKILL), a failing command is reported and
        # the REPL goes on
        helpers = subprocess.run(["pgrep", "-P", str(terminal.process.pid), "-f", "cat-file"],
                                 capture_output=True, text=True).stdout.split()
        assert helpers  # (alive after the Ctrl-C)
        for pid in helpers:
            os.kill(int(pid), signal.SIGKILL)
        terminal.type("/undo\r")
        at = terminal.read_until("error: ", at)
        at = terminal.read_until("›", at)
        terminal.type("/quit\r")
        terminal.read_until("recording:", at)  # (the REPL's last words, as it ends)
        code = terminal.close()
    assert "Traceback" not in terminal.output, terminal.output[-3000:]
    assert code in (0, 1), terminal.output[-3000:]
    base = git(repo, "rev-parse", "HEAD").strip()
    branch = git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/codeloop/").strip()
    assert git(repo, "rev-parse", branch).strip() == base  # turn 1's commit is undone


def test_ctrl_c_at_the_terminal_while_git_makes_the_sandbox_exits_130(tmp_path, isolated_env):
    # before: the terminal's SIGINT also killed codeloop's `git add`, so the sandbox failed
    # ("sandbox_error", exit 2) instead of being finished and reported
    files = {f"data/f{i}.txt": f"{i}\n" for i in range(3000)}  # (uncommitted: a slow snapshot)
    repo = make_repo(tmp_path, "offbyone")
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    with ScriptedModelServer([]) as server:
        terminal = Terminal([sys.executable, "-m", "codeloop", *session_args(server)], repo,
                            isolated_env)
        deadline = time.monotonic() + 60
        while subprocess.run(["pgrep", "-P", str(terminal.process.pid), "-f", "git add -A"],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and terminal.process.poll() is None
            time.sleep(0.005)
        os.write(terminal.master, b"\x03")  # Ctrl-C, to the whole foreground group
        output = terminal.read_to_end()
        code = terminal.close()
    assert_ended_cleanly(repo, code, output)
    assert "interrupted (exit 130)" in output


def test_ctrl_c_at_the_repl_prompt_during_the_baseline_quits_with_the_end_recorded_last(
        tmp_path, isolated_env):
    # before: the start-up's own "interrupted" came after session.end, the recording's last line
    repo = make_repo(tmp_path, "offbyone")
    env = {**isolated_env, "PROMPT_TOOLKIT_NO_CPR": "1", "XDG_STATE_HOME": str(tmp_path / "st"),
           "TERM": "xterm"}
    started = tmp_path / "started"
    with ScriptedModelServer([]) as server:
        terminal = Terminal([sys.executable, "-m", "codeloop", "--plain", "--base-url",
                             server.base_url, "--test-cmd", f"sh -c 'touch {started}; sleep 60'"],
                            repo, env)
        terminal.read_until("›")
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        terminal.type("\x03")  # at the prompt: a key, which quits
        output = terminal.read_to_end()
        terminal.close()
    assert "Traceback" not in output, output[-3000:]
    recording = next((repo / ".codeloop" / "sessions").glob("*.jsonl"))
    events = [json.loads(line) for line in recording.read_text().splitlines()]
    assert events[-1]["type"] == "session.end", [e["type"] for e in events]
    assert [e for e in events if e["type"] == "error"][-1]["kind"] == "interrupted"


def slow_recording(path: Path) -> Path:
    """A recording that takes about 3 s to watch: "Looking" at once, " closer" 3 s later."""
    start = {"type": "session.start", "t": 0.0, "session_id": "s", "task": "look", "repo": "r",
             "model": "m", "base_url": "http://127.0.0.1:9/v1", "transport": "chat",
             "edit_mode": "auto", "test_command": "true", "max_iterations": 1, "version": "0",
             "format": 1}
    deltas = [{"type": "model.text_delta", "t": t, "turn": 1, "text": text}
              for t, text in ((0.2, "Looking"), (3.0, " closer"))]
    path.write_text("".join(json.dumps(line) + "\n" for line in (start, *deltas)))
    return path


@pytest.mark.parametrize("command", ["replay", "session"])
def test_a_sigint_ignored_by_whoever_started_codeloop_stays_ignored(tmp_path, isolated_env,
                                                                    command):
    # before: replay took the SIGINT anyway (a KeyboardInterrupt traceback, killed by the
    # signal), and a headless session was cancelled by it (exit 130)
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(text="Looking" + " closer" * 80)], tokens_per_s=40) as server:
        args = (["replay", str(slow_recording(tmp_path / "slow.jsonl")), "--headless"]
                if command == "replay" else session_args(server, "true"))
        run = Headless(repo, isolated_env, args, sigint_ignored=True)
        # (a reply's first pieces can come between the lines of imports made as it starts)
        run.wait_for("Looking" if command == "replay" else "closer closer closer")
        code, stderr = run.interrupt()  # (a Ctrl-C at the script that started it, say)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == 0, stderr[-3000:]
    if command == "replay":
        assert "Looking closer" in stderr  # it went on to the end
    else:
        [recording] = (repo / ".codeloop" / "sessions").glob("*.jsonl")
        end = json.loads(recording.read_text().splitlines()[-1])
        assert end["type"] == "session.end" and end["outcome"] != "interrupted", end


@pytest.mark.parametrize("command", [["replay", "RECORDING", "--headless"],
                                     ["demo", "--headless", "--speed", "max"], ["clean"]])
def test_a_ctrl_c_during_start_up_stops_replay_demo_and_clean_with_130(tmp_path, isolated_env,
                                                                       command):
    # before: the press noted while the CLI imported was dropped: each ran to its end, exit 0
    repo = make_repo(tmp_path, "offbyone")
    recording = str(slow_recording(tmp_path / "slow.jsonl"))
    run = Headless(repo, isolated_env, [recording if a == "RECORDING" else a for a in command])
    run.wait_for(imported("argparse"))  # the CLI's first import: the rest is still to come
    code, stderr = run.interrupt()
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "codeloop: interrupted" in stderr
    assert "Looking" not in stderr and "nothing to clean" not in stderr  # nothing began


def test_a_ctrl_c_while_watching_a_replay_exits_130_without_a_traceback(tmp_path, isolated_env):
    # before: a KeyboardInterrupt traceback, and the process killed by the signal (-2)
    run = Headless(tmp_path, isolated_env,
                   ["replay", str(slow_recording(tmp_path / "slow.jsonl")), "--headless"])
    run.wait_for("Looking")
    code, stderr = run.interrupt()
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "codeloop: interrupted" in stderr


def test_a_ctrl_c_during_a_re_execution_exits_130_with_its_sandbox_reported(tmp_path,
                                                                           isolated_env):
    # before: the interrupted re-execution was compared as if whole: "matched", exit 0
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(text="Looking" + " closer" * 150)], tokens_per_s=40) as server:
        recorded = run_codeloop(repo, isolated_env, *session_args(server, "true"), timeout=120)
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    [recording] = (repo / ".codeloop" / "sessions").glob("*.jsonl")
    run = Headless(repo, isolated_env, ["replay", str(recording), "--re-execute"])
    run.wait_for("closer closer closer")  # the recorded reply, streaming at its recorded pace
    code, stderr = run.interrupt()
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    [again] = set((repo / ".codeloop" / "sessions").glob("*.jsonl")) - {recording}
    end = json.loads(again.read_text().splitlines()[-1])
    assert end["type"] == "session.end" and end["outcome"] == "interrupted", end
    assert end["branch"] in stderr  # where its sandbox stays
