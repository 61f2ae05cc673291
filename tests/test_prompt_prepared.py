"""The next request's prompt is prepared while the verification runs: the items it repeats are
encoded beside the test run, so the request encodes only what the test result appended; and the
bodies built of encoded items are the bytes `json.dumps` would write.

A real session in-process (real sandbox, real pytest, the scripted server), its chat client
observed through a subclass that records when `prepare` was called and what each request had to
encode anew.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from codeloop.agent.session import Session, SessionSettings
from codeloop.config import Config
from codeloop.core import encoded
from codeloop.core.conversation import Instructions, Item, ToolCall, ToolOutput, UserText
from codeloop.core.conversation import Reply as ModelReply
from codeloop.core.events import TestDone, TestOutput
from codeloop.core.kinds import CallKind
from codeloop.core.stream import EventStream
from codeloop.transport.chat import ChatCompletionsClient
from codeloop.transport.responses import ResponsesRequest, input_items
from tests.conftest import PYTEST_CMD, fix_diff, make_repo
from tests.scripted_server import Reply, ScriptedModelServer
from tests.scripted_server import ToolCall as ScriptedCall

HOSTILE = ['\0messages\0', '"\\u0000messages\\u0000"', "é ✓ \U0001f600", "\\", "</script>"]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_body_with_spliced_items_is_what_json_dumps_writes(text):
    items: list[Item] = [Instructions(text), UserText(text), ModelReply(text, (
        ToolCall("c1", "apply_patch", json.dumps({"patch": text})),
        ToolCall("c2", "apply_patch", text, CallKind.CUSTOM))),
        ToolOutput("c1", text), ToolOutput("c2", text, CallKind.CUSTOM)]
    client = ChatCompletionsClient("http://127.0.0.1:9/v1", text, None, 64, 5.0)
    tools = [{"type": "function", "function": {"name": text, "parameters": {}}}]
    body = client.request_body(items, tools)
    expected = {"model": text, "messages": [json.loads(encoded.chat_json(i, True)) for i in items],
                "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 64,
                "tools": tools}
    assert body == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
    fields, _, _ = ResponsesRequest(text, 64, False).build(items, tools, delta=False)
    sent = json.loads(encoded.dumps({"type": "response.create", **fields}))
    assert sent["input"] == input_items(items[1:]) and sent["instructions"] == text


class Observed(ChatCompletionsClient):
    """The real chat client; it notes when it was asked to prepare, and how many items each
    request encoded that were not encoded before."""

    def __init__(self, base_url: str, seen: list[object]) -> None:
        super().__init__(base_url, "scripted", None, 1024, 30.0)
        self.seen = seen
        self.prepared: list[tuple[int, int]] = []  # (events seen so far, items prepared)
        self.encoded_anew: list[tuple[int, int]] = []  # (items in the request, encoded anew)

    def prepare(self, items: list[Item]) -> None:
        self.prepared.append((len(self.seen), len(items)))
        super().prepare(items)

    def request_body(self, items, tools):
        before = encoded.chat_json.cache_info().misses
        body = super().request_body(items, tools)
        self.encoded_anew.append((len(items), encoded.chat_json.cache_info().misses - before))
        return body


def test_the_next_prompt_is_encoded_while_the_verification_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "offbyone")
    # a patch that applies and leaves the tests failing, then the fix: two verifications
    harmless = ("--- /dev/null\n+++ b/notes.md\n@@ -0,0 +1 @@\n+looking at the pager\n")
    replies = [Reply(tool_calls=[ScriptedCall("apply_patch", json.dumps({"patch": p}))])
               for p in (harmless, fix_diff("offbyone"))]
    seen: list[object] = []
    events = EventStream()
    events.subscribe(seen.append)

    async def scenario() -> tuple[int, Observed]:
        with ScriptedModelServer(replies) as server:
            config = Config(model="scripted", base_url=server.base_url, test_command=PYTEST_CMD)
            client = Observed(server.base_url, seen)
            settings = SessionSettings(session_id="prep", task="fix the pager",
                                       test_command=PYTEST_CMD)
            return await Session(repo, config, settings, client, events).run(), client

    exit_code, client = asyncio.run(scenario())
    assert exit_code == 0
    done_at = [n for n, e in enumerate(seen) if isinstance(e, TestDone) and e.turn > 0]
    assert len(client.prepared) == len(done_at) == 2
    for (at, _), done in zip(client.prepared, done_at, strict=True):
        # beside the run: after its first output, before its result
        assert isinstance(seen[at - 1], TestOutput) and seen[at - 1].turn > 0 and at <= done
    # the second request repeated the first turn's items, prepared: only what the test result
    # appended after them was encoded for it
    (first_sent, _), (sent, anew) = client.encoded_anew[:2]
    prepared = client.prepared[0][1]
    assert first_sent < prepared < sent and anew == sent - prepared
