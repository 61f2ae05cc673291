"""Headless mode shows the patch it applied (compact, coloured only on a terminal), `--quiet`
hides it; the demo ends saying what it showed and how to go on. Real CLI, scripted server."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys

from codeloop.core.events import ErrorEvent, Notice
from codeloop.core.kinds import NoticeKind, SessionOutcome
from codeloop.core.stream import EventStream
from codeloop.replay.playback import load
from codeloop.replay.run import DemoAgent, _session, demo_epilogue, source_sandbox
from codeloop.workspace.clean import clean
from tests.conftest import PYTEST_CMD, fix_diff, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

REMOVED = "-    return total // per_page + 1 if total else 0"
ADDED = "+    return (total + per_page - 1) // per_page"


def fix_reply() -> Reply:
    return Reply(text="Fixing the page count.",
                 tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))])


def run_on_a_terminal(repo, env, *args: str) -> tuple[int, str]:
    """codeloop with its stderr (where headless progress goes) on a pseudo-terminal."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "codeloop", *args], cwd=repo, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        try:
            chunk = os.read(master, 65536) if ready else b""
        except OSError:  # the child closed the terminal
            chunk = b""
        if not chunk:
            break
        output += chunk
    os.close(master)
    return process.wait(timeout=60), output.decode("utf-8", "replace")


def headless(server: ScriptedModelServer, *extra: str) -> tuple[str, ...]:
    return ("--task", "fix the pager", "--base-url", server.base_url, "--test-cmd", PYTEST_CMD,
            *extra)


def test_headless_shows_the_applied_diff_plain_when_not_a_terminal(tmp_path, isolated_env):
    # before: only "✓ patch applied to pager/paginate.py (9d74e48a0b)"
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([fix_reply()]) as server:
        done = run_codeloop(repo, isolated_env, *headless(server))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    applied = next(i for i, line in enumerate(lines) if "patch applied to" in line)
    shown = lines[applied + 1:applied + 8]
    assert shown[0] == "  pager/paginate.py"
    assert shown[1].startswith("  @@ -10,7 +10,7 @@")
    assert f"  {REMOVED}" in shown and f"  {ADDED}" in shown
    # two lines of context around the change, not the hunk's three
    assert '  ValueError("per_page must be positive")' not in "\n".join(shown)
    assert "\x1b" not in done.stderr and "\x1b" not in done.stdout


def test_quiet_keeps_the_patch_line_and_hides_the_diff(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([fix_reply()]) as server:
        done = run_codeloop(repo, isolated_env, *headless(server, "--quiet"))
    assert done.returncode == 0, done.stderr
    assert "patch applied to pager/paginate.py" in done.stderr
    assert REMOVED not in done.stderr and ADDED not in done.stderr


def test_on_a_terminal_the_diff_is_coloured_unless_no_color(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    env = {**isolated_env, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    with ScriptedModelServer([fix_reply(), fix_reply()]) as server:
        code, coloured = run_on_a_terminal(repo, env, *headless(server))
        assert code == 0, coloured
        assert f"\x1b[32m{ADDED}\x1b[0m" in coloured
        assert f"\x1b[31m{REMOVED}\x1b[0m" in coloured
        code, plain = run_on_a_terminal(repo, {**env, "NO_COLOR": "1"},
                                        *headless(server))
    assert code == 0, plain
    assert f"  {ADDED}" in plain and "\x1b[" not in plain


def test_the_headless_demo_ends_saying_what_it_showed_and_how_to_go_on(tmp_path, isolated_env):
    # before: it ended at "re-execution matched the recording"
    done = run_codeloop(tmp_path, isolated_env, "demo", "--speed", "max", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "That was the demo" in done.stdout
    assert "On your own repository" in done.stdout and "codeloop --plain" in done.stdout
    assert ADDED in done.stderr  # its patches are shown too


def test_the_demo_app_answers_a_message_after_the_recording_with_how_to_go_on(tmp_path):
    # before: "model error: the recording has no model reply for turn 3"
    recording = load(source_sandbox() / "sessions" / "offbyone.jsonl")
    repo = make_repo(tmp_path, "offbyone")
    events = EventStream()
    seen: list = []
    events.subscribe(seen.append)
    session = _session(recording, repo, "HEAD", None, events)
    agent = DemoAgent(session, events, demo_epilogue(recording))

    async def use() -> None:
        await agent.open()
        await agent.ask(session.settings.task)
        await agent.ask("now add a --verbose flag")
        await agent.finish(SessionOutcome.INTERACTIVE)

    try:
        asyncio.run(use())
    finally:
        clean(repo)
    told = [e for e in seen if isinstance(e, Notice) and e.kind is NoticeKind.DEMO]
    assert len(told) == 2
    assert "That was the demo" in told[0].message and "Ctrl+C or /quit" in told[0].message
    assert told[1].message.startswith("The demo's recording has no more model replies")
    assert not [e for e in seen if isinstance(e, ErrorEvent)]
