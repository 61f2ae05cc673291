"""Turns under the user's hands in the TUI: Ctrl-C mid-turn, Enter arriving with the text, a
paste, slash-command replies said once, a message typed during a turn.

Pilot against a real session (real sandbox, real pytest) and the scripted model server on
127.0.0.1; keys are posted the way the terminal driver delivers one read: all at once.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from textual import events

from codeloop.agent.session import Session, SessionSettings
from codeloop.config import Config
from codeloop.core.events import Event, TurnEnd, UserMessage
from codeloop.core.stream import EventStream
from codeloop.frontends.history import History
from codeloop.frontends.tui.app import CodeloopApp
from codeloop.frontends.tui.prompt_input import PromptInput
from codeloop.frontends.tui.status import StatusLine
from codeloop.frontends.tui.transcript import Transcript
from codeloop.transport.chat import ChatCompletionsClient
from tests.conftest import PYTEST_CMD, fix_diff, make_repo
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

FAILING = "tests/test_paginate.py::test_exact_multiple_page_count"


@pytest.fixture(autouse=True)
def _caches_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def make_app(repo, server: ScriptedModelServer, tmp_path,
             seen: list[Event] | None = None) -> CodeloopApp:
    config = Config(model="scripted", base_url=server.base_url, test_command=PYTEST_CMD)
    client = ChatCompletionsClient(server.base_url, "scripted", None, 1024, 30.0)
    settings = SessionSettings(session_id="tui-turns", task="", test_command=PYTEST_CMD)
    stream = EventStream()
    if seen is not None:
        stream.subscribe(seen.append)
    return CodeloopApp(Session(repo, config, settings, client, stream),
                       History(tmp_path / "history"))


async def until(pilot, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app; transcript ends with:\n"
                                 + pilot.app.query_one(Transcript).plain_text()[-600:])
        await pilot.pause(0.05)


def on_screen(app: CodeloopApp) -> str:
    """The transcript as it shows: a folded item by its summary (not its hidden output)."""
    transcript = app.query_one(Transcript)
    parts = [item.summary.plain if item.summary is not None and item.folded else item.text
             for item in transcript.items]
    return "\n".join(parts)


def one_read(app: CodeloopApp, keys: str, enter: bool = True) -> None:
    """Key events posted as the driver posts one read's worth: no pause between them."""
    for char in keys:
        app.post_message(events.Key("space" if char == " " else char, char))
    if enter:
        app.post_message(events.Key("enter", "\r"))


def fix_reply() -> Reply:
    return Reply(text="Fixed.", tool_calls=[ToolCall(
        "apply_patch", json.dumps({"patch": fix_diff("offbyone")}))])


def test_ctrl_c_mid_stream_ends_the_turn_at_the_bottom_and_stops_its_clock(tmp_path):
    repo = make_repo(tmp_path, "offbyone")
    slow = Reply(text="word " * 400, chunk_chars=5)
    seen: list[Event] = []

    async def scenario() -> None:
        with ScriptedModelServer([slow], tokens_per_s=100) as server:
            app = make_app(repo, server, tmp_path, seen)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.opened)
                one_read(app, "explain at length")
                transcript = app.query_one(Transcript)
                await until(pilot, lambda: "word word word" in transcript.plain_text())
                await pilot.press("ctrl+c")
                await until(pilot, lambda: any(isinstance(e, TurnEnd) for e in seen))
                await pilot.pause(0.1)
                # the recording ends the turn, with what it cost so far
                end = next(e for e in seen if isinstance(e, TurnEnd))
                assert end.outcome == "interrupted" and end.turn == 1
                assert {"prompt_ms", "decode_ms", "overhead_ms"} <= set(end.spans)
                assert end.cache["estimated"] is True and end.cache["completion_tokens"] > 0
                assert end.cache["prompt_tokens"] > 0
                # said at the end, after the reply so far (not above it)
                texts = [item.text for item in transcript.items]
                reply = max(i for i, t in enumerate(texts) if "word word" in t)
                cancelled = max(i for i, t in enumerate(texts) if t.startswith("cancelled"))
                assert cancelled > reply
                assert texts[-1].startswith("turn 1: interrupted")
                # the panel's clock stopped: the turn is done, its spans are the event's
                turn = app.latency.turns[-1]
                assert turn.done and app.latency.live_spans() == end.spans
                # the status bar counts what was received, marked as an estimate
                app.refresh_status()
                status = app.query_one(StatusLine).line.plain
                assert "ready" in status and "tokens ~" in status
                assert f"+ ~{end.cache['completion_tokens']:,}" in status

    asyncio.run(scenario())


