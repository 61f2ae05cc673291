"""Damaged recordings and failing replays end with a precise error, never a traceback.

Each case damages a copy of the bundled recording (a real session of codeloop fixing
`sandbox/offbyone`) in one way and runs the real `codeloop replay` on it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SANDBOX, git, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer

BUNDLED = SANDBOX / "sessions" / "offbyone.jsonl"
Damage = Callable[[list[dict]], None]


def bundled_events() -> list[dict]:
    return [json.loads(line) for line in BUNDLED.read_text().splitlines()]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_events(path: Path, events: list[dict]) -> Path:
    return write_lines(path, [json.dumps(event) for event in events])


def set_field(line: int, name: str, value: object) -> Damage:
    def damage(events: list[dict]) -> None:
        events[line - 1][name] = value
    return damage


def drop_field(line: int, name: str) -> Damage:
    def damage(events: list[dict]) -> None:
        del events[line - 1][name]
    return damage


# (line number, field named in the error, damage); lines of the bundled recording: 1
# session.start, 3 test.start, 17 test.done, 20 model.request, 191 model.done
DAMAGED_FIELDS = {
    "non-numeric t": (3, "t", set_field(3, "t", "soon")),
    "infinite t": (3, "t", set_field(3, "t", float("inf"))),
    "turn as text": (3, "turn", set_field(3, "turn", "zero")),
    "bool for an int": (17, "exit_code", set_field(17, "exit_code", True)),
    "missing field": (3, "command", drop_field(3, "command")),
    "usage value as text": (191, "usage", set_field(191, "usage", {"prompt_tokens": "many"})),
    "message not an object": (20, "messages", set_field(20, "messages", ["hello"])),
    "type not a string": (3, "type", set_field(3, "type", 7)),
    "session.start model": (1, "model", set_field(1, "model", 5)),
}


@pytest.mark.parametrize("case", DAMAGED_FIELDS)
def test_an_event_with_a_field_of_the_wrong_type_is_named_with_its_line(
        case, tmp_path, isolated_env):
    line, name, damage = DAMAGED_FIELDS[case]
    events = bundled_events()
    damage(events)
    damaged = write_events(tmp_path / "damaged.jsonl", events)
    done = run_codeloop(tmp_path, isolated_env, "replay", str(damaged), "--json")
    assert done.returncode == 2, done.stderr
    assert f"line {line}" in done.stderr and f"'{name}'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("value", ["[1, 2]", '"session.end"', "42", "null"])
def test_a_line_that_is_json_but_not_an_object_is_named(value, tmp_path, isolated_env):
    lines = BUNDLED.read_text().splitlines()
    damaged = write_lines(tmp_path / "damaged.jsonl", [*lines[:4], value, *lines[4:]])
    done = run_codeloop(tmp_path, isolated_env, "replay", str(damaged), "--headless",
                        "--speed", "max")
    assert done.returncode == 2, done.stderr
    assert "line 5 is not a JSON object" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_events_and_fields_of_a_newer_codeloop_are_skipped_with_one_notice(
        tmp_path, isolated_env):
    events = bundled_events()
    events[190]["reasoning_tokens"] = 12  # model.done, line 191
    events[18]["priority"] = "high"  # turn.start, line 19
    events.insert(19, {"type": "model.thinking", "t": 0.9, "turn": 1, "text": "hmm"})
    events.insert(3, {"type": "sandbox.note", "t": 0.2, "text": "from the future"})
    newer = write_events(tmp_path / "newer.jsonl", events)
    done = run_codeloop(tmp_path, isolated_env, "replay", str(newer), "--json")
    assert done.returncode == 0, done.stderr
    as_bundled = run_codeloop(tmp_path, isolated_env, "replay", str(BUNDLED), "--json")
    assert done.stdout == as_bundled.stdout  # what this codeloop knows plays as it was
    notices = done.stderr.splitlines()
    assert len(notices) == 1, notices
    for name in ("model.thinking", "sandbox.note", "model.done.reasoning_tokens",
                 "turn.start.priority"):
        assert name in notices[0]


def test_a_recording_without_session_end_says_so(tmp_path, isolated_env):
    lines = BUNDLED.read_text().splitlines()
    unfinished = write_lines(tmp_path / "unfinished.jsonl", lines[:-1])
    done = run_codeloop(tmp_path, isolated_env, "replay", str(unfinished), "--json")
    assert done.returncode == 0, done.stderr
    assert "no session.end" in done.stderr
    assert len(done.stdout.splitlines()) == len(lines) - 1
    complete = run_codeloop(tmp_path, isolated_env, "replay", str(BUNDLED), "--json")
    assert complete.returncode == 0 and complete.stderr == ""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ask_of_an_unreachable_server_exits_3_with_the_transport_message(
        tmp_path, isolated_env):
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    done = run_codeloop(tmp_path, isolated_env, "replay", str(BUNDLED), "--ask",
                        "--base-url", base_url)
    assert done.returncode == 3, done.stderr
    assert f"cannot reach {base_url}" in done.stderr
    assert "Traceback" not in done.stderr


def test_ask_of_a_failing_server_exits_3_with_the_server_message(tmp_path, isolated_env):
    with ScriptedModelServer([Reply(status=500, error_message="the model fell over")]) as server:
        done = run_codeloop(tmp_path, isolated_env, "replay", str(BUNDLED), "--ask",
                            "--base-url", server.base_url, "--json")
    assert done.returncode == 3, done.stderr
    assert "the model fell over" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_re_execute_at_a_revision_that_does_not_exist_is_a_usage_error(
        tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    done = run_codeloop(repo, isolated_env, "replay", str(BUNDLED), "--re-execute",
                        "--at", "nope", "--speed", "max")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "'nope' is not a commit" in done.stderr
    assert "diverged" not in done.stdout
    # nothing was made for a session that could not start: no recording, no sandbox branch
    assert not (repo / ".codeloop" / "sessions").exists()
    assert git(repo, "branch", "--list", "codeloop/*") == ""


def test_ask_never_prints_the_api_key_a_server_echoes(tmp_path, isolated_env):
    key = "sk-test-" + "Lm4Qw8Xe2Rt6Yu0Io9Pa3Sd7"
    denied = Reply(status=401, error_message=f"Incorrect API key provided: {key}.")
    with ScriptedModelServer([denied]) as server:
        done = run_codeloop(tmp_path, {**isolated_env, "OPENAI_API_KEY": key}, "replay",
                            str(BUNDLED), "--ask", "--base-url", server.base_url)
    assert done.returncode == 3, done.stderr
    assert "Incorrect API key provided: [redacted]" in done.stderr
    assert key not in done.stderr + done.stdout
