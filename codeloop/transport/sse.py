"""A small incremental Server-Sent Events parser over raw bytes.

Owns framing only (`event:`/`data:` lines, comments, CRLF); it knows nothing about JSON or any
provider. Fed whatever chunks the socket delivers, it returns the events completed so far.
"""

from __future__ import annotations


class SSEParser:
    """Feed bytes, get (event, data) pairs back; `:` comments, `id:` and `retry:` are skipped."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        self._buffer += chunk
        if b"\n" not in chunk:
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        out: list[tuple[str, str]] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._data:
                    out.append((self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value.decode("utf-8", "replace"))
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
        return out

    def flush(self) -> list[tuple[str, str]]:
        """Events still pending at end of stream (a last event without its blank line)."""
        out = self.feed(b"\n\n") if (self._buffer or self._data) else []
        self._buffer = b""
        return out
