"""Recorded sessions: watch, re-execute (at the recorded commit and at a later one), re-ask with
SLOs, damaged recordings, and the offline demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PYTEST_CMD, fix_diff, git, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall


@pytest.fixture
def recorded(tmp_path, isolated_env) -> tuple[Path, Path]:
    """A repo and the recording of codeloop fixing it in two turns (one rejected hunk)."""
    repo = make_repo(tmp_path, "offbyone")
    wrong = fix_diff("offbyone").replace("    if total < 0:", "    if total <= 0:")
    patch = ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))
    replies = [Reply(text="```diff\n" + wrong + "```\n"), Reply(text="Fixed.", tool_calls=[patch])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, "--task", "fix the pager", "--base-url",
                            server.base_url, "--model", "scripted", "--test-cmd", PYTEST_CMD)
    assert done.returncode == 0, done.stderr
    return repo, next((repo / ".codeloop" / "sessions").glob("*.jsonl"))


def without_time(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "t"} for e in events]


def test_watch_reproduces_the_recorded_event_sequence(recorded, isolated_env):
    repo, recording = recorded
    done = run_codeloop(repo, isolated_env, "replay", str(recording), "--json")
    assert done.returncode == 0, done.stderr
    original = [json.loads(line) for line in recording.read_text().splitlines()]
    assert without_time([json.loads(line) for line in done.stdout.splitlines()]) == \
        without_time(original)
    printed = run_codeloop(repo, isolated_env, "replay", str(recording), "--headless",
                           "--speed", "max")
    assert "patch rejected" in printed.stderr and "tests: 7 passed" in printed.stderr


def test_re_execute_on_the_recorded_commit_reports_no_divergence(recorded, isolated_env):
    repo, recording = recorded
    done = run_codeloop(repo, isolated_env, "replay", str(recording), "--re-execute",
                        "--speed", "max")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "re-execution matched the recording: 2 turn(s)" in done.stdout


@pytest.mark.parametrize("speed", ["1", "10", "max"])
def test_re_execute_books_the_model_time_it_spent_never_more(recorded, isolated_env, speed):
    # a re-executed turn's model spans are those of the replay itself (the recorded pace, or
    # faster): the harness overhead left over is then our own, never negative (at --speed max
    # the recorded spans made it -800 ms)
    repo, recording = recorded
    done = run_codeloop(repo, isolated_env, "replay", str(recording), "--re-execute", "--json",
                        "--speed", speed)
    assert done.returncode == 0, done.stdout + done.stderr
    turns = [json.loads(line) for line in done.stdout.splitlines()
             if json.loads(line)["type"] == "turn.end"]
    assert len(turns) == 2
    assert all(t["spans"]["overhead_ms"] >= 0 for t in turns), [t["spans"] for t in turns]
    if speed == "max":  # nothing waited for: no recorded decode time booked
        assert all(t["spans"]["decode_ms"] < 200 for t in turns), [t["spans"] for t in turns]


def test_re_execute_at_a_later_commit_reports_the_divergence_precisely(recorded, isolated_env):
    repo, recording = recorded
    source = repo / "pager" / "paginate.py"
    source.write_text(source.read_text().replace("return total // per_page + 1 if total else 0",
                                                 "return -(-total // per_page)"))
    git(repo, "commit", "-q", "-am", "someone fixed it differently")
    done = run_codeloop(repo, isolated_env, "replay", str(recording), "--re-execute",
                        "--at", "HEAD", "--speed", "max")
    assert done.returncode == 1
    report = done.stdout[done.stdout.index("re-execution diverged"):]
    assert "turn 2: patch 'applied pager/paginate.py' when recorded, 'rejected' now" in report
    assert "hunk 1" in report and "pager/paginate.py" in report


def test_ask_prints_the_comparison_and_honours_the_slo(recorded, isolated_env):
    repo, recording = recorded
    with ScriptedModelServer([Reply(text="again") for _ in range(4)]) as server:
        ok = run_codeloop(repo, isolated_env, "replay", str(recording), "--ask", "--base-url",
                          server.base_url, "--slo", "ttft_p95<60s,round_trip_median<60s")
    assert ok.returncode == 0, ok.stderr
    assert "TTFT ms" in ok.stdout and "median" in ok.stdout and "p95" in ok.stdout
    assert "SLO ttft_p95<60s: ok" in ok.stderr
    with ScriptedModelServer([Reply(text="again") for _ in range(4)]) as server:
        bad = run_codeloop(repo, isolated_env, "replay", str(recording), "--ask", "--base-url",
                           server.base_url, "--json", "--slo", "decode_tps_median>1000000000")
    assert bad.returncode == 1 and "VIOLATED" in bad.stderr
    figures = json.loads(bad.stdout)
    assert len(figures["turns"]) == 2 and "ttft_ms_p95" in figures["summary"]["now"]


def test_damaged_recordings_get_clear_errors(recorded, tmp_path, isolated_env):
    repo, recording = recorded
    lines = recording.read_text().splitlines(keepends=True)
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    done = run_codeloop(repo, isolated_env, "replay", str(truncated), "--json")
    assert done.returncode == 0 and "cut off" in done.stderr
    assert len(done.stdout.splitlines()) == len(lines) - 1
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    done = run_codeloop(repo, isolated_env, "replay", str(corrupt))
    assert done.returncode == 2 and "line 2 is corrupt" in done.stderr
    newer = tmp_path / "newer.jsonl"
    first = json.loads(lines[0])
    newer.write_text(json.dumps({**first, "format": 99}) + "\n" + "".join(lines[1:]))
    done = run_codeloop(repo, isolated_env, "replay", str(newer))
    assert done.returncode == 2 and "format 99 is newer" in done.stderr
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": "world"}\n')
    done = run_codeloop(repo, isolated_env, "replay", str(other))
    assert done.returncode == 2 and "not a codeloop recording" in done.stderr


def test_the_demo_runs_headless_to_a_passing_test_suite(tmp_path, isolated_env):
    done = run_codeloop(tmp_path, isolated_env, "demo", "--speed", "max", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tests: 7 passed" in done.stderr
    assert "re-execution matched the recording" in done.stdout
