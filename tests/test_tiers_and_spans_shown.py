"""The service tier asked for (key, flag, variable, file) and the one that served; the server's
own account of each turn (queue, prefill, decode, network, prompt tokens processed and reused)
in `turn.end`, in the headless per-turn line and final summary, and on the latency panel.

Real sessions (`codeloop --task` against the scripted server over 127.0.0.1, which reports its
time as llama.cpp, Groq or not at all, and echoes or overrides the tier); the panel is fed the
events of the real recording those sessions leave.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from codeloop.config import load_config
from codeloop.frontends.latency import LatencyModel
from codeloop.frontends.tui.panel import LatencyPanel
from codeloop.replay.playback import load
from tests.conftest import PYTEST_CMD, fix_diff, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

SERVER_SPANS = ("server_queue_ms", "server_prefill_ms", "server_decode_ms", "network_ms")


def fixing_reply(**fields) -> Reply:
    patch = ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))
    return Reply(text="Fixed.", tool_calls=[patch], **fields)


def session(tmp_path: Path, env: dict[str, str], reply: Reply, *flags: str, name: str = "repo"
            ) -> tuple[object, list[dict], Path]:
    """One headless session fixing the pager; its result, the chat request bodies the server
    got, and the repository (with the recording)."""
    repo = make_repo(tmp_path / name, "offbyone")
    with ScriptedModelServer([reply]) as server:
        done = run_codeloop(repo, env, "--task", "fix the pager", "--base-url", server.base_url,
                            "--model", "scripted", "--test-cmd", PYTEST_CMD, *flags)
        bodies = [request.body for request in server.chat_requests]
    assert done.returncode == 0, done.stdout + done.stderr
    return done, bodies, repo


def of_type(stdout: str, kind: str) -> list[dict]:
    return [e for e in map(json.loads, stdout.splitlines()) if e["type"] == kind]


def test_the_tier_asked_is_sent_and_recorded_and_the_tier_served_is_kept_per_turn(
        tmp_path, isolated_env):
    reply = fixing_reply(timing="groq", stall_s=0.05, served_tier="on_demand")
    done, bodies, _ = session(tmp_path, isolated_env, reply, "--service-tier", "flex", "--json")
    assert [body.get("service_tier") for body in bodies] == ["flex"]
    assert of_type(done.stdout, "session.start")[0]["service_tier"] == "flex"
    (end,) = of_type(done.stdout, "turn.end")
    assert end["cache"]["service_tier"] == "on_demand"
    assert set(SERVER_SPANS) <= set(end["spans"]), end["spans"]
    assert end["spans"]["server_queue_ms"] >= 0 and end["spans"]["network_ms"] is not None
    totals = of_type(done.stdout, "session.end")[0]["totals"]
    assert totals["server_prefill_ms"] == end["spans"]["server_prefill_ms"]


def test_the_variable_and_the_file_set_the_tier_and_the_flag_wins(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    (repo / ".codeloop.toml").write_text('service_tier = "auto"\n')
    assert load_config(repo, {})[0].service_tier == "auto"
    env = {**isolated_env, "CODELOOP_SERVICE_TIER": "priority"}
    done, bodies, _ = session(tmp_path, env, fixing_reply(), "--json", name="variable")
    assert [body.get("service_tier") for body in bodies] == ["priority"]
    assert of_type(done.stdout, "session.start")[0]["service_tier"] == "priority"
    done, bodies, _ = session(tmp_path, env, fixing_reply(), "--json", "--service-tier",
                              "default", name="flag")
    assert [body.get("service_tier") for body in bodies] == ["default"]


def test_llama_cpp_timings_fill_the_turns_prefill_decode_and_prompt_tokens(tmp_path,
                                                                          isolated_env):
    done, bodies, _ = session(tmp_path, isolated_env, fixing_reply(cached_tokens=8), "--json")
    assert "service_tier" not in bodies[0]  # none asked: none sent
    (end,) = of_type(done.stdout, "turn.end")
    assert {"server_prefill_ms", "server_decode_ms"} <= set(end["spans"]), end["spans"]
    assert end["cache"]["prompt_tokens_reused"] == 8
    assert end["cache"]["prompt_tokens_processed"] > 0
    assert "service_tier" not in end["cache"]  # the server said none


def test_the_headless_turn_line_and_summary_show_the_servers_account_and_the_tiers(
        tmp_path, isolated_env):
    reply = fixing_reply(timing="groq", stall_s=0.05, served_tier="on_demand")
    done, _, _ = session(tmp_path, isolated_env, reply, "--service-tier", "flex")
    err = done.stderr
    assert "tier flex · tests:" in err  # the session's first line: the tier asked
    turn_line = next(line for line in err.splitlines() if line.startswith("  server: queue"))
    assert "prefill" in turn_line and "network" in turn_line and "tier on_demand" in turn_line
    summary = err[err.index("══"):]
    assert "server: queue" in summary and "(summed over the turns it reported)" in summary
    assert "service tier: asked flex, served on_demand ×1" in summary


def test_a_server_that_reports_nothing_gets_nothing_shown(tmp_path, isolated_env):
    done, _, _ = session(tmp_path, isolated_env, fixing_reply(timing=""), "--json")
    (end,) = of_type(done.stdout, "turn.end")
    assert not set(SERVER_SPANS) & set(end["spans"]), end["spans"]
    assert "prompt_tokens_processed" not in end["cache"]
    assert not set(SERVER_SPANS) & set(of_type(done.stdout, "session.end")[0]["totals"])
    done, _, _ = session(tmp_path, isolated_env, fixing_reply(timing=""), name="shown")
    assert "server:" not in done.stderr and "service tier" not in done.stderr


def recorded_events(repo: Path) -> list:
    return load(next((repo / ".codeloop" / "sessions").glob("*.jsonl"))).events


def panel_text(model: LatencyModel) -> str:
    console = Console(width=60, record=True)
    console.print(LatencyPanel(model).render_figures(60))
    return console.export_text()


def test_the_panel_shows_queue_prefill_and_network_rows_and_the_tier_in_the_running_turn(
        tmp_path, isolated_env):
    reply = fixing_reply(timing="groq", stall_s=0.05, served_tier="on_demand")
    _, _, repo = session(tmp_path, isolated_env, reply, "--service-tier", "flex")
    events = recorded_events(repo)
    at = {"t": 0.0}
    model = LatencyModel(lambda: at["t"])
    for event in events:
        at["t"] = event.t
        model(event)
        if event.type == "model.done":  # the turn runs on: apply, tests
            break
    running = panel_text(model)
    for label in ("server queue", "server prefill", "network"):
        row = next(line for line in running.splitlines() if line.strip().startswith(label))
        assert row.rstrip().endswith("ms"), row
    assert "tier on_demand (asked flex)" in running
    for later in events[events.index(event) + 1:]:
        model(later)
    assert "server prefill" in panel_text(model) and model.turns[-1].done


def test_the_panel_shows_no_server_rows_where_the_server_said_nothing(tmp_path, isolated_env):
    _, _, repo = session(tmp_path, isolated_env, fixing_reply(timing=""))
    model = LatencyModel(lambda: 0.0)
    for event in recorded_events(repo):
        model(event)
    text = panel_text(model)
    assert "server queue" not in text and "tier" not in text
