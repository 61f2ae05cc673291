"""SSE framing over raw byte chunks, and turning HTTP error answers into TransportErrors."""

from __future__ import annotations

import json

import httpx
import pytest

from codeloop.transport.http import error_from_response, parse_retry_after
from codeloop.transport.sse import SSEParser

STREAM = (
    b": connected\n\n"
    b"event: delta\n"
    b'data: {"text": "h\xc3\xa9llo \xe2\x82\xac"}\n'
    b"\n"
    b": ping\n"
    b"data: first line\n"
    b"data: second line\n"
    b"\n"
    b"data:no-space\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
EXPECTED = [
    ("delta", '{"text": "héllo €"}'),
    ("message", "first line\nsecond line"),
    ("message", "no-space"),
    ("message", "[DONE]"),
]


def parse_in_chunks(data: bytes, size: int) -> list[tuple[str, str]]:
    parser = SSEParser()
    events: list[tuple[str, str]] = []
    for start in range(0, len(data), size):
        events += parser.feed(data[start:start + size])
    return events + parser.flush()


# ---------------------------------------------------------------- SSEParser


def test_whole_stream_in_one_chunk() -> None:
    assert parse_in_chunks(STREAM, len(STREAM)) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64])
def test_any_chunk_boundaries_give_the_same_events(size: int) -> None:
    assert parse_in_chunks(STREAM, size) == EXPECTED


@pytest.mark.parametrize("size", [1, 4, len(STREAM)])
def test_crlf_line_endings(size: int) -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert parse_in_chunks(crlf, size) == EXPECTED


def test_comments_are_ignored_even_inside_an_event() -> None:
    parser = SSEParser()
    assert parser.feed(b": ping\n\n:keep-alive\n\n") == []
    assert parser.feed(b"data: a\n: ping\ndata: b\n\n") == [("message", "a\nb")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: one\ndata:\ndata: three\n\n") == [("message", "one\n\nthree")]


def test_event_name_applies_to_its_own_event_only() -> None:
    parser = SSEParser()
    events = parser.feed(b"event: error\ndata: boom\n\ndata: after\n\n")
    assert events == [("error", "boom"), ("message", "after")]


def test_id_and_retry_fields_are_skipped() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 7\nretry: 1000\ndata: x\n\n") == [("message", "x")]


def test_event_without_data_is_not_dispatched() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: ping\n\n") == []
    assert parser.feed(b"data: real\n\n") == [("message", "real")]


def test_incomplete_event_waits_for_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: part") == []
    assert parser.feed(b"ial\n") == []
    assert parser.feed(b"\n") == [("message", "partial")]


@pytest.mark.parametrize("tail", [b"data: last", b"data: last\n", b"event: end\ndata: last\n"])
def test_flush_returns_a_final_event_without_its_blank_line(tail: bytes) -> None:
    parser = SSEParser()
    assert parser.feed(b"data: first\n\n" + tail) == [("message", "first")]
    name = "end" if tail.startswith(b"event") else "message"
    assert parser.flush() == [(name, "last")]
    assert parser.flush() == []


def test_flush_with_nothing_pending_returns_nothing() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\n\n") == [("message", "x")]
    assert parser.flush() == []


# ---------------------------------------------------------------- error_from_response


def openai_error(message: str, code: str | None = None, type_: str = "error") -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


def test_rate_limit_with_retry_after_is_retryable_after_that_many_seconds() -> None:
    err = error_from_response(
        429, openai_error("Rate limit reached for gpt-4.1", "rate_limit_exceeded"),
        httpx.Headers({"Retry-After": "2"}))
    assert err.retryable
    assert err.status == 429
    assert err.retry_after == 2.0
    assert "Rate limit reached for gpt-4.1" in str(err)
    assert "429" in str(err)


def test_insufficient_quota_is_a_billing_problem_not_retried() -> None:
    err = error_from_response(
        429, openai_error("You exceeded your current quota", "insufficient_quota",
                          "insufficient_quota"),
        httpx.Headers({"Retry-After": "2"}))
    assert not err.retryable
    assert "You exceeded your current quota" in str(err)
    assert "insufficient_quota" in str(err)


def test_billing_problem_stays_unretryable_even_if_server_says_retry() -> None:
    err = error_from_response(
        429, openai_error("quota", "insufficient_quota"), httpx.Headers({"x-should-retry": "true"}))
    assert not err.retryable


def test_bad_request_is_not_retryable() -> None:
    err = error_from_response(400, openai_error("Unknown parameter: 'foo'", "unknown_parameter"),
                              httpx.Headers())
    assert not err.retryable
    assert err.status == 400
    assert "Unknown parameter: 'foo'" in str(err)
    assert err.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_server_errors_and_timeouts_are_retryable(status: int) -> None:
    err = error_from_response(status, b"upstream unavailable", httpx.Headers())
    assert err.retryable
    assert "upstream unavailable" in str(err)


def test_should_retry_header_overrides_the_status_rule() -> None:
    err = error_from_response(503, b"nope", httpx.Headers({"x-should-retry": "false"}))
    assert not err.retryable


def test_retry_after_ms_wins_over_retry_after() -> None:
    headers = httpx.Headers({"retry-after-ms": "1500", "Retry-After": "7"})
    err = error_from_response(429, openai_error("slow down"), headers)
    assert err.retry_after == 1.5


def test_plain_text_body_becomes_the_message() -> None:
    err = error_from_response(502, b"<html>Bad Gateway</html>\n", httpx.Headers())
    assert "Bad Gateway" in str(err)


def test_string_error_field_becomes_the_message() -> None:
    err = error_from_response(400, b'{"error": "model not found"}', httpx.Headers())
    assert "model not found" in str(err)
    assert not err.retryable


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"retry-after": "soon"}, None),
    ({"retry-after": "0.25"}, 0.25),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "bad", "retry-after": "3"}, 3.0),
])
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers)) == expected
