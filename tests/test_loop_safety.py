"""The loop ends when it is done, books every millisecond where it belongs, and refuses a bad
configuration or repository location up front (issue 12, points 11-13).

Real `codeloop` processes (and, for /undo, a Session driven the way the interactive front ends
drive it) against the scripted model server, in real git repositories.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeloop.agent.session import Session, SessionSettings
from codeloop.config import Config
from codeloop.core.stream import EventStream
from codeloop.transport.chat import ChatCompletionsClient
from tests.conftest import (
    FIXES,
    PYTEST_CMD,
    committed_repo,
    fix_diff,
    git,
    make_repo,
    read_recording,
    run_codeloop,
)
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall
from tests.test_repl import Terminal

STALE_CLAIM = "the same failures"
FIXED = "    return (total + per_page - 1) // per_page"
ORIGINAL = "    return total // per_page + 1 if total else 0"
HALF_FIXED = "    return total // per_page"  # still fails: 5 items, 2 a page -> 2 pages


def patch_reply(diff: str, text: str = "") -> Reply:
    return Reply(text=text, tool_calls=[ToolCall("apply_patch", json.dumps({"patch": diff}))])


def fix_reply(text: str = "") -> Reply:
    return patch_reply(fix_diff("offbyone"), text)


def half_fix() -> str:
    """The original code -> a change that still fails."""
    return fix_diff("offbyone").replace("+" + FIXED, "+" + HALF_FIXED)


def rest_of_fix() -> str:
    """half_fix()'s code -> the real fix."""
    return fix_diff("offbyone").replace("-" + ORIGINAL, "-" + HALF_FIXED)


def headless(server: ScriptedModelServer, *extra: str) -> list[str]:
    return ["--task", "make the tests pass", "--base-url", server.base_url, "--model", "scripted",
            "--test-cmd", PYTEST_CMD, "--json", *extra]


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def sent_text(events: list[dict]) -> str:
    """Everything codeloop sent the model, as recorded in the model.request events."""
    return json.dumps([e["messages"] for e in events if e["type"] == "model.request"])


# ---------------------------------------------------------------- 11: the loop ends when done


