"""The Textual app driven through Pilot against the scripted model server on 127.0.0.1.

A real session (real sandbox worktree, real pytest runs) behind the real app, headless.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from codeloop.agent.session import Session, SessionSettings
from codeloop.config import Config
from codeloop.core.stream import EventStream
from codeloop.frontends.history import History
from codeloop.frontends.tui.app import CodeloopApp
from codeloop.frontends.tui.panel import LatencyPanel
from codeloop.frontends.tui.prompt_input import PromptInput
from codeloop.frontends.tui.transcript import Transcript, split_finished
from codeloop.transport.chat import ChatCompletionsClient
from tests.conftest import PYTEST_CMD, fix_diff, git, make_repo
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall


@pytest.fixture(autouse=True)
def _caches_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def make_app(repo, server: ScriptedModelServer, tmp_path) -> CodeloopApp:
    config = Config(model="scripted", base_url=server.base_url, test_command=PYTEST_CMD)
    client = ChatCompletionsClient(server.base_url, "scripted", None, 1024, 30.0)
    settings = SessionSettings(session_id="tui-test", task="", test_command=PYTEST_CMD)
    session = Session(repo, config, settings, client, EventStream())
    return CodeloopApp(session, History(tmp_path / "history"))


def session_of(app: CodeloopApp) -> Session:
    """The real session behind the app (the app itself knows only the port)."""
    assert isinstance(app.agent, Session)
    return app.agent


async def until(pilot, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app; transcript ends with:\n"
                                 + transcript_text(pilot.app)[-600:])
        await pilot.pause(0.05)


def transcript_text(app: CodeloopApp) -> str:
    return app.query_one(Transcript).plain_text()


async def type_and_send(pilot, text: str) -> None:
    await pilot.press(*text)
    await pilot.press("enter")


def test_a_whole_turn_shows_in_the_transcript_and_on_the_latency_panel(tmp_path):
    repo = make_repo(tmp_path, "offbyone")
    reply = Reply(text="The count is off by one.\n\nHere is the fix:",
                  tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))])

    async def scenario() -> None:
        with ScriptedModelServer([reply]) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.opened)
                await type_and_send(pilot, "fix the pager")
                await until(pilot, lambda: app.latency.turns and app.latency.turns[-1].done
                            and app.busy is None)
                await pilot.pause(0.1)
                text = transcript_text(app)
                assert "fix the pager" in text
                assert "The count is off by one." in text
                assert "patch applied to pager/paginate.py" in text
                assert "tests: 7 passed" in text
                turn = app.latency.turns[-1]
                assert turn.spans["test_ms"] > 0 and "overhead_ms" in turn.spans
                panel = app.query_one(LatencyPanel)
                figures = panel.render_figures(40)
                with app.console.capture() as capture:
                    app.console.print(figures)
                rendered = capture.get()
                assert "decode" in rendered and "tests" in rendered and "last turns" in rendered
                assert "display lag" in rendered
                await pilot.press("ctrl+c")  # idle: quits
            assert app.return_value == 0

    asyncio.run(scenario())


def test_undo_resets_the_sandbox_commit(tmp_path):
    repo = make_repo(tmp_path, "offbyone")
    reply = Reply(tool_calls=[ToolCall("apply_patch",
                                       json.dumps({"patch": fix_diff("offbyone")}))])

    async def scenario() -> None:
        with ScriptedModelServer([reply]) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.opened)
                sandbox = session_of(app).sandbox
                assert sandbox is not None
                await type_and_send(pilot, "fix it")
                await until(pilot, lambda: app.busy is None and session_of(app).turn == 1)
                assert sandbox.head() != sandbox.base_commit
                await type_and_send(pilot, "/undo")
                await until(pilot, lambda: sandbox.head() == sandbox.base_commit)
                assert "+ 1" in (sandbox.path / "pager" / "paginate.py").read_text()
                assert git(sandbox.path, "status", "--porcelain", "--untracked-files=no") == ""
                await until(pilot, lambda: "sandbox back at" in transcript_text(app))

    asyncio.run(scenario())


def test_ctrl_c_cancels_a_turn_mid_stream_and_the_app_stays_usable(tmp_path):
    repo = make_repo(tmp_path, "offbyone")
    slow = Reply(text="word " * 400, chunk_chars=5)
    fix = Reply(text="Fixed.", tool_calls=[ToolCall("apply_patch",
                                                    json.dumps({"patch": fix_diff("offbyone")}))])

    async def scenario() -> None:
        with ScriptedModelServer([slow, fix], tokens_per_s=100) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.opened)
                await type_and_send(pilot, "explain at length")
                await until(pilot, lambda: "word word" in transcript_text(app))
                await pilot.press("ctrl+c")
                await until(pilot, lambda: app.busy is None)
                assert app.is_running
                assert "cancelled" in transcript_text(app)
                await type_and_send(pilot, "now fix it")
                await until(pilot, lambda: session_of(app).result is not None
                            and session_of(app).result.passed, timeout=60)
                messages = server.chat_requests[-1].body["messages"]
                assert messages[-1]["role"] == "user" and "now fix it" in messages[-1]["content"]

    asyncio.run(scenario())


def test_finished_blocks_split_outside_code_fences():
    assert split_finished("para one\n\npara two") == ("para one\n\n", "para two")
    assert split_finished("```py\nx = 1\n\ny = 2\n") == ("", "```py\nx = 1\n\ny = 2\n")
    assert split_finished("```py\nx = 1\n```\nafter") == ("```py\nx = 1\n```\n", "after")
    assert split_finished("no newline yet") == ("", "no newline yet")


def test_a_message_typed_during_a_turn_is_queued_and_runs_next(tmp_path):
    repo = make_repo(tmp_path, "offbyone")
    slow = Reply(text="thinking " * 80, chunk_chars=9)
    fix = Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))],
                chunk_chars=400)

    async def scenario() -> None:
        with ScriptedModelServer([slow, fix], tokens_per_s=25) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.opened)
                await type_and_send(pilot, "look around")
                await until(pilot, lambda: "thinking" in transcript_text(app))
                app.query_one(PromptInput).text = "then fix it"
                await pilot.press("enter")
                assert app.queue == ["then fix it"]
                assert "queued: then fix it" in transcript_text(app)
                await until(pilot, lambda: session_of(app).result is not None
                            and session_of(app).result.passed, timeout=60)
                contents = [m["content"] for m in server.chat_requests[-1].body["messages"]
                            if m["role"] == "user"]
                assert contents[-1].endswith("then fix it")

    asyncio.run(scenario())


def test_history_tab_completion_and_the_panel_key(tmp_path):
    repo = make_repo(tmp_path, "offbyone")
    History(tmp_path / "history").add("an older task")

    async def scenario() -> None:
        with ScriptedModelServer([]) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.opened)
                field = app.query_one(PromptInput)
                await pilot.press("up")
                await until(pilot, lambda: field.text == "an older task")
                field.text = ""
                await pilot.press("/", "u", "n", "tab")
                await until(pilot, lambda: field.text == "/undo ")
                panel = app.query_one(LatencyPanel)
                assert panel.display
                await pilot.press("f2")
                assert not panel.display

    asyncio.run(scenario())


def test_history_persists_across_sessions(tmp_path):
    first = History(tmp_path / "history")
    first.add("fix the parser\nand its tests")
    first.add("second")
    again = History(tmp_path / "history")
    assert again.previous() == "second"
    assert again.previous() == "fix the parser\nand its tests"
    assert again.following() == "second"


def test_watching_a_recording_plays_it_pauses_and_jumps_back(tmp_path):
    from codeloop.frontends.tui.watch import WatchApp
    from codeloop.replay.playback import load
    from codeloop.replay.run import source_sandbox

    recording = load(source_sandbox() / "sessions" / "offbyone.jsonl")

    async def scenario() -> None:
        app = WatchApp(recording.events, EventStream(), speed=None)
        async with app.run_test(size=(110, 32)) as pilot:
            await until(pilot, lambda: "end of the recording" in transcript_text(app))
            text = transcript_text(app)
            assert "patch rejected" in text and "tests: 7 passed" in text
            assert [t.turn for t in app.latency.turns] == [1, 2]
            await pilot.press("f5")
            assert app.paused
            await pilot.press("f5")
            app.query_one(PromptInput).text = "/turn 1"
            await pilot.press("enter")
            # played again from the start: the note is gone with the old transcript
            await until(pilot, lambda: "jumping to turn 1" not in transcript_text(app)
                        and "end of the recording" in transcript_text(app))
            assert transcript_text(app).count("tests: 7 passed") == 1
            assert [t.turn for t in app.latency.turns] == [1, 2]

    asyncio.run(scenario())
