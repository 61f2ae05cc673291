"""The `--json` event stream and the requests on the wire, compared with recorded golden files.

Three scripted sessions (Chat Completions with tools; the Responses API over HTTP; text mode
with a fenced diff) run as a user runs them. Their event streams and the request bodies the
server received must equal `tests/data/golden/*.json`, once the values that differ from run to
run (times, durations, ids, paths, commit hashes) are replaced by placeholders. The golden files
were written by the code before the restructuring of issue 13; a change in what codeloop emits
or sends shows here as a diff. To accept an intended change, run with CODELOOP_WRITE_GOLDEN=1 and
review the diff of the golden files.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTEST_CMD, fix_diff, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
# numbers that are measured, not decided: they differ on every run
TIMED = re.compile(r"(^t$|_ms$|_s$|^tokens_per_s$|_us_per_token$|^elapsed$)")
SECONDS = re.compile(r"\b\d+\.\d+s\b")
HASH = re.compile(r"\b[0-9a-f]{40}\b|\b[0-9a-f]{10}\b")
SESSION_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")
CACHE_KEY = re.compile(r"codeloop:[0-9a-f]{16}")  # of the repo's path


def _patch(diff: str) -> ToolCall:
    return ToolCall("apply_patch", json.dumps({"patch": diff}))


def _scenarios() -> dict[str, tuple[str, list[Reply], list[str]]]:
    wrong = fix_diff("twomodules").replace("def format_cents(cents: int)", "def fmt(cents)")
    looks = [ToolCall("read_file", json.dumps({"path": "ledger/parse.py", "start_line": 18})),
             ToolCall("search", json.dumps({"pattern": "def format_cents"}))]
    return {
        "chat_tools": ("twomodules", [
            Reply(text="Looking first.", tool_calls=looks),
            Reply(tool_calls=[_patch(wrong)]),
            Reply(text="Corrected.", tool_calls=[_patch(fix_diff("twomodules"))])], []),
        "responses_http": ("twomodules", [
            Reply(text="Looking first.", tool_calls=looks[:1]),
            Reply(tool_calls=[_patch(wrong)]),
            Reply(text="Corrected.", tool_calls=[_patch(fix_diff("twomodules"))])],
            ["--transport", "responses-http"]),
        "responses_ws": ("offbyone", [Reply(tool_calls=[_patch(fix_diff("offbyone"))])],
                         ["--transport", "responses-ws"]),
        "text_mode": ("newfile", [
            Reply(text="Here it is:\n\n```diff\n" + fix_diff("newfile") + "```\n")],
            ["--edit-mode", "text"]),
    }


def _normalise(value: Any, names: dict[str, str], key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, names, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, names, key) for v in value]
    if isinstance(value, float | int) and not isinstance(value, bool) and TIMED.search(key):
        return "<measured>"
    if isinstance(value, str):
        for real, placeholder in names.items():
            value = value.replace(real, placeholder)
        value = CACHE_KEY.sub("codeloop:<repo>", SESSION_ID.sub("<session>", value))
        return HASH.sub("<hash>", SECONDS.sub("<seconds>", value))
    return value


def _stream(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events, with the test output's pieces (cut where the pipe's reads fell) joined."""
    joined: list[dict[str, Any]] = []
    for event in events:
        last = joined[-1] if joined else {}
        if event["type"] == "test.output" and last.get("type") == "test.output":
            last["text"] += event["text"]
        else:
            joined.append(dict(event))
    return joined


def _run(tmp_path: Path, env: dict[str, str], name: str) -> dict[str, Any]:
    project, replies, extra = _scenarios()[name]
    repo = make_repo(tmp_path, project)
    # pytest writes its failure summary whole under CI (or BUILD_NUMBER), cut to the width
    # otherwise: the test output the golden files hold is that of a run outside CI
    env = {name: value for name, value in env.items() if name not in ("CI", "BUILD_NUMBER")}
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, env, "--task", "make the tests pass", "--base-url",
                            server.base_url, "--model", "scripted", "--test-cmd", PYTEST_CMD,
                            "--warm-tests", "off", "--json", *extra)
        bodies = [r.body for r in server.requests if r.body is not None]
        base_url = server.base_url
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events and events[-1]["type"] == "session.end", done.stderr
    sandbox = next(e["path"] for e in events if e["type"] == "sandbox.ready")
    names = {sandbox: "<sandbox>", str(repo): "<repo>", base_url: "<base_url>",
             str(tmp_path): "<tmp>", sys.executable: "<python>"}  # (the checkout's venv)
    return _normalise({"exit_code": done.returncode, "events": _stream(events),
                       "requests": bodies}, names)


@pytest.mark.parametrize("name", sorted(_scenarios()))
def test_the_event_stream_and_the_requests_are_as_recorded(tmp_path, isolated_env, name):
    got = _run(tmp_path, isolated_env, name)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("CODELOOP_WRITE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    expected = json.loads(path.read_text())
    assert got["exit_code"] == expected["exit_code"]
    assert [e["type"] for e in got["events"]] == [e["type"] for e in expected["events"]]
    for got_event, expected_event in zip(got["events"], expected["events"], strict=True):
        assert got_event == expected_event
    assert got["requests"] == expected["requests"]
