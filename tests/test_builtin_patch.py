"""The Responses API's built-in apply_patch tool, end to end against the scripted server.

Each test runs the real `codeloop --task` on a copy of `sandbox/offbyone`, on a Responses wire
(HTTP SSE or WebSocket), and reads what went over the wire from the server's record: the tool
offered (`{"type": "apply_patch"}` or the function), the `apply_patch_call` items streamed with
their diff deltas, and the next request's `apply_patch_call_output` for each call. The session's
recording is then watched, re-executed and re-asked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PYTEST_CMD, git, make_repo, read_recording, run_codeloop
from tests.scripted_server import PatchCall, Reply, ScriptedModelServer, ToolCall

FIX = PatchCall("update_file", "pager/paginate.py",
                "@@ def page_count(total: int, per_page: int) -> int:\n"
                "-    return total // per_page + 1 if total else 0\n"
                "+    return (total + per_page - 1) // per_page\n", id="call_fix")
NO_MATCH = PatchCall("update_file", "pager/__init__.py",
                     "@@\n-from pager.paginate import nothing_like_this\n+import os\n",
                     id="call_bad")
NOTE = PatchCall("update_file", "pager/__init__.py",
                 '@@\n-"""Pagination helpers for slicing sequences into fixed-size pages."""\n'
                 '+"""Pagination helpers: fixed-size pages of a sequence."""\n', id="call_note")
BUILTIN_MODEL = "gpt-5.1-codex"
WIRES = ("responses-http", "responses-ws")


def _run(repo: Path, env: dict[str, str], server: ScriptedModelServer, wire: str,
         *extra: str, model: str = BUILTIN_MODEL):
    done = run_codeloop(repo, env, "--task", "make the tests pass", "--base-url",
                        server.base_url, "--model", model, "--transport", wire,
                        "--test-cmd", PYTEST_CMD, "--warm-tests", "off", "--json", *extra)
    return done, [json.loads(line) for line in done.stdout.splitlines()]


def _generating(server: ScriptedModelServer) -> list[dict]:
    """The bodies of the requests that asked for a reply (not a WebSocket's warm-up)."""
    return [r.body for r in server.responses_requests if r.body.get("generate") is not False]


def _inputs(body: dict, kind: str) -> list[dict]:
    return [item for item in body["input"] if item.get("type") == kind]


def _tool_types(body: dict) -> list[str]:
    return [t["type"] if t["type"] != "function" else t["name"] for t in body.get("tools", [])]


@pytest.mark.parametrize("wire", WIRES)
def test_a_builtin_patch_call_is_applied_and_answered_on_the_wire(tmp_path, isolated_env,
                                                                  wire):
    # turn 1 changes a docstring (the test still fails), turn 2 fixes the bug
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(patch_calls=[NOTE]), Reply(patch_calls=[FIX])]) as server:
        done, events = _run(repo, isolated_env, server, wire)
        first, second = _generating(server)
    assert done.returncode == 0, done.stderr
    # offered instead of the function, the read-only tools beside it
    assert _tool_types(first) == ["apply_patch", "list_files", "read_file", "search"]
    calls = [e for e in events if e["type"] == "model.tool_call"]
    assert [(c["kind"], c["call_id"]) for c in calls] == [("apply_patch_call", "call_note"),
                                                          ("apply_patch_call", "call_fix")]
    assert json.loads(calls[1]["arguments"]) == {"type": "update_file", "path": FIX.path,
                                                 "diff": FIX.diff}
    assert [e["outcome"] for e in events if e["type"] == "turn.end"] == ["applied", "applied"]
    [output] = _inputs(second, "apply_patch_call_output")
    assert output["call_id"] == "call_note" and output["status"] == "completed"
    assert "The patch was applied" in output["output"]
    # the test result, as a function call gets it: the tests that failed before, first
    assert "Test command result: 2 failed" in output["output"]
    assert "Only the tests that failed last time ran" in output["output"]
    if "previous_response_id" in second:  # the WebSocket continues: only the output is new
        assert second["input"] == [output]
    else:  # a stateless request carries the call again, as it came
        [again] = _inputs(second, "apply_patch_call")
        assert again["call_id"] == "call_note" and again["operation"]["diff"] == NOTE.diff
    assert "(total + per_page - 1) // per_page" in git(repo, "show", f"{_branch(events)}:"
                                                       "pager/paginate.py")


