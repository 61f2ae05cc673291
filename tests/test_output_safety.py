"""What codeloop prints and records: no secret on any output, a large payload recorded once.

Real `codeloop` processes (headless, `--json`, the line REPL on a pty) and the real TUI against the
scripted model server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from codeloop.agent.session import Session, SessionSettings
from codeloop.config import Config
from codeloop.core.events import ModelTextDelta, Notice
from codeloop.core.redact import Redactor, redact
from codeloop.core.stream import EventStream
from codeloop.frontends.history import History
from codeloop.frontends.tui.app import CodeloopApp
from codeloop.frontends.tui.transcript import Transcript
from codeloop.transport.chat import ChatCompletionsClient
from tests.conftest import committed_repo, git, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall
from tests.test_repl import Terminal

KEY = "sk-test-" + "Zq7XwP3vR9tL2mN8bK4yH6cJ1dF5gS0a"
# the key split across stream pieces: 4 characters per piece, so no piece holds it whole
ECHO = Reply(text=f"Your key is {KEY}, keep it safe.", chunk_chars=4)
DENIED = Reply(status=401, error_message=f"Incorrect API key provided: {KEY}. You can find your "
                                         "API key at https://example.invalid/keys.")
BIG_LINES = 60_000  # about 3.4 MB of diff per file


def small_repo(root: Path) -> Path:
    return committed_repo(root, {"app.py": "VALUE = 1\n", "README": "tiny\n"})


def key_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "OPENAI_API_KEY": KEY}


def headless(server: ScriptedModelServer, test_cmd: str = "true", *extra: str) -> list[str]:
    return ["--task", "do it", "--base-url", server.base_url, "--model", "scripted",
            "--test-cmd", test_cmd, *extra]


def recordings(repo: Path) -> list[Path]:
    return sorted((repo / ".codeloop" / "sessions").glob("*.jsonl"), key=os.path.getmtime)


def test_a_key_in_a_401_body_never_reaches_stderr(tmp_path, isolated_env):
    repo = small_repo(tmp_path / "repo")
    with ScriptedModelServer([DENIED]) as server:
        done = run_codeloop(repo, key_env(isolated_env), *headless(server), timeout=120)
    assert done.returncode == 3, done.stderr
    assert "Incorrect API key provided: [redacted]" in done.stderr  # the error is still shown
    assert KEY not in done.stderr and KEY not in done.stdout
    assert KEY not in recordings(repo)[0].read_text()


def test_a_key_set_by_mistake_as_a_setting_is_not_quoted_in_the_error(tmp_path, isolated_env):
    repo = small_repo(tmp_path / "repo")
    env = {**key_env(isolated_env), "CODELOOP_BASE_URL": KEY}  # the key, in the wrong variable
    done = run_codeloop(repo, env, "--task", "do it", "--test-cmd", "true")
    assert done.returncode == 2, done.stderr
    assert "base_url must be an http:// or https:// URL" in done.stderr
    assert KEY not in done.stderr and "[redacted]" in done.stderr


def test_a_key_the_model_echoes_is_redacted_on_stderr_json_and_the_recording(
        tmp_path, isolated_env):
    repo = small_repo(tmp_path / "repo")
    env = key_env(isolated_env)
    with ScriptedModelServer([ECHO, ECHO]) as server:
        plain = run_codeloop(repo, env, *headless(server), timeout=120)
        as_json = run_codeloop(repo, env, *headless(server, "true", "--json"), timeout=120)
    assert plain.returncode == 0 and as_json.returncode == 0, plain.stderr + as_json.stderr
    assert "Your key is [redacted], keep it safe." in plain.stderr  # the reply still streams
    assert KEY not in plain.stderr and KEY not in plain.stdout
    assert KEY not in as_json.stdout and KEY not in as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    streamed = "".join(e["text"] for e in events if e["type"] == "model.text_delta")
    assert streamed == "Your key is [redacted], keep it safe."
    for recording in recordings(repo):
        assert KEY not in recording.read_text()
        assert "[redacted]" in recording.read_text()


def test_the_line_repl_shows_no_key_from_the_model_or_the_server(tmp_path, isolated_env):
    repo = small_repo(tmp_path / "repo")
    env = {**key_env(isolated_env), "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm",
           "XDG_STATE_HOME": str(tmp_path / "st")}
    with ScriptedModelServer([ECHO, DENIED]) as server:
        terminal = Terminal([sys.executable, "-m", "codeloop", "--plain", "--base-url",
                             server.base_url, "--test-cmd", "true"], repo, env)
        terminal.read_until("baseline tests")
        time.sleep(0.3)
        terminal.type("show me\r")
        output = terminal.read_until("turn 1: no_edits")
        terminal.read_until("›", start=output.index("turn 1: no_edits"))
        time.sleep(0.3)
        terminal.type("again\r")
        output = terminal.read_until("Incorrect API key provided")
        terminal.read_until("›", start=output.index("Incorrect API key provided"))
        time.sleep(0.3)
        terminal.type("/quit")
        time.sleep(0.3)
        terminal.type("\r")
        terminal.close()
    assert "Your key is [redacted], keep it safe." in terminal.output
    assert "Incorrect API key provided: [redacted]" in terminal.output
    assert KEY not in terminal.output
    assert KEY not in recordings(repo)[0].read_text()


def test_the_tui_shows_no_key_from_the_model_or_the_server(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    repo = small_repo(tmp_path / "repo")

    async def scenario() -> str:
        with ScriptedModelServer([ECHO, DENIED]) as server:
            config = Config(model="scripted", base_url=server.base_url, test_command="true")
            client = ChatCompletionsClient(server.base_url, "scripted", KEY, 1024, 30.0)
            settings = SessionSettings(session_id="tui-secrets", task="", test_command="true")
            # the stream as the CLI builds it: its redactor knows the key
            events = EventStream(Redactor((KEY,)))
            app = CodeloopApp(Session(repo, config, settings, client, events),
                              History(tmp_path / "history"))
            async with app.run_test(size=(120, 40)) as pilot:
                transcript = app.query_one(Transcript)
                for message in ("show me", "again"):
                    while not app.opened or app.busy is not None:
                        await pilot.pause(0.05)
                    await pilot.press(*message)
                    await pilot.press("enter")
                    await pilot.pause(0.2)
                    deadline = time.monotonic() + 30
                    while app.busy is not None and time.monotonic() < deadline:
                        await pilot.pause(0.05)
                await pilot.pause(0.2)
                text = transcript.plain_text()
                await pilot.press("ctrl+c")
            return text

    text = asyncio.run(scenario())
    assert "Your key is [redacted], keep it safe." in text
    assert "Incorrect API key provided: [redacted]" in text
    assert KEY not in text


SHORT, LONG = "abcdefgh", "abcdefgh12345678"  # one secret the start of another
SAID = f"key={LONG} or {SHORT}, and abcdefgh1234!"
SAID_REDACTED = "key=[redacted] or [redacted], and [redacted]1234!"


def streamed(redactor: Redactor, pieces: list[str]) -> str:
    """The text the redactor lets out for these pieces of a reply, then another event (which
    lets out what it held back)."""
    out = [e for piece in pieces for e in redactor.filter(ModelTextDelta(turn=1, text=piece))]
    out += redactor.filter(Notice(kind="undo", message="sandbox back"))
    assert isinstance(out[-1], Notice)  # (held text goes out first)
    return "".join(e.text for e in out if isinstance(e, ModelTextDelta))


@pytest.mark.parametrize(("secrets", "redacted"), [
    ((SHORT, LONG), SAID_REDACTED), ((LONG, SHORT), SAID_REDACTED),
    # one's end the start of the other: the first one found goes
    (("abcdefgh", "efgh1234"), "key=[redacted]12345678 or [redacted], and [redacted]1234!")],
    ids=["short first", "long first", "overlapping"])
def test_a_secret_that_begins_with_another_is_redacted_whole_however_it_streams(secrets,
                                                                                redacted):
    # before: "key=[redacted]12345678" with the short secret first; streamed, the long one's
    # tail leaked in either order
    assert redact(SAID, secrets) == redacted
    for i in range(len(SAID) + 1):
        for j in range(i, len(SAID) + 1):  # every split into three pieces
            pieces = [SAID[:i], SAID[i:j], SAID[j:]]
            assert streamed(Redactor(secrets), pieces) == redacted, pieces


# the model writes the key into a file: /diff shows it, and /test, whose failing run prints it
KEY_FILE = f'--- /dev/null\n+++ b/settings.py\n@@ -0,0 +1 @@\n+API_KEY = "{KEY}"\n'
WRITES_KEY = Reply(text="Adding it.",
                   tool_calls=[ToolCall("apply_patch", json.dumps({"patch": KEY_FILE}))])
PRINTS_KEY = "sh -c 'cat settings.py; exit 1'"


def test_the_line_repl_shows_no_key_in_a_command_answer(tmp_path, isolated_env):
    # before: /diff and /test printed the key the model had written into settings.py
    repo = small_repo(tmp_path / "repo")
    env = {**key_env(isolated_env), "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm",
           "XDG_STATE_HOME": str(tmp_path / "st")}
    with ScriptedModelServer([WRITES_KEY]) as server:
        terminal = Terminal([sys.executable, "-m", "codeloop", "--plain", "--base-url",
                             server.base_url, "--test-cmd", PRINTS_KEY, "--max-iterations", "1"],
                            repo, env)
        terminal.read_until("baseline tests")
        time.sleep(0.3)
        terminal.type("add the key\r")
        at = terminal.read_until("turn 1: applied").index("turn 1: applied")
        for command, answer in (("/diff", "+++ b/settings.py"), ("/test", "Test command result")):
            terminal.read_until("›", start=at)
            time.sleep(0.3)
            at = len(terminal.output)
            terminal.type(command)
            time.sleep(0.3)
            terminal.type("\r")
            at = terminal.read_until(answer, start=at).index(answer, at)
        terminal.read_until("›", start=at)
        time.sleep(0.3)
        terminal.type("/quit")
        time.sleep(0.3)
        terminal.type("\r")
        terminal.close()
    assert terminal.output.count('API_KEY = "[redacted]"') >= 2, terminal.output[-3000:]
    assert KEY not in terminal.output


def test_the_tui_shows_no_key_in_a_command_answer(tmp_path, monkeypatch):
    # before: the transcript showed /diff's and /test's answers with the key in them
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    repo = small_repo(tmp_path / "repo")

    async def scenario() -> str:
        with ScriptedModelServer([WRITES_KEY]) as server:
            config = Config(model="scripted", base_url=server.base_url, test_command=PRINTS_KEY,
                            max_iterations=1)
            client = ChatCompletionsClient(server.base_url, "scripted", KEY, 1024, 30.0)
            settings = SessionSettings(session_id="tui-answers", task="",
                                       test_command=PRINTS_KEY)
            events = EventStream(Redactor((KEY,)))  # as the CLI builds it
            app = CodeloopApp(Session(repo, config, settings, client, events),
                              History(tmp_path / "history"))
            async with app.run_test(size=(120, 40)) as pilot:
                transcript = app.query_one(Transcript)
                for line in ("add the key", "/diff", "/test"):
                    deadline = time.monotonic() + 60
                    while (not app.opened or app.busy is not None) \
                            and time.monotonic() < deadline:
                        await pilot.pause(0.05)
                    await pilot.press(*line)
                    await pilot.press("enter")
                    await pilot.pause(0.2)
                deadline = time.monotonic() + 60
                while "Test command result" not in transcript.plain_text() \
                        and time.monotonic() < deadline:
                    await pilot.pause(0.05)
                text = transcript.plain_text()
                await pilot.press("ctrl+c")
            return text

    text = asyncio.run(scenario())
    assert "session diff" in text and "Test command result" in text, text[-3000:]
    assert KEY not in text
    assert 'API_KEY = "[redacted]"' in text
def new_file_diff(name: str, lines: int) -> str:
    body = "".join(f"+line {i:06d} of a generated data table, {'x' * 32}\n"
                   for i in range(lines))
    return f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1,{lines} @@\n{body}"


def test_a_large_patch_is_recorded_once_echoed_bounded_and_still_replays(
        tmp_path, isolated_env):
    repo = small_repo(tmp_path / "repo")
    by_tool, in_text = new_file_diff("table_a.txt", BIG_LINES), new_file_diff("table_b.txt",
                                                                             BIG_LINES)
    size = len(by_tool)
    # turn 1: an apply_patch call (its arguments come back in turn 2's request); the tests fail
    # until turn 2's reply, a ```diff block streamed as text, adds the second file
    replies = [Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": by_tool}))],
                     chunk_chars=65_536),
               Reply(text=f"The second table:\n\n```diff\n{in_text}```\n", chunk_chars=65_536)]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *headless(server, "test -f table_b.txt"),
                            timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [recording] = recordings(repo)
    # each diff once (the file holds them JSON-escaped), not five or six times
    assert recording.stat().st_size < 2.3 * size, recording.stat().st_size
    branch = git(repo, "branch", "--list", "codeloop/*").split()[-1]
    assert git(repo, "show", f"{branch}:table_b.txt").count("\n") == BIG_LINES
    # the reply streamed on stderr is cut to its head and tail, saying how much was left out
    assert len(done.stderr) < 100_000, len(done.stderr)
    assert "line 000000 of a generated" in done.stderr
    assert f"line {BIG_LINES - 1:06d} of a generated" in done.stderr
    assert "characters not shown" in done.stderr

    # the deduplicated recording replays: re-executed for real, and re-asked word for word
    replayed = run_codeloop(repo, isolated_env, "replay", str(recording), "--re-execute",
                            "--speed", "max", timeout=300)
    assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-3000:]
    assert "re-execution matched the recording" in replayed.stdout
    with ScriptedModelServer([Reply(text="a"), Reply(text="b")]) as server:
        asked = run_codeloop(repo, isolated_env, "replay", str(recording), "--ask",
                             "--base-url", server.base_url, timeout=300)
        requests = server.chat_requests
    assert asked.returncode == 0, asked.stderr[-3000:]
    assistant = next(m for m in requests[1].body["messages"] if m["role"] == "assistant")
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"])["patch"] == by_tool


def test_a_reference_that_leads_nowhere_is_a_damaged_line(tmp_path, isolated_env):
    start = {"type": "session.start", "t": 0.0, "session_id": "s", "task": "t", "repo": "r",
             "model": "m", "base_url": "http://127.0.0.1:9/v1", "transport": "chat",
             "edit_mode": "auto", "test_command": "true", "max_iterations": 1, "version": "0",
             "format": 1}
    proposed = {"type": "patch.proposed", "t": 0.1, "turn": 1, "source": "text",
                "patch": {"$same": [7, "patch"]},  # line 7 does not exist (yet)
                "$refs": [["patch"]]}
    recording = tmp_path / "damaged.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in (start, proposed)))
    done = run_codeloop(tmp_path, isolated_env, "replay", str(recording), "--headless",
                        "--speed", "max")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "line 2 is damaged: the reference" in done.stderr
