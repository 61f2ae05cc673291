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

from codeloop.core.codec import event_from_dict
from codeloop.core.events import (
    Event,
    ModelRequest,
    ModelToolCall,
    PatchProposed,
    SessionEnd,
    SessionStart,
    TurnStart,
)
from codeloop.core.stream import EventStream
from codeloop.replay.recorder import LARGE, Recorder
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
    assert "line 5 is damaged: not a JSON object" in done.stderr, done.stderr
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


# references: a large string written once, later copies referring to it (README "Recordings")

START = SessionStart(session_id="s", task="the task", repo="r", model="m",
                     base_url="http://127.0.0.1:9/v1", transport="chat", edit_tool="auto",
                     test_command="true", max_iterations=1, version="0")
BIG = "".join(f"line {i:05d} of a large patch\n" for i in range(LARGE // 20))  # > 64 KiB


def record(directory: Path, events: list[Event]) -> tuple[Path, list[dict]]:
    """The recording the real Recorder writes of a session of `events` (ended), and each
    event's whole data."""
    recorder = Recorder(directory, "s")
    stream = EventStream()
    stream.subscribe(recorder)
    events = [*events, SessionEnd(outcome="done", exit_code=0, branch="codeloop/s", diffstat="",
                                  applied_to_worktree=False, totals={})]
    for event in events:
        stream.emit(event)
    recorder.close()
    return recorder.path, [event.to_dict() for event in events]


def replayed(path: Path, directory: Path, env: dict[str, str]) -> list[dict]:
    done = run_codeloop(directory, env, "replay", str(path), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # nothing skipped, nothing damaged
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_large_string_repeated_within_one_event_reads_back_whole(tmp_path, isolated_env):
    request = ModelRequest(turn=1, tools=[], messages=[
        {"role": "user", "content": BIG + "A"},
        {"role": "user", "content": BIG + "A"},  # the same string again, in the same line
        {"role": "tool", "content": BIG}])  # a part of it, in the same line
    arguments = json.dumps({"patch": BIG + "B"})
    call = ModelToolCall(turn=1, call_id="c1", name="apply_patch", arguments=arguments)
    events = [START, request, call, PatchProposed(turn=1, source="tool", patch=BIG + "B"),
              PatchProposed(turn=1, source="text", patch=BIG)]
    path, written = record(tmp_path, events)
    assert replayed(path, tmp_path, isolated_env) == written
    # across lines each string is still written once: the last two lines are references
    lines = path.read_text().splitlines()
    assert all(len(line) < 1000 for line in lines[3:]), [len(line) for line in lines]
    assert '"$refs"' not in lines[1]  # (the copies within line 2 are written whole)


def test_data_shaped_like_a_reference_is_read_as_written(tmp_path, isolated_env):
    lookalikes = [
        {"role": "user", "content": "hi", "$same": [1, "task"]},
        {"role": "tool", "content": {"$same": [1, "task"]}},
        {"role": "tool", "content": {"$streamed": 1}},
        {"role": "tool", "content": "x", "$refs": [["messages", 0]]},
        {"role": "user", "content": BIG}]
    events = [START, ModelRequest(turn=1, messages=lookalikes, tools=[]),
              PatchProposed(turn=1, source="text", patch=BIG)]
    path, written = record(tmp_path, events)
    assert replayed(path, tmp_path, isolated_env) == written
    assert len(path.read_text().splitlines()[2]) < 1000  # the patch is a reference


REFERENCING = {"type": "patch.proposed", "t": 0.1, "turn": 1, "source": "text"}
DAMAGED_REFERENCES = {
    "$refs not a list": {"patch": "p", "$refs": "patch"},
    "a path not a list": {"patch": "p", "$refs": ["patch"]},
    "a path that leads nowhere": {"patch": "p", "$refs": [["patch", 0, "x"]]},
    "a path to a plain string": {"patch": "p", "$refs": [["patch"]]},
    "a reference to its own line": {"patch": {"$same": [2, "source"]}, "$refs": [["patch"]]},
    "a reference to a later line": {"patch": {"$same": [7, "patch"]}, "$refs": [["patch"]]},
    "a reference to a number": {"patch": {"$same": [1, "max_iterations"]},
                                "$refs": [["patch"]]},
    "an unlisted reference": {"patch": {"$same": [1, "task"]}},
}


@pytest.mark.parametrize("case", DAMAGED_REFERENCES)
def test_a_damaged_reference_is_named_with_its_line(case, tmp_path, isolated_env):
    start = START.to_dict()
    damaged = write_events(tmp_path / "damaged.jsonl",
                           [start, {**REFERENCING, **DAMAGED_REFERENCES[case]}])
    done = run_codeloop(tmp_path, isolated_env, "replay", str(damaged), "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "line 2 is damaged" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("nested", [
    "[" * 100_000,
    '{"type": "user.message", "t": 0.2, "text": "hi", "note": ' + "[" * 100_000 + "]" * 100_000
    + "}",
], ids=["a-bare-list", "in-a-field"])  # (an id of the line itself would be an environment
# variable of the test's subprocess, PYTEST_CURRENT_TEST, too long for exec on pytest 8)
def test_a_line_nested_too_deeply_is_named(nested, tmp_path, isolated_env):
    lines = BUNDLED.read_text().splitlines()
    damaged = write_lines(tmp_path / "damaged.jsonl", [*lines[:4], nested, *lines[4:]])
    done = run_codeloop(tmp_path, isolated_env, "replay", str(damaged), "--json")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "line 5 is corrupt" in done.stderr and "nested too deeply" in done.stderr, \
        done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_first_line_nested_too_deeply_is_not_a_recording(tmp_path, isolated_env):
    damaged = write_lines(tmp_path / "damaged.jsonl", ["[" * 100_000])
    done = run_codeloop(tmp_path, isolated_env, "replay", str(damaged), "--json")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "line 1 is not JSON" in done.stderr and "Traceback" not in done.stderr


def test_a_deeply_nested_value_json_can_read_replays(tmp_path, isolated_env):
    events = bundled_events()
    events[19]["messages"][0]["content"] = json.loads("[" * 800 + "]" * 800)  # model.request
    deep = write_events(tmp_path / "deep.jsonl", events)
    done = run_codeloop(tmp_path, isolated_env, "replay", str(deep), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[19]) == events[19]


def test_a_dict_becomes_an_event_only_with_every_field_of_its_declared_type():
    with pytest.raises(ValueError, match="turn.start field 'turn' should be an integer"):
        event_from_dict({"type": "turn.start", "t": 0.5, "turn": "one"})
    with pytest.raises(ValueError, match="unknown event type 'model.thinking'"):
        event_from_dict({"type": "model.thinking", "t": 0.5})
    with pytest.raises(ValueError, match="unknown field 'priority'"):
        event_from_dict({"type": "turn.start", "t": 0.5, "turn": 1, "priority": "high"})
    # reading a recording of a newer codeloop: what this one does not know is left out, named
    skipped: set[str] = set()
    event = event_from_dict({"type": "turn.start", "t": 0.5, "turn": 1, "priority": "high"},
                            skipped)
    assert event == TurnStart(turn=1, t=0.5) and skipped == {"turn.start.priority"}
    assert event_from_dict({"type": "model.thinking", "t": 0.5}, skipped) is None
    assert skipped == {"turn.start.priority", "model.thinking"}


def test_a_retry_recorded_before_elapsed_ms_existed_still_replays(tmp_path, isolated_env):
    events = bundled_events()
    # turn 1's request failed once and was retried (line 21 is its first byte)
    older = {"type": "model.retry", "t": 0.86, "turn": 1, "attempt": 1, "delay_s": 0.0,
             "reason": "HTTP 503", "restart": False}
    events.insert(20, older)
    path = write_events(tmp_path / "older.jsonl", events)
    assert replayed(path, tmp_path, isolated_env)[20] == {**older, "elapsed_ms": 0.0}
    repo = make_repo(tmp_path, "offbyone")
    done = run_codeloop(repo, isolated_env, "replay", str(path), "--re-execute", "--at", "HEAD",
                        "--speed", "max", timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "re-execution matched the recording" in done.stdout
