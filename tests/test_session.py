"""End-to-end sessions: `codeloop --task` as a subprocess against the scripted model server.

Each test copies a sandbox project into a real git repo, scripts the model's replies, and checks
what a user would see: exit code, the events, the sandbox branch, and the user's untouched repo.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from codeloop.agent.session import Session, SessionSettings
from codeloop.config import Config
from codeloop.core.events import SessionEnd, TestStart
from codeloop.core.stream import EventStream
from codeloop.transport.chat import ChatCompletionsClient
from codeloop.workspace.sandbox import Sandbox
from tests.conftest import (
    PYTEST_CMD,
    committed_repo,
    fix_diff,
    git,
    make_repo,
    read_recording,
    run_codeloop,
    tree_state,
)
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall


def patch_call(diff: str) -> ToolCall:
    return ToolCall("apply_patch", json.dumps({"patch": diff}))


def session_args(server: ScriptedModelServer, *extra: str) -> list[str]:
    return ["--task", "make the tests pass", "--base-url", server.base_url, "--model", "scripted",
            "--test-cmd", PYTEST_CMD, *extra]


def json_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def sandbox_path(events: list[dict]) -> Path:
    return Path(next(e for e in events if e["type"] == "sandbox.ready")["path"])


def test_solved_in_one_turn_over_one_reused_connection(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    before = tree_state(repo)
    replies = [Reply(text="Fixing the count.", tool_calls=[patch_call(fix_diff("offbyone"))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server, "--json"))
    assert done.returncode == 0, done.stderr
    events = json_events(done.stdout)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session.start" and kinds[-1] == "session.end"
    assert events[-1]["outcome"] == "passed" and events[-1]["exit_code"] == 0
    assert "pager/paginate.py" in events[-1]["diffstat"]
    baseline = next(e for e in events if e["type"] == "test.done" and e["turn"] == 0)
    assert baseline["counts"]["failed"] == 2
    assert {f["id"] for f in baseline["failures"]} == {
        "tests/test_paginate.py::test_exact_multiple_page_count",
        "tests/test_paginate.py::test_page_past_end_raises"}
    turn_end = next(e for e in events if e["type"] == "turn.end")
    for span in ("prompt_ms", "connect_ms", "ttfb_ms", "ttft_ms", "decode_ms", "apply_ms",
                 "test_ms", "overhead_ms"):
        assert span in turn_end["spans"]
    # pre-connect at start-up, then the same connection for the request
    assert server.connections == 1
    first = server.chat_requests[0].body
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert [t["function"]["name"] for t in first["tools"]] == [
        "apply_patch", "list_files", "read_file", "search"]
    prompt_text = json.dumps(first["messages"])
    assert "test_exact_multiple_page_count" in prompt_text  # the failing tests' output
    assert "pager/paginate.py" in prompt_text  # the file the failures point to
    # the sandbox branch holds the fix as one commit; the user's repo is byte-identical
    branch = events[-1]["branch"]
    assert "codeloop turn 1" in git(repo, "log", "-1", "--format=%B", branch)
    assert "tests: 7 passed" in git(repo, "log", "-1", "--format=%B", branch)
    assert tree_state(repo) == before
    assert read_recording(repo) == events


def test_solved_in_two_turns_after_a_hunk_that_does_not_apply(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "twomodules")
    # the model misremembers a context line of the second file
    wrong = fix_diff("twomodules").replace("def format_cents(cents: int)", "def fmt(cents)")
    replies = [Reply(tool_calls=[patch_call(wrong)]),
               Reply(text="Corrected.", tool_calls=[patch_call(fix_diff("twomodules"))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server, "--json"))
        requests = server.chat_requests
    assert done.returncode == 0, done.stderr
    events = json_events(done.stdout)
    rejected = [e for e in events if e["type"] == "patch.rejected"]
    assert len(rejected) == 1 and "hunk 1" in rejected[0]["reason"]
    assert [e["turn"] for e in events if e["type"] == "patch.applied"] == [2]
    # the model is told precisely, in the tool result of its apply_patch call
    feedback = requests[1].body["messages"][-1]
    assert feedback["role"] == "tool" and "NOT applied" in feedback["content"]
    assert rejected[0]["reason"] in feedback["content"]
    # turn 2's request is turn 1's plus what happened since: append-only history
    assert requests[1].body["messages"][:len(requests[0].body["messages"])] == \
        requests[0].body["messages"]
    assert events[-1]["outcome"] == "passed"
    assert server.connections == 1
    # the recording carries only what is new per request: turn 2 starts with the model's reply
    recorded = [e["messages"] for e in events if e["type"] == "model.request"]
    assert [m["role"] for m in recorded[1]] == ["assistant", "tool"]


def test_new_file_from_a_fenced_diff_in_text_mode(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "newfile")
    (repo / "AGENTS.md").write_text("Always keep functions under 20 lines.\n")
    git(repo, "add", "AGENTS.md")
    git(repo, "commit", "-q", "-m", "agents")
    text = "Here is the module:\n\n```diff\n" + fix_diff("newfile") + "```\n"
    with ScriptedModelServer([Reply(text=text)]) as server:
        done = run_codeloop(repo, isolated_env,
                            *session_args(server, "--json", "--edit-mode", "text"))
        body = server.chat_requests[0].body
    assert done.returncode == 0, done.stderr
    assert "tools" not in body
    prompt_text = json.dumps(body["messages"])
    assert "Always keep functions under 20 lines." in prompt_text
    assert "tests/test_slug.py" in prompt_text and "textkit/normalize.py" in prompt_text
    events = json_events(done.stdout)
    applied = next(e for e in events if e["type"] == "patch.applied")
    assert applied["files"] == ["textkit/slug.py"]
    assert (sandbox_path(events) / "textkit" / "slug.py").is_file()
    assert not (repo / "textkit" / "slug.py").exists()


def test_hostile_paths_are_rejected_and_nothing_is_written_outside(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    outside = tmp_path / "escaped.txt"
    hostile = ("--- /dev/null\n+++ b/../../escaped.txt\n@@ -0,0 +1 @@\n+owned\n"
               "--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+owned\n")
    absolute = f"--- /dev/null\n+++ {outside}\n@@ -0,0 +1 @@\n+owned\n"
    replies = [Reply(tool_calls=[patch_call(hostile)]), Reply(tool_calls=[patch_call(absolute)])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env,
                            *session_args(server, "--json", "--max-iterations", "2"))
    assert done.returncode == 1, done.stderr
    events = json_events(done.stdout)
    reasons = [e["reason"] for e in events if e["type"] == "patch.rejected"]
    assert len(reasons) == 2
    assert "'..'" in reasons[0] and ".git/" in reasons[0] and "absolute" in reasons[1]
    assert not outside.exists()
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert events[-1]["outcome"] == "max_iterations" and events[-1]["exit_code"] == 1
    assert git(repo, "rev-parse", events[-1]["branch"]) == git(repo, "rev-parse", "HEAD")


def test_uncommitted_work_is_in_the_sandbox_and_apply_brings_the_fix_home(tmp_path,
                                                                          isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    (repo / "NOTES.txt").write_text("untracked notes\n")
    readme = repo / "README.md"
    readme.write_text(readme.read_text() + "local edit\n")
    before = tree_state(repo)
    replies = [Reply(tool_calls=[patch_call(fix_diff("offbyone"))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server, "--json", "--apply"))
    assert done.returncode == 0, done.stderr
    events = json_events(done.stdout)
    sandbox = sandbox_path(events)
    assert (sandbox / "NOTES.txt").read_text() == "untracked notes\n"
    assert (sandbox / "README.md").read_text().endswith("local edit\n")
    assert events[-1]["applied_to_worktree"] is True
    assert "(total + per_page - 1) // per_page" in (repo / "pager" / "paginate.py").read_text()
    after = tree_state(repo)
    assert after["NOTES.txt"] == before["NOTES.txt"] and after["<index>"] == before["<index>"]
    assert after["README.md"] == before["README.md"]


def test_a_hanging_test_command_is_killed_at_its_timeout(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    pid_file = tmp_path / "grandchild.pid"
    command = f"sh -c 'sleep 60 & echo $! > {pid_file}; wait'"
    with ScriptedModelServer([Reply(text="I have nothing to change.")]) as server:
        done = run_codeloop(repo, isolated_env, "--task", "x", "--base-url", server.base_url,
                            "--test-cmd", command, "--test-timeout", "1", "--json")
    assert done.returncode == 1, done.stderr
    events = json_events(done.stdout)
    baseline = next(e for e in events if e["type"] == "test.done")
    assert baseline["timed_out"] is True and "timed out after 1s" in baseline["summary"]
    assert events[-1]["outcome"] == "no_edits"
    grandchild = int(pid_file.read_text())
    try:
        os.kill(grandchild, 0)
        alive = Path(f"/proc/{grandchild}/stat").read_text().split()[2] != "Z"
    except ProcessLookupError:
        alive = False
    assert not alive


def test_a_connection_dropped_mid_stream_twice_exits_3_with_a_valid_recording(tmp_path,
                                                                             isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    drop = Reply(text="I will now fix the page count in paginate.py", chunk_chars=3,
                 drop_after_chunks=5)
    with ScriptedModelServer([drop, drop]) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server))
        assert len(server.chat_requests) == 2
    assert done.returncode == 3
    assert "broke mid-stream" in done.stderr and "transport" in done.stderr
    events = read_recording(repo)
    assert events[-1]["type"] == "session.end" and events[-1]["outcome"] == "model_error"
    assert any(e["type"] == "model.text_delta" for e in events)
    # output had been shown: one visible restart of the turn, never a silent re-send
    retries = [e for e in events if e["type"] == "model.retry"]
    assert len(retries) == 1 and retries[0]["restart"] is True


def test_rate_limit_is_retried_after_retry_after(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    replies = [Reply(status=429, retry_after=0.2, error_message="slow down"),
               Reply(tool_calls=[patch_call(fix_diff("offbyone"))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server, "--json"))
    assert done.returncode == 0, done.stderr
    retries = [e for e in json_events(done.stdout) if e["type"] == "model.retry"]
    assert len(retries) == 1 and retries[0]["delay_s"] == 0.2 and "429" in retries[0]["reason"]


def test_the_api_key_is_sent_but_never_recorded_or_printed(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    secret = "sk-test-" + "9f8e7d6c5b4a" * 3
    env = {**isolated_env, "OPENAI_API_KEY": secret}
    replies = [Reply(text=f"echoing {secret}",
                     tool_calls=[patch_call(fix_diff("offbyone"))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, env, *session_args(server, "--json"))
        assert server.chat_requests[0].headers["authorization"] == f"Bearer {secret}"
    assert done.returncode == 0, done.stderr
    recording = next((repo / ".codeloop" / "sessions").glob("*.jsonl")).read_text()
    assert secret not in recording and secret not in done.stdout and secret not in done.stderr
    assert "[redacted]" in recording


def test_recordings_stay_out_of_git(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(text="Nothing to do.")]) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server))
    assert done.returncode == 1, done.stderr
    assert "recording:" in done.stderr and "no_edits" in done.stderr
    assert git(repo, "status", "--porcelain") == ""
    assert ".codeloop/" in (repo / ".git" / "info" / "exclude").read_text()


def test_ctrl_c_stops_the_tests_and_leaves_the_sandbox_at_its_last_commit(tmp_path,
                                                                           isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    started = tmp_path / "started"
    command = f"sh -c 'touch {started}; sleep 60'"
    with ScriptedModelServer([]) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "codeloop", "--task", "x", "--base-url", server.base_url,
             "--test-cmd", command, "--json"],
            cwd=repo, env=isolated_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        assert process.stdout is not None
        # events arrive through the pipe while the session runs, one complete object per line
        seen = [json.loads(process.stdout.readline()) for _ in range(3)]
        assert [e["type"] for e in seen] == ["session.start", "sandbox.ready", "test.start"]
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        interrupted_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=20)
        assert time.monotonic() - interrupted_at < 10
    assert process.returncode == 130
    events = seen + json_events(rest)
    assert events[-1]["type"] == "session.end" and events[-1]["outcome"] == "interrupted"
    sandbox = sandbox_path(events)
    assert git(sandbox, "status", "--porcelain", "--untracked-files=no") == ""
    assert subprocess.run(["pgrep", "-f", f"touch {started}; sleep 60"],
                          capture_output=True).returncode == 1


def test_clean_removes_the_session_worktree_and_branch(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(text="Nothing to do.")]) as server:
        run_codeloop(repo, isolated_env, *session_args(server))
    assert "codeloop/" in git(repo, "branch", "--list", "codeloop/*")
    cleaned = run_codeloop(repo, isolated_env, "clean")
    assert cleaned.returncode == 0 and "removed" in cleaned.stdout
    assert git(repo, "branch", "--list", "codeloop/*") == ""
    assert len(git(repo, "worktree", "list").splitlines()) == 1


def test_the_self_check_runs_beside_the_baseline_in_a_copy_that_is_then_removed(
        tmp_path, isolated_env):
    # one failure names its own file's absolute path: the copy's path must not count as a
    # difference, or the runner would never be trusted
    repo = committed_repo(tmp_path / "where", {"tests/test_where.py": (
        "LIMIT = 1\n\n\ndef test_where():\n    assert __file__ == ''\n\n\n"
        "def test_limit():\n    assert LIMIT == 2\n")})
    fix = ("--- a/tests/test_where.py\n+++ b/tests/test_where.py\n@@ -1 +1 @@\n"
           "-LIMIT = 1\n+LIMIT = 2\n")
    with ScriptedModelServer([Reply(tool_calls=[patch_call(fix)])]) as server:
        done = run_codeloop(repo, isolated_env,
                            *session_args(server, "--json", "--max-iterations", "1"))
    assert done.returncode == 1, done.stderr
    events = json_events(done.stdout)
    sandbox = sandbox_path(events)
    runs = [e for e in events if e["type"] == "test.done"]
    assert [(r["turn"], r["mode"], r["counts"]["failed"]) for r in runs] == [
        (0, "cold", 2), (1, "warm", 1)]
    assert str(sandbox / "tests" / "test_where.py") in runs[1]["failures"][0]["message"]
    changes = [e for e in events if e["type"] == "test.runner"]
    assert len(changes) == 1 and "self-check matched" in changes[0]["message"]
    # gone once codeloop has exited: only the repo and the session's sandbox are left
    worktrees = git(repo, "worktree", "list", "--porcelain").split("\n\n")
    assert [w.splitlines()[0] for w in worktrees if w.strip()] == [
        f"worktree {repo}", f"worktree {sandbox}"]


def test_a_suite_that_disagrees_with_itself_side_by_side_is_checked_alone_next_time(
        tmp_path, isolated_env):
    # one test holds a fixed port for a while: two runs at once collide, one alone never does
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repo = committed_repo(tmp_path / "port", {"tests/test_port.py": (
        "import socket\nimport time\n\nLIMIT = 1\n\n\ndef test_port():\n"
        "    with socket.socket() as held:\n"
        f"        held.bind(('127.0.0.1', {port}))\n"
        "        held.listen()\n        time.sleep(2.5)\n\n\n"
        "def test_limit():\n    assert LIMIT == 2\n")})
    fix = ("--- a/tests/test_port.py\n+++ b/tests/test_port.py\n@@ -4 +4 @@\n"
           "-LIMIT = 1\n+LIMIT = 2\n")

    def session() -> list[dict]:
        with ScriptedModelServer([Reply(tool_calls=[patch_call(fix)])]) as server:
            done = run_codeloop(repo, isolated_env, *session_args(server, "--json"), timeout=90)
        assert done.returncode == 0, done.stderr  # the verifying run is always right
        return json_events(done.stdout)

    first = [e for e in session() if e["type"] == "test.runner"]
    assert [e["mode"] for e in first] == ["cold"]
    assert "ran side by side" in first[0]["message"]
    second = session()
    changes = [e for e in second if e["type"] == "test.runner"]
    assert [e["mode"] for e in changes] == ["warm"]
    assert "self-check matched" in changes[0]["message"]
    runs = [e for e in second if e["type"] == "test.done"]
    assert [(r["mode"], r["passed"]) for r in runs] == [("cold", False), ("warm", True)]


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_while_the_sandbox_is_being_made_waits_for_it_and_reports_its_branch(
        tmp_path, monkeypatch, presses):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "offbyone")
    before = tree_state(repo)
    made: Future[Sandbox] = Future()  # as `start_sandbox` hands it over, but made slowly
    made.set_running_or_notify_cancel()

    def slowly() -> None:
        time.sleep(1)
        made.set_result(Sandbox.create(repo, "slow"))

    seen: list[object] = []
    events = EventStream()
    events.subscribe(seen.append)

    async def scenario() -> int:
        with ScriptedModelServer([]) as server:
            config = Config(model="scripted", base_url=server.base_url, test_command=PYTEST_CMD)
            client = ChatCompletionsClient(server.base_url, "scripted", None, 1024, 30.0)
            settings = SessionSettings(session_id="slow", task="x", test_command=PYTEST_CMD)
            session = asyncio.ensure_future(
                Session(repo, config, settings, client, events, sandbox_start=made).run())
            threading.Thread(target=slowly).start()
            for _ in range(presses):  # Ctrl-C, as run_headless delivers it
                await asyncio.sleep(0.2)
                session.cancel()
            return await session

    assert asyncio.run(scenario()) == 130
    end = seen[-1]
    assert isinstance(end, SessionEnd) and end.outcome == "interrupted"
    assert end.branch == "codeloop/slow"  # made meanwhile, and said so
    assert not any(isinstance(e, TestStart) for e in seen)  # nothing ran after the cancel
    assert tree_state(repo) == before


SLOPPY_DIFF = (
    # no a/ b/ prefixes, hunk numbers far off, a blank context line without its space,
    # trailing whitespace on a context line, CRLF line endings
    "--- ledger/report.py\n+++ ledger/report.py\n@@ -90,9 +90,7 @@\n"
    " def format_cents(cents: int) -> str:   \n"
    '     """Format integer cents as money, e.g. ``1250 -> "12.50"``, ``-5 -> "-0.05"``."""\n'
    "-    dollars, rest = divmod(cents, 100)\n-    return f\"{dollars}.{rest:02d}\"\n"
    "+    sign = \"-\" if cents < 0 else \"\"\n"
    "+    dollars, rest = divmod(abs(cents), 100)\n"
    "+    return f\"{sign}{dollars}.{rest:02d}\"\n"
    "\n\n"
    " def totals_by_category(entries: list[Entry]) -> dict[str, int]:\n"
).replace("\n", "\r\n")
SLOPPY_SECOND = (
    # a bare @@ header with wrong counts, in a second block of the same reply
    "--- a/ledger/parse.py\n+++ b/ledger/parse.py\n@@ @@\n"
    "-    return sign * (int(whole) * 100 + int(frac or \"0\"))\n"
    "+    return sign * (int(whole) * 100 + int(frac.ljust(2, \"0\")))\n"
)


def test_a_sloppy_model_diff_with_the_usual_quirks_applies(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "twomodules")
    text = f"Two fixes:\n```diff\n{SLOPPY_DIFF}```\nand\n```patch\n{SLOPPY_SECOND}```\n"
    with ScriptedModelServer([Reply(text=text)]) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server, "--json"))
    assert done.returncode == 0, done.stderr
    events = json_events(done.stdout)
    assert [e["source"] for e in events if e["type"] == "patch.proposed"] == ["text", "text"]
    applied = next(e for e in events if e["type"] == "patch.applied")
    assert sorted(applied["files"]) == ["ledger/parse.py", "ledger/report.py"]
    report = (sandbox_path(events) / "ledger" / "report.py").read_bytes()
    assert b"\r\n" not in report and b'sign = "-" if cents < 0 else ""\n' in report


def test_the_connection_survives_a_test_run_longer_than_httpx_default_keepalive(
        tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    marker = tmp_path / "slow-once"
    command = f"sh -c 'if [ ! -e {marker} ]; then touch {marker}; sleep 6; fi; {PYTEST_CMD}'"
    replies = [Reply(tool_calls=[patch_call(fix_diff("offbyone"))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, "--task", "x", "--base-url", server.base_url,
                            "--test-cmd", command, "--json")
        assert done.returncode == 0, done.stderr
        # pre-connect at start-up, a 6 s baseline run, then the request on the same socket
        assert server.connections == 1
    first_byte = next(e for e in json_events(done.stdout) if e["type"] == "model.first_byte")
    assert first_byte["reused"] is True and first_byte["connect_ms"] == 0


def test_a_server_that_refuses_tools_gets_the_request_again_in_text_mode(tmp_path,
                                                                          isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    replies = [Reply(status=400, error_message='"auto" tool choice requires '
                                               "--enable-auto-tool-choice to be set"),
               Reply(text="```diff\n" + fix_diff("offbyone") + "```\n")]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server, "--json"))
        bodies = [r.body for r in server.chat_requests]
    assert done.returncode == 0, done.stderr
    assert "tools" in bodies[0] and "tools" not in bodies[1]
    assert "```diff" in bodies[1]["messages"][0]["content"]
    fallback = [e for e in json_events(done.stdout)
                if e["type"] == "error" and e["kind"] == "fallback"]
    assert len(fallback) == 1 and "enable-auto-tool-choice" in fallback[0]["message"]


def test_an_unreachable_server_is_retried_then_exits_3(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([]) as server:
        base_url = server.base_url  # the port is closed once the server stops
    done = run_codeloop(repo, isolated_env, "--task", "x", "--base-url", base_url,
                        "--test-cmd", PYTEST_CMD, "--json")
    assert done.returncode == 3
    events = json_events(done.stdout)
    assert len([e for e in events if e["type"] == "model.retry"]) == 2
    assert "cannot reach" in events[-2]["message"] and events[-1]["outcome"] == "model_error"


def test_apply_refuses_when_the_user_changed_the_same_file_meanwhile(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    user_file = repo / "pager" / "paginate.py"
    # the baseline test run stands in for the user editing the file while codeloop works
    command = f"sh -c 'echo \"# mine\" >> {user_file}; {PYTEST_CMD}'"
    replies = [Reply(tool_calls=[patch_call(fix_diff("offbyone"))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, "--task", "x", "--base-url", server.base_url,
                            "--test-cmd", command, "--json", "--apply")
    events = json_events(done.stdout)
    assert events[-1]["outcome"] == "passed" and events[-1]["applied_to_worktree"] is False
    refusal = next(e for e in events if e["type"] == "error" and e["kind"] == "apply")
    assert "pager/paginate.py" in refusal["message"] and events[-1]["branch"] in \
        refusal["message"]
    assert user_file.read_text().endswith("# mine\n")
    assert "return total // per_page + 1" in user_file.read_text()


def test_every_recorded_line_is_a_typed_event(tmp_path, isolated_env):
    from codeloop.core.codec import event_from_dict

    repo = make_repo(tmp_path, "twomodules")
    replies = [Reply(text="Looking first.", tool_calls=[
        ToolCall("read_file", json.dumps({"path": "ledger/parse.py", "start_line": 18})),
        ToolCall("search", json.dumps({"pattern": "def format_cents"}))]),
        Reply(tool_calls=[patch_call(fix_diff("twomodules"))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server))
    assert done.returncode == 0, done.stderr
    recorded = read_recording(repo)
    assert [event_from_dict(e).to_dict() for e in recorded] == recorded
    results = {e["name"]: e["output"] for e in recorded if e["type"] == "tool.result"}
    assert "   18  " in results["read_file"] and "ledger/report.py:6:" in results["search"]
    times = [e["t"] for e in recorded]
    assert times == sorted(times)


def test_a_diff_cut_off_at_the_token_limit_is_not_applied(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    cut = "```diff\n" + fix_diff("offbyone")[:-40]  # no closing fence, the diff truncated
    replies = [Reply(text=cut, finish_reason="length")]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env,
                            *session_args(server, "--json", "--max-iterations", "1"))
    events = json_events(done.stdout)
    assert not [e for e in events if e["type"] in ("patch.applied", "patch.proposed")]
    assert next(e for e in events if e["type"] == "turn.end")["outcome"] == "cut_off"


def test_a_malformed_stream_chunk_is_a_transport_error_with_a_clean_end(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    replies = [Reply(text="x", raw_events=["[1, 2]"]) for _ in range(3)]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *session_args(server, "--json"))
    assert done.returncode == 3
    events = json_events(done.stdout)
    assert len([e for e in events if e["type"] == "model.retry"]) == 2  # nothing shown yet
    assert "malformed chunk" in events[-2]["message"]
    assert events[-1]["type"] == "session.end" and events[-1]["outcome"] == "model_error"


def test_a_server_holding_the_body_open_after_done_does_not_fail_the_turn(tmp_path,
                                                                         isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    replies = [Reply(tool_calls=[patch_call(fix_diff("offbyone"))], hold_open_s=30)]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env,
                            *session_args(server, "--json", "--request-timeout", "60"))
    assert done.returncode == 0, done.stderr
    done_event = next(e for e in json_events(done.stdout) if e["type"] == "model.done")
    assert done_event["decode_ms"] < 10_000  # drained for at most a moment, not 30 s


def test_every_api_key_in_the_environment_is_hidden_from_the_tests(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    other = "gsk-other-" + "7a6b5c4d" * 3
    env = {**isolated_env, "GROQ_API_KEY": other}
    command = f"sh -c 'echo key=$GROQ_API_KEY; {PYTEST_CMD}'"
    with ScriptedModelServer([Reply(text="Nothing to do.")]) as server:
        done = run_codeloop(repo, env, "--task", "x", "--base-url", server.base_url,
                            "--test-cmd", command, "--json")
    assert '"key=\\n' in done.stdout  # the variable is empty inside the test command
    assert other not in done.stdout
    assert other not in next((repo / ".codeloop" / "sessions").glob("*.jsonl")).read_text()
