"""`replay --ask` builds its client from the configuration as a live session does: the output
token cap, the request timeout and the service tier come from `.codeloop.toml`, the CODELOOP_*
variables and the flags (later wins), not from constants; and it prints the server's own
account of each new reply (prefill, queue, network, the tier that served).

A real recording (codeloop against the scripted server), re-asked of the scripted server over
real HTTP on 127.0.0.1; the server's log of request bodies shows what was asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PYTEST_CMD, fix_diff, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall


@pytest.fixture
def recorded(tmp_path, isolated_env) -> tuple[Path, Path]:
    """A repo and the recording of codeloop fixing it in one turn."""
    repo = make_repo(tmp_path, "offbyone")
    patch = ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))
    with ScriptedModelServer([Reply(text="Fixed.", tool_calls=[patch])]) as server:
        done = run_codeloop(repo, isolated_env, "--task", "fix the pager", "--base-url",
                            server.base_url, "--model", "scripted", "--test-cmd", PYTEST_CMD)
    assert done.returncode == 0, done.stderr
    return repo, next((repo / ".codeloop" / "sessions").glob("*.jsonl"))


def ask(repo: Path, env: dict[str, str], recording: Path, *flags: str,
        replies: list[Reply] | None = None) -> tuple[object, list[dict]]:
    """`codeloop replay RECORDING --ask` against a fresh scripted server; its result and the
    bodies of the chat requests the server received."""
    with ScriptedModelServer(replies or [Reply(text="again")]) as server:
        done = run_codeloop(repo, env, "replay", str(recording), "--ask", "--base-url",
                            server.base_url, *flags)
        bodies = [request.body for request in server.chat_requests]
    return done, bodies


def test_ask_takes_max_output_tokens_from_the_file_then_the_variable_then_the_flag(
        recorded, isolated_env):
    repo, recording = recorded
    (repo / ".codeloop.toml").write_text("max_output_tokens = 77\n")
    done, bodies = ask(repo, isolated_env, recording)
    assert done.returncode == 0, done.stderr
    assert [body["max_tokens"] for body in bodies] == [77]
    env = {**isolated_env, "CODELOOP_MAX_OUTPUT_TOKENS": "55"}
    done, bodies = ask(repo, env, recording)
    assert done.returncode == 0, done.stderr
    assert [body["max_tokens"] for body in bodies] == [55]
    done, bodies = ask(repo, env, recording, "--max-output-tokens", "33")
    assert done.returncode == 0, done.stderr
    assert [body["max_tokens"] for body in bodies] == [33]


def test_a_flag_before_replay_counts_as_one_after_it(recorded, isolated_env):
    repo, recording = recorded
    with ScriptedModelServer([Reply(text="again")]) as server:
        done = run_codeloop(repo, isolated_env, "--max-output-tokens", "44", "replay",
                            str(recording), "--ask", "--base-url", server.base_url)
        bodies = [request.body for request in server.chat_requests]
    assert done.returncode == 0, done.stderr
    assert [body["max_tokens"] for body in bodies] == [44]


def test_a_reply_that_stalls_past_the_configured_timeout_stops_the_ask(recorded, isolated_env):
    repo, recording = recorded
    (repo / ".codeloop.toml").write_text("request_timeout_s = 0.3\n")
    done, _ = ask(repo, isolated_env, recording, replies=[Reply(text="late", stall_s=5)])
    assert done.returncode == 3, done.stdout + done.stderr
    assert "--ask stopped" in done.stderr and "timeout" in done.stderr.lower(), done.stderr


def test_ask_sends_the_configured_tier_and_prints_the_servers_account(recorded, isolated_env):
    repo, recording = recorded
    reply = Reply(text="again", timing="groq", stall_s=0.05, served_tier="on_demand")
    env = {**isolated_env, "CODELOOP_SERVICE_TIER": "flex"}
    done, bodies = ask(repo, env, recording, replies=[reply])
    assert done.returncode == 0, done.stderr
    assert [body.get("service_tier") for body in bodies] == ["flex"]
    header, columns, row = done.stdout.splitlines()[:3]
    assert "server, now (ms)" in header
    assert columns.split()[-4:] == ["prefill", "queue", "network", "tier"]
    prefill, queue, network, tier = row.split()[-4:]
    assert tier == "on_demand"
    assert float(queue) >= 0 and float(prefill) >= 0 and network != "–"
    done, _ = ask(repo, env, recording, "--json",
                  replies=[Reply(text="again", timing="groq", served_tier="on_demand")])
    now = json.loads(done.stdout)["turns"][0]["now"]
    assert now["service_tier"] == "on_demand" and now["server_queue_ms"] is not None


def test_a_reply_without_the_servers_account_shows_dashes_not_zeros(recorded, isolated_env):
    repo, recording = recorded
    done, bodies = ask(repo, isolated_env, recording, replies=[Reply(text="again", timing="")])
    assert done.returncode == 0, done.stderr
    assert "service_tier" not in bodies[0]
    row = done.stdout.splitlines()[2]
    assert row.split()[-4:] == ["–", "–", "–", "–"], row
