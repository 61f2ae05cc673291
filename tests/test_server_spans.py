"""The server's own account of its time (`model.done`'s `server`): each provider's fields, read on
the three wires against the scripted server, and the real llama.cpp streams of
`tests/data/transcripts/` served byte for byte."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from codeloop.core.conversation import from_chat_messages
from codeloop.core.events import Event, ModelDone
from codeloop.transport import make_client
from codeloop.transport.reply import server_account
from tests.scripted_server import Reply, ScriptedModelServer

TRANSCRIPTS = Path(__file__).resolve().parent / "data" / "transcripts"
WIRES = ("chat", "responses-http", "responses-ws")
OPENING = [{"role": "system", "content": "You fix code."},
           {"role": "user", "content": "Fix the pager."}]


def turn(wire: str, replies: list[Reply], **server_options: float) -> tuple[
        ModelDone, ScriptedModelServer]:
    """One request over `wire`; its model.done and the server (stopped) that answered it."""
    async def scenario() -> list[Event]:
        client = make_client(wire, server.base_url, "scripted", "sk-test-key", 512, 10.0)
        await client.connect()
        events = [event async for event in client.stream(1, from_chat_messages(OPENING), [])]
        await client.aclose()
        return events

    with ScriptedModelServer(replies, **server_options) as server:
        events = asyncio.run(scenario())
    return next(e for e in events if isinstance(e, ModelDone)), server


def transcript_timings(name: str) -> dict[str, float]:
    """The `timings` object the transcript's server sent (its last)."""
    text = (TRANSCRIPTS / name).read_bytes().decode("utf-8")
    found = [json.loads(line.removeprefix("data: "))["timings"] if line.startswith("data: ")
             else json.loads(line)["timings"]
             for line in text.splitlines() if '"timings"' in line]
    return found[-1]


def as_server(timings: dict[str, float]) -> dict[str, float]:
    return {"prefill_ms": timings["prompt_ms"], "decode_ms": timings["predicted_ms"],
            "prompt_tokens_processed": timings["prompt_n"],
            "prompt_tokens_reused": timings["cache_n"]}


@pytest.mark.parametrize(("name", "wire"), [("chat_stream.txt", "chat"),
                                            ("chat_stream_usage.txt", "chat"),
                                            ("chat_stream_tools.txt", "chat"),
                                            ("responses_stream.txt", "responses-http")])
def test_real_llama_cpp_stream_gives_its_prefill_and_decode_times(name: str, wire: str) -> None:
    transcript = (TRANSCRIPTS / name).read_bytes().decode("utf-8")
    done, _ = turn(wire, [Reply(transcript=transcript)])
    timings = transcript_timings(name)
    assert done.server["prefill_ms"] == timings["prompt_ms"]
    assert done.server == as_server(timings)  # no queue time said: no network_ms derived


def test_real_llama_cpp_completion_not_streamed_gives_its_times() -> None:
    text = (TRANSCRIPTS / "chat_nonstream.txt").read_bytes().decode("utf-8")
    completion = json.loads(text.split("\r\n\r\n", 1)[1])
    assert server_account(completion) == as_server(completion["timings"])
    assert server_account(completion)["prefill_ms"] == 21.184


def expected(style: str, sent: dict) -> dict[str, float]:
    """What model.done should say for what the scripted server sent in `style`."""
    if style == "llama.cpp":
        return {"prefill_ms": round(sent["timings"]["prompt_ms"], 3),
                "decode_ms": round(sent["timings"]["predicted_ms"], 3),
                "prompt_tokens_processed": sent["timings"]["prompt_n"],
                "prompt_tokens_reused": sent["timings"]["cache_n"]}
    times = sent["x_groq"]["usage"] if style == "groq" else sent["time_info"]
    return {"queue_ms": round(times["queue_time"] * 1000, 3),
            "prefill_ms": round(times["prompt_time"] * 1000, 3),
            "decode_ms": round(times["completion_time"] * 1000, 3)}


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("style", ["llama.cpp", "groq", "cerebras"])
def test_each_providers_timing_fields_are_read_on_each_wire(wire: str, style: str) -> None:
    done, server = turn(wire, [Reply(text="Fixed it.", timing=style, cached_tokens=3,
                                     stall_s=0.01)], rtt_s=0.02)
    [sent] = server.served_timings
    server_times = dict(done.server)
    network = server_times.pop("network_ms", None)
    assert server_times == expected(style, sent)
    if style == "llama.cpp":  # no queue time reported: TTFT cannot be split
        assert network is None
    else:  # the emulated round trip is no server time, so TTFT - queue - prefill is positive
        assert network == round(done.ttft_ms - server_times["queue_ms"]
                                - server_times["prefill_ms"], 3)


@pytest.mark.parametrize("wire", WIRES)
def test_a_server_that_reports_no_timing_gives_no_server_spans(wire: str) -> None:
    done, server = turn(wire, [Reply(text="Fixed it.", timing="")])
    assert server.served_timings == []
    assert done.server == {}


def test_responses_default_reports_no_server_time_as_openai() -> None:
    done, _ = turn("responses-http", [Reply(text="Fixed it.")])
    assert done.server == {}


def test_groq_usage_of_a_completion_not_streamed_is_read() -> None:
    completion = {"usage": {"prompt_tokens": 10, "queue_time": 0.0125, "prompt_time": 0.004,
                            "completion_time": 0.25, "total_time": 0.2665}}
    assert server_account(completion) == {"queue_ms": 12.5, "prefill_ms": 4.0,
                                           "decode_ms": 250.0}