def test_enter_arriving_in_the_same_read_as_the_text_sends_it(tmp_path):
    repo = make_repo(tmp_path, "offbyone")

    async def scenario() -> None:
        with ScriptedModelServer([fix_reply()]) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.opened)
                one_read(app, "fix it")  # as `tmux send-keys "fix it" Enter` arrives
                await until(pilot, lambda: server.chat_requests)
                assert app.query_one(PromptInput).text == ""
                content = server.chat_requests[0].body["messages"][-1]["content"]
                assert content.startswith("Task: fix it\n")

    asyncio.run(scenario())


def test_a_multi_line_paste_goes_into_the_input_unsent(tmp_path):
    repo = make_repo(tmp_path, "offbyone")
    seen: list[Event] = []

    async def scenario() -> None:
        with ScriptedModelServer([fix_reply()]) as server:
            app = make_app(repo, server, tmp_path, seen)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.opened)
                field = app.query_one(PromptInput)
                # a bracketed paste, its line ends as the terminal sends them (CR)
                app.post_message(events.Paste("fix the pager\rand its tests\r\nplease"))
                await until(pilot, lambda: field.text)
                await pilot.pause(0.2)
                assert field.text == "fix the pager\nand its tests\nplease"
                assert not any(isinstance(e, UserMessage) for e in seen)
                await pilot.press("enter")
                await until(pilot, lambda: server.chat_requests)
                messages = [e.text for e in seen if isinstance(e, UserMessage)]
                assert messages == ["fix the pager\nand its tests\nplease"]

    asyncio.run(scenario())


def test_slash_command_replies_show_once(tmp_path):
    repo = make_repo(tmp_path, "offbyone")

    async def scenario() -> None:
        with ScriptedModelServer([fix_reply()]) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.opened)
                one_read(app, "fix it")
                await until(pilot, lambda: app.busy is None and app.agent.turn == 1)
                one_read(app, "/diff")
                await until(pilot, lambda: "session diff" in on_screen(app))
                one_read(app, "/undo")
                await until(pilot, lambda: "sandbox back at commit" in on_screen(app)
                            and app.busy is None)
                one_read(app, "/test")
                await until(pilot, lambda: "next message" in on_screen(app))
                one_read(app, "/help")
                await until(pilot, lambda: "Ctrl+O test output" in on_screen(app))
                await pilot.pause(0.2)
                shown = on_screen(app)
                assert shown.count("session diff") == 1
                assert shown.count("sandbox back at commit") == 1
                # the baseline's failures, then /test's: each run lists them once
                assert shown.count(FAILING) == 2, shown[-2000:]
                assert shown.count("Test command result") == 1
                assert shown.count("/undo    put the sandbox back") == 1

    asyncio.run(scenario())


def test_a_message_typed_during_a_turn_is_acknowledged_and_sent_in_order(tmp_path):
    repo = make_repo(tmp_path, "offbyone")
    slow = Reply(text="thinking " * 80, chunk_chars=9)
    seen: list[Event] = []

    async def scenario() -> None:
        with ScriptedModelServer([slow, Reply(text="ok"), fix_reply()],
                                 tokens_per_s=25) as server:
            app = make_app(repo, server, tmp_path, seen)
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: app.opened)
                one_read(app, "look around")
                transcript = app.query_one(Transcript)
                await until(pilot, lambda: "thinking" in transcript.plain_text())
                one_read(app, "first")
                one_read(app, "second")
                await pilot.pause(0.1)
                app.refresh_status()
                assert "2 queued" in app.query_one(StatusLine).line.plain
                notes = [n.title for n in app._notifications]
                assert notes == ["queued · sent when this turn ends",
                                 "queued · sent when this turn ends, after 1 more"]
                assert [n.message for n in app._notifications] == ["first", "second"]
                await until(pilot, lambda: len(server.chat_requests) == 3 and app.busy is None)
                messages = [e.text for e in seen if isinstance(e, UserMessage)]
                assert messages == ["look around", "first", "second"]
                assert "queued" not in app.query_one(StatusLine).line.plain

    asyncio.run(scenario())