def _branch(events: list[dict]) -> str:
    return next(e["branch"] for e in events if e["type"] == "sandbox.ready")


def test_all_patch_calls_of_a_response_are_one_change(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    script = [Reply(patch_calls=[FIX, NO_MATCH]), Reply(text="I give up.")]
    with ScriptedModelServer(script) as server:
        done, events = _run(repo, isolated_env, server, "responses-http")
        second = _generating(server)[1]
    outcomes = [e["outcome"] for e in events if e["type"] == "turn.end"]
    assert outcomes[0] == "rejected" and done.returncode == 1, done.stderr
    # the call that fitted was not applied either: the sandbox is still at its base
    ready = next(e for e in events if e["type"] == "sandbox.ready")
    assert git(repo, "rev-parse", ready["branch"]).strip() == ready["head_commit"]
    outputs = {o["call_id"]: o for o in _inputs(second, "apply_patch_call_output")}
    assert {o["status"] for o in outputs.values()} == {"failed"}
    assert "NOT applied" in outputs["call_fix"]["output"]
    assert "pager/__init__.py" in outputs["call_fix"]["output"]


def test_a_malformed_operation_refuses_the_whole_change(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    hostile = PatchCall("create_file", "../outside.py", "+x = 1\n", id="call_out")
    script = [Reply(patch_calls=[FIX, hostile]), Reply(text="Stopping.")]
    with ScriptedModelServer(script) as server:
        done, events = _run(repo, isolated_env, server, "responses-ws")
        second = _generating(server)[1]
    assert [e["outcome"] for e in events if e["type"] == "turn.end"][0] == "rejected"
    assert not (tmp_path / "outside.py").exists()
    [rejected] = [e for e in events if e["type"] == "patch.rejected"]
    assert "outside.py" in rejected["reason"]
    assert {o["status"] for o in _inputs(second, "apply_patch_call_output")} == {"failed"}


def test_a_server_that_refuses_the_builtin_tool_gets_the_function_once(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    v4a = "*** Begin Patch\n*** Update File: pager/paginate.py\n" + FIX.diff + "*** End Patch\n"
    script = [Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": v4a}))]),
              Reply(text="Fixed.")]
    with ScriptedModelServer(script, builtin_patch=False) as server:
        done, events = _run(repo, isolated_env, server, "responses-http")
        bodies = [r.body for r in server.responses_requests]
    assert done.returncode == 0, done.stderr
    [fallback] = [e for e in events if e["type"] == "error" and e["kind"] == "fallback"]
    assert "refused the built-in apply_patch tool" in fallback["message"]
    assert [_tool_types(b)[0] for b in bodies] == ["apply_patch"] * 2
    assert [b["tools"][0]["type"] for b in bodies] == ["apply_patch", "function"]
    # the refused request's input goes again, whole
    assert bodies[1]["input"] == bodies[0]["input"]


@pytest.mark.parametrize(("wire", "model", "extra", "builtin"), [
    ("chat", BUILTIN_MODEL, (), False),  # the chat wire keeps the function
    ("responses-http", "gpt-4.1", (), False),  # a model without the built-in tool
    ("responses-http", BUILTIN_MODEL, ("--edit-tool", "function"), False),
    ("responses-http", "scripted", ("--edit-tool", "builtin"), True),
    ("responses-http", "my-model", ("--builtin-patch-models", "my-*"), True),
])
def test_the_builtin_tool_is_offered_where_the_wire_the_model_and_edit_tool_say(
        tmp_path, isolated_env, wire, model, extra, builtin):
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(text="Nothing to do.")]) as server:
        done, events = _run(repo, isolated_env, server, wire, *extra, model=model)
        [body] = [r.body for r in server.requests if r.body and "model" in r.body]
    tools = [t.get("type") if t.get("type") != "function" else
             (t.get("function") or t)["name"] for t in body["tools"]]
    assert tools[0] == "apply_patch", done.stderr
    assert (body["tools"][0]["type"] == "apply_patch") is builtin
    [request] = [e for e in events if e["type"] == "model.request"]
    assert request["tools"][0] == ("apply_patch (built-in)" if builtin else "apply_patch")


def test_a_recorded_builtin_session_is_watched_re_executed_and_re_asked(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    with ScriptedModelServer([Reply(patch_calls=[NOTE]), Reply(patch_calls=[FIX])]) as server:
        done, _ = _run(repo, isolated_env, server, "responses-http")
    assert done.returncode == 0, done.stderr
    recording = next((repo / ".codeloop" / "sessions").glob("*.jsonl"))
    recorded = read_recording(repo)
    watched = run_codeloop(repo, isolated_env, "replay", str(recording), "--json")
    calls = [json.loads(line) for line in watched.stdout.splitlines()
             if '"model.tool_call"' in line]
    assert [c["kind"] for c in calls] == ["apply_patch_call"] * 2, watched.stderr

    again = run_codeloop(repo, isolated_env, "replay", str(recording), "--re-execute")
    assert again.returncode == 0 and "matched the recording" in again.stdout, again.stderr

    with ScriptedModelServer([Reply(text="a"), Reply(text="b")]) as server:
        asked = run_codeloop(repo, isolated_env, "replay", str(recording), "--ask",
                             "--base-url", server.base_url, "--transport", "responses-http",
                             "--json")
        bodies = [r.body for r in server.responses_requests]
    assert asked.returncode == 0, asked.stderr
    assert bodies[0]["tools"][0] == {"type": "apply_patch"}
    [call] = _inputs(bodies[1], "apply_patch_call")
    [output] = _inputs(bodies[1], "apply_patch_call_output")
    assert call["operation"] == json.loads(
        next(e for e in recorded if e["type"] == "model.tool_call")["arguments"])
    assert output["call_id"] == call["call_id"] == "call_note"
    assert output["status"] == "completed"


def _v4a(call: PatchCall) -> str:
    return f"*** Begin Patch\n*** Update File: {call.path}\n{call.diff}*** End Patch\n"


@pytest.mark.parametrize("wire", ("chat", *WIRES))
def test_a_freeform_tool_call_is_read_and_answered_as_one(tmp_path, isolated_env, wire):
    # a model may call apply_patch as a freeform (custom) tool: its input is the raw patch
    repo = make_repo(tmp_path, "offbyone")
    script = [Reply(tool_calls=[ToolCall("apply_patch", _v4a(NOTE), "call_free", custom=True)]),
              Reply(tool_calls=[ToolCall("apply_patch", _v4a(FIX), custom=True)])]
    with ScriptedModelServer(script) as server:
        done, events = _run(repo, isolated_env, server, wire)
        second = (server.chat_requests[1].body if wire == "chat" else _generating(server)[1])
    assert done.returncode == 0, done.stderr
    assert [c["kind"] for c in events if c["type"] == "model.tool_call"] == ["custom"] * 2
    assert [e["outcome"] for e in events if e["type"] == "turn.end"] == ["applied", "applied"]
    if wire == "chat":
        call = next(m for m in second["messages"] if m.get("tool_calls"))["tool_calls"][0]
        assert call["type"] == "custom" and call["custom"]["input"] == _v4a(NOTE)
        output = next(m for m in second["messages"] if m["role"] == "tool")
        assert output["tool_call_id"] == "call_free" and set(output) == {
            "role", "tool_call_id", "content"}
        assert "The patch was applied" in output["content"]
        return
    [output] = _inputs(second, "custom_tool_call_output")
    assert output["call_id"] == "call_free" and "The patch was applied" in output["output"]
    if "previous_response_id" not in second:
        [again] = _inputs(second, "custom_tool_call")
        assert again["input"] == _v4a(NOTE) and again["name"] == "apply_patch"
