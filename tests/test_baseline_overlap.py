"""The first request need not wait for the baseline: on the same files and test command, the
last session's baseline goes to the model at once while this session's run confirms it.

Each test runs the real `codeloop --task` twice on one repository (same cache), against the
scripted server, and reads the order of the events and what the model was told.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import PYTEST_CMD, fix_diff, git, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall


def _fix() -> Reply:
    return Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))])


def _session(repo: Path, env: dict[str, str], replies: list[Reply], *extra: str):
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, env, "--task", "make the tests pass", "--base-url",
                            server.base_url, "--model", "scripted", "--test-cmd", PYTEST_CMD,
                            "--json", *extra)
        bodies = [r.body for r in server.chat_requests]
    return done, [json.loads(line) for line in done.stdout.splitlines()], bodies


def _order(events: list[dict]) -> list[str]:
    return [e["type"] if e["type"] != "test.done" else f"test.done:{e['turn']}"
            for e in events if e["type"] in ("model.request", "test.done", "notice")]


def test_a_second_session_asks_at_once_and_a_patch_stops_the_confirming_baseline(
        tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    # a slow test: the confirming baseline is surely still running when the patch arrives
    (repo / "tests" / "test_slow.py").write_text(
        "import time\n\ndef test_slow():\n    time.sleep(1.5)\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a slow test")
    done, first, _ = _session(repo, isolated_env, [Reply(text="Looking.")])
    assert _order(first)[:2] == ["test.done:0", "model.request"], done.stderr
    done, second, bodies = _session(repo, isolated_env, [_fix()])
    assert done.returncode == 0, done.stderr
    assert _order(second)[:2] == ["notice", "model.request"]
    told, stopped = [e for e in second if e["type"] == "notice"]
    assert told["kind"] == "baseline" and "2 failed" in told["message"]
    assert stopped["kind"] == "baseline" and "stopped before it finished" in stopped["message"]
    # the model was shown the remembered failures; the patch's run went first, and passed
    assert "test_partial_last_page_counts" in json.dumps(bodies[0]["messages"])
    assert [(e["turn"], e["passed"]) for e in second if e["type"] == "test.done"] == [(1, True)]
    end = json.loads(done.stdout.splitlines()[-1])
    assert end["type"] == "session.end" and end["outcome"] == "passed"


def test_a_confirming_baseline_that_differs_is_told_to_the_model(tmp_path, isolated_env):
    # the test reads a file outside the repository: same files, another result
    outside = tmp_path / "limit.txt"
    outside.write_text("7\n")
    repo = make_repo(tmp_path, "offbyone")
    (repo / "tests" / "test_outside.py").write_text(
        f"def test_outside():\n    assert open({str(outside)!r}).read().strip() == '7'\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a test of the outside world")
    _session(repo, isolated_env, [Reply(text="Looking.")])
    outside.write_text("8\n")  # now it fails too, though no file of the repo changed
    # a model slow to answer: the confirmation ends first, and its result is taken
    fix = _fix()
    fix.stall_s = 4.0
    done, events, bodies = _session(repo, isolated_env, [fix, Reply(text="Done.")])
    baseline = next(e for e in events if e["type"] == "test.done" and e["turn"] == 0)
    assert "tests/test_outside.py::test_outside" in [f["id"] for f in baseline["failures"]]
    told = json.dumps(bodies[1]["messages"][-1])
    assert "has finished with another result" in told and "test_outside" in told
    assert done.returncode == 1  # the verdict is this session's, not the remembered one


def test_without_a_memo_the_first_request_waits_for_the_baseline(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    done, events, _ = _session(repo, isolated_env, [_fix()])
    assert done.returncode == 0, done.stderr
    assert _order(events)[:2] == ["test.done:0", "model.request"]
    assert not [e for e in events if e["type"] == "notice"]