def test_a_patch_already_in_the_files_with_passing_tests_ends_the_session_passed(
        tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    git(repo, "apply", str(FIXES / "offbyone.diff"))
    # the user's uncommitted fix is in the sandbox: the baseline passes, and the model re-sends
    # that very fix on every turn
    with ScriptedModelServer([fix_reply("Fixing it.") for _ in range(4)]) as server:
        done = run_codeloop(repo, isolated_env, *headless(server, "--max-iterations", "4"),
                            timeout=120)
        requests = len(server.chat_requests)
    assert done.returncode == 0, done.stderr
    events = events_of(done.stdout)
    turns = [e for e in events if e["type"] == "turn.end"]
    assert [t["outcome"] for t in turns] == ["unchanged"]
    assert requests == 1
    assert events[-1]["outcome"] == "passed" and events[-1]["exit_code"] == 0


def test_the_line_repl_ends_a_follow_up_that_re_sends_the_applied_fix(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    env = {**isolated_env, "PROMPT_TOOLKIT_NO_CPR": "1", "XDG_STATE_HOME": str(tmp_path / "st"),
           "TERM": "xterm"}
    # the fix, then the same patch again for every follow-up message
    with ScriptedModelServer([fix_reply("Fixing.") for _ in range(6)]) as server:
        terminal = Terminal([sys.executable, "-m", "codeloop", "--plain", "--base-url",
                             server.base_url, "--test-cmd", PYTEST_CMD, "--max-iterations", "3"],
                            repo, env)
        try:
            terminal.read_until("tests: 2 failed")
            # the third message carries the second's feedback to the model
            for message in ("fix the pager", "are you sure it is fixed?", "anything else?"):
                time.sleep(0.3)
                start = len(terminal.output)
                terminal.type(message + "\r")
                output = terminal.read_until(" · prompt ", timeout=90, start=start)  # turn.end
                terminal.read_until("›", timeout=90, start=output.index(" · prompt ", start))
            time.sleep(0.3)
            terminal.type("/quit")
            time.sleep(0.3)
            terminal.type("\r")
        finally:
            code = terminal.close()
    assert code == 0, terminal.output[-3000:]
    events = read_recording(repo)
    outcomes = [e["outcome"] for e in events if e["type"] == "turn.end"]
    assert outcomes == ["applied", "unchanged", "unchanged"], outcomes
    feedback = sent_text(events)
    assert "every hunk of the patch is already present" in feedback
    assert "7 passed" in feedback and STALE_CLAIM not in feedback


def test_repeated_failures_are_still_referred_to_not_repeated(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    replies = [patch_reply(half_fix()) for _ in range(3)]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *headless(server, "--max-iterations", "3"),
                            timeout=120)
    assert done.returncode == 1, done.stderr
    events = events_of(done.stdout)
    assert [e["outcome"] for e in events if e["type"] == "turn.end"] == [
        "applied", "unchanged", "unchanged"]
    # tests that do fail, unchanged: a reference to the report the model already has
    assert f"{STALE_CLAIM} as after turn 1" in sent_text(events)


def test_after_an_undo_a_re_sent_patch_is_judged_by_its_own_result_not_taken_as_passed(
        tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "offbyone")
    replies = [patch_reply(half_fix()), patch_reply(rest_of_fix()),  # the first message
               patch_reply(half_fix()), patch_reply(rest_of_fix())]  # after the /undo
    seen: list[dict] = []
    stream = EventStream()
    stream.subscribe(lambda event: seen.append(event.to_dict()))

    async def scenario() -> tuple[str, str]:
        with ScriptedModelServer(replies) as server:
            config = Config(model="scripted", base_url=server.base_url, test_command=PYTEST_CMD,
                            warm_tests="off")
            client = ChatCompletionsClient(server.base_url, "scripted", None, 1024, 30.0)
            settings = SessionSettings(session_id="undo", task="", test_command=PYTEST_CMD)
            session = Session(repo, config, settings, client, stream)
            await session.open()
            first = await session.ask("fix the pager")
            session.undo()  # back at the half fix: its tests fail, the last result passed
            second = await session.ask("try again")
            await session.finish(second)
            return first, second

    assert asyncio.run(scenario()) == ("passed", "passed")
    assert [e["outcome"] for e in seen if e["type"] == "turn.end"] == [
        "applied", "applied", "unchanged", "applied"]
    runs = [(e["turn"], e["passed"]) for e in seen if e["type"] == "test.done"]
    assert runs == [(0, False), (1, False), (2, True), (4, True)]  # turn 3: turn 1's files
    assert "Test command result: 2 failed" in json.dumps(
        [e["messages"] for e in seen if e["type"] == "model.request"][3])



def driven_session(server: ScriptedModelServer, repo: Path, seen: list[dict],
                   test_cmd: str = PYTEST_CMD, **config: int) -> Session:
    """A Session on `server`, to drive as the interactive front ends drive it; its events go
    to `seen`."""
    stream = EventStream()
    stream.subscribe(lambda event: seen.append(event.to_dict()))
    client = ChatCompletionsClient(server.base_url, "scripted", None, 1024, 30.0)
    settings = SessionSettings(session_id="driven", task="", test_command=test_cmd)
    return Session(repo, Config(model="scripted", base_url=server.base_url,
                                test_command=test_cmd, warm_tests="off", **config),
                   settings, client, stream)


def test_after_an_undo_the_result_is_that_of_the_files_now_not_the_undone_ones(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "offbyone")
    replies = [patch_reply(half_fix()), patch_reply(rest_of_fix()), Reply(text="It is fixed.")]
    seen: list[dict] = []

    async def scenario() -> tuple[str, bool, str, bool]:
        with ScriptedModelServer(replies) as server:
            session = driven_session(server, repo, seen)
            await session.open()
            first = await session.ask("fix the pager")
            session.undo()  # back at the half fix, whose tests fail
            after_undo = session.result is not None and session.result.passed
            second = await session.ask("is it fixed?")  # the model proposes nothing
            await session.finish(second)
            return first, after_undo, second, session.result is not None and session.result.passed

    assert asyncio.run(scenario()) == ("passed", False, "no_edits", False)
    runs = [(e["turn"], e["passed"]) for e in seen if e["type"] == "test.done"]
    assert runs == [(0, False), (1, False), (2, True)]  # the half fix's result was known


def test_a_re_run_after_an_interrupted_test_run_counts_as_the_test_of_those_files(
        tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "offbyone")
    block, started = tmp_path / "block", tmp_path / "started"
    test_cmd = (f"sh -c 'if [ -e {block} ]; then touch {started}; sleep 600; fi; "
                f"exec {PYTEST_CMD}'")
    seen: list[dict] = []

    async def scenario() -> str:
        with ScriptedModelServer([patch_reply(half_fix()), patch_reply(half_fix())]) as server:
            session = driven_session(server, repo, seen, test_cmd, max_iterations=1)
            await session.open()
            block.touch()
            asking = asyncio.ensure_future(session.ask("fix the pager"))
            while not started.exists():  # the half fix is committed; its test run hangs
                await asyncio.sleep(0.05)
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
            block.unlink()
            await session.rerun_tests()  # /test: the half fix's result
            again = await session.ask("try again")  # the same patch: already in the files
            await session.finish(again)
            return again

    assert asyncio.run(scenario()) == "max_iterations"
    runs = [(e["turn"], e["passed"]) for e in seen if e["type"] == "test.done"]
    assert runs == [(0, False), (1, False)]  # the baseline, then /test; no run of them again


# ---------------------------------------------------------------- 12: accounting


def test_a_request_that_timed_out_and_was_retried_is_not_harness_overhead(tmp_path,
                                                                          isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    replies = [Reply(text="late", stall_s=4.0), fix_reply("Fixing.")]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *headless(server, "--request-timeout", "2"),
                            timeout=120)
    assert done.returncode == 0, done.stderr
    events = events_of(done.stdout)
    spans = next(e for e in events if e["type"] == "turn.end")["spans"]
    assert spans["overhead_ms"] < 1000, spans  # well below the 2 s stall
    retry = next(e for e in events if e["type"] == "model.retry")
    assert retry["elapsed_ms"] >= 1900  # the attempt waited out the 2 s request timeout
    assert spans["retry_wait_ms"] >= retry["elapsed_ms"] + retry["delay_s"] * 1000 - 1, spans
    totals = events[-1]["totals"]
    assert totals["overhead_ms"] < 1000 and totals["retry_wait_ms"] >= 1900, totals


# ---------------------------------------------------------------- 13: configuration


@pytest.mark.parametrize("value", ["", "not a url", "ftp://example.com/v1", "http://"])
@pytest.mark.parametrize("layer", ["repo config", "flag", "environment"])
def test_a_base_url_that_is_not_an_http_url_exits_2_naming_key_and_source(
        tmp_path, isolated_env, layer, value):
    repo = committed_repo(tmp_path / "repo", {"test_x.py": "def test_x():\n    pass\n"})
    env = {**isolated_env, "OPENAI_API_KEY": "sk-test-" + "0" * 24}
    args = ["--task", "x", "--test-cmd", "true"]
    if layer == "repo config":
        (repo / ".codeloop.toml").write_text(f"base_url = {json.dumps(value)}\n")
        source = str(repo / ".codeloop.toml")
    elif layer == "flag":
        args += ["--base-url", value]
        source = "--base-url"
    else:
        env["CODELOOP_BASE_URL"] = value
        source = "CODELOOP_BASE_URL"
    done = run_codeloop(repo, env, *args, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"{source}: base_url must be an http:// or https:// URL" in done.stderr
    assert repr(value) in done.stderr and "Traceback" not in done.stderr
    assert not (repo / ".codeloop").exists()  # refused before anything was created


def test_a_missing_repo_directory_is_named_plainly(tmp_path, isolated_env):
    missing = tmp_path / "nonexistent"
    done = run_codeloop(tmp_path, isolated_env, "-C", str(missing), "--task", "x")
    assert done.returncode == 2
    assert f"no such directory: {missing}" in done.stderr
    assert "PosixPath" not in done.stderr and "Errno" not in done.stderr


def test_a_repo_path_that_is_a_file_is_named_plainly(tmp_path, isolated_env):
    afile = tmp_path / "notes.txt"
    afile.write_text("x\n")
    done = run_codeloop(tmp_path, isolated_env, "-C", str(afile), "--task", "x")
    assert done.returncode == 2
    assert f"not a directory: {afile}" in done.stderr
    assert "PosixPath" not in done.stderr


def test_a_bare_repository_is_told_it_needs_a_working_tree(tmp_path, isolated_env):
    bare = tmp_path / "project.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    for where, args in ((tmp_path, ["-C", str(bare)]), (bare, [])):
        done = run_codeloop(where, isolated_env, *args, "--task", "x")
        assert done.returncode == 2
        assert f"{bare} is a bare repository" in done.stderr
        assert "working tree" in done.stderr and "git clone" in done.stderr
        assert "git init" not in done.stderr


def test_inside_the_git_directory_is_told_to_run_from_the_working_tree(tmp_path, isolated_env):
    repo = committed_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    done = run_codeloop(repo / ".git", isolated_env, "--task", "x")
    assert done.returncode == 2
    assert f"{repo / '.git'} is inside the .git directory" in done.stderr
    assert "working tree" in done.stderr
    assert "git init" not in done.stderr


def test_a_front_end_that_raises_on_an_event_never_fails_the_turn(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "offbyone")
    seen: list[dict] = []

    def broken_display(event) -> None:  # a rendering bug, on every piece of the reply
        if event.type == "model.text_delta":
            raise TypeError("cannot draw this")

    async def scenario() -> str:
        with ScriptedModelServer([patch_reply(fix_diff("offbyone"), "The fix.")]) as server:
            session = driven_session(server, repo, seen)
            session.events.subscribe(broken_display)
            await session.open()
            outcome = await session.ask("fix the pager")
            await session.finish(outcome)
            return outcome

    assert asyncio.run(scenario()) == "passed"
    reported = [e for e in seen if e["type"] == "error"]
    assert [e["kind"] for e in reported] == ["subscriber"]  # once, though it raised each time
    assert "broken_display failed on a model.text_delta event" in reported[0]["message"]
    assert "TypeError: cannot draw this" in reported[0]["message"]
    assert seen[-1]["type"] == "session.end" and seen[-1]["outcome"] == "passed"


def test_a_file_added_while_the_baseline_runs_is_in_the_first_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "offbyone")
    seen: list[dict] = []

    async def scenario() -> tuple[str, str]:
        with ScriptedModelServer([patch_reply(fix_diff("offbyone"))]) as server:
            session = driven_session(server, repo, seen, test_cmd=f"sleep 1; {PYTEST_CMD}")
            opening = asyncio.ensure_future(session.open())
            while session.sandbox is None:  # (the TUI's /add, once the sandbox is reported)
                await asyncio.sleep(0.01)
            pinned = session.pin("README.md")
            assert not opening.done()  # the baseline still runs
            await opening
            outcome = await session.ask("fix the pager")
            await session.finish(outcome)
            return pinned, outcome

    assert asyncio.run(scenario()) == ("README.md", "passed")
    first = [e for e in seen if e["type"] == "model.request"][0]
    assert "### README.md\n" in json.dumps(first["messages"], ensure_ascii=False).replace(
        "\\n", "\n")
