"""Responses over a WebSocket when a request is abandoned (timed out, or Ctrl-C): nothing of it
reaches a later request, and leaving never waits behind it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

from codeloop.core.conversation import from_chat_messages
from codeloop.core.events import ModelTextDelta
from codeloop.transport import make_client
from tests.conftest import PYTEST_CMD, fix_diff, make_repo, read_recording, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

OPENING = [{"role": "system", "content": "You fix code."},
           {"role": "user", "content": "Fix the pager."}]


def ws_session(server: ScriptedModelServer, *extra: str) -> list[str]:
    return ["--task", "fix the tests", "--base-url", server.base_url, "--model", "scripted",
            "--transport", "responses-ws", "--test-cmd", PYTEST_CMD, "--json", *extra]


def generating(server: ScriptedModelServer) -> list[dict]:
    """The `response.create` bodies that asked for a reply (warm-ups aside)."""
    return [r.body for r in server.responses_requests
            if r.body is not None and r.body.get("generate") is not False]


def test_a_stalled_reply_is_never_paired_with_the_retry_or_the_next_turn(tmp_path,
                                                                         isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    read = ToolCall("read_file", json.dumps({"path": "README.md"}))
    patch = ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))
    # the first reply starts after 3 s, past the 2 s request timeout: that request is abandoned
    # and retried; the retry gets the second reply, turn 2 the third
    replies = [Reply(text="abandoned", tool_calls=[read], stall_s=3.0),
               Reply(text="turn one", tool_calls=[read]),
               Reply(text="turn two", tool_calls=[patch])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *ws_session(server, "--request-timeout", "2"),
                            timeout=180)
        bodies = generating(server)
        sockets = server.ws_connections
    assert done.returncode == 0, done.stderr
    recording = read_recording(repo)
    texts = [(e["turn"], e["text"]) for e in recording if e["type"] == "model.done"]
    assert texts == [(1, "turn one"), (2, "turn two")]
    assert [e["turn"] for e in recording if e["type"] == "model.retry"] == [1]
    # 3 requests for 2 turns: the abandoned one, its retry on a fresh socket (the full input,
    # since the old socket's continuation went with it), and turn 2's delta on that socket
    assert len(bodies) == 3 and sockets == 2
    assert "previous_response_id" not in bodies[1] and bodies[2]["previous_response_id"]
    assert "previous_response_not_found" not in json.dumps(recording)
    changes = [e["kind"] for e in recording if e["type"] == "transport.change"]
    assert "reconnect" in changes and "resend" not in changes  # said, and never stale
    assert recording[-1]["type"] == "session.end" and recording[-1]["outcome"] == "passed"


def test_the_rest_of_a_cancelled_stream_never_reaches_the_next_request() -> None:
    async def scenario() -> None:
        slow = Reply(text="stale " * 200, chunk_chars=6)
        with ScriptedModelServer([slow, Reply(text="fresh")], tokens_per_s=50) as server:
            client = make_client("responses-ws", server.base_url, "scripted", "sk-test-key",
                                 512, 10.0)
            await client.connect()

            async def first_turn() -> None:
                async for event in client.stream(1, from_chat_messages(OPENING), []):
                    if isinstance(event, ModelTextDelta):
                        started.set()

            started = asyncio.Event()
            turn = asyncio.create_task(first_turn())
            await started.wait()
            turn.cancel()  # Ctrl-C in the line REPL: the turn stops, the session goes on
            await asyncio.gather(turn, return_exceptions=True)
            messages = [*OPENING, {"role": "user", "content": "Something else."}]
            text = "".join([e.text async for e in client.stream(2, from_chat_messages(messages), [])
                            if isinstance(e, ModelTextDelta)])
            await client.aclose()
            bodies = generating(server)
            sockets = server.ws_connections
        assert text == "fresh"
        assert sockets == 2 and "previous_response_id" not in bodies[1]

    asyncio.run(scenario())


def test_ctrl_c_during_a_websocket_stream_exits_at_once(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    slow = Reply(text="word " * 400, chunk_chars=5)  # 400 pieces at 20/s: 20 s of stream
    with ScriptedModelServer([slow], tokens_per_s=20) as server:
        process = subprocess.Popen([sys.executable, "-m", "codeloop", *ws_session(server)],
                                   cwd=repo, env=isolated_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None
        seen = []
        while not seen or seen[-1]["type"] != "model.text_delta":
            line = process.stdout.readline()
            assert line, process.communicate(timeout=60)
            seen.append(json.loads(line))
        interrupted_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=60)
        took = time.monotonic() - interrupted_at
    print(f"Ctrl-C during a WebSocket stream: exited after {took:.2f} s")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    end = json.loads(rest.splitlines()[-1])
    assert end["type"] == "session.end" and end["outcome"] == "interrupted"
    # the issue asks for 1 s (it took 10 s: the close handshake waited behind the stream);
    # the bound leaves room for a loaded machine
    assert took < 3.0
