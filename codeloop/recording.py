"""The session recording: every event as one JSON line, flushed as it is written.

Owns the file under `.codeloop/sessions/` and the last line of defence for secrets: the API key's
value is scrubbed from every line before it reaches the disk or any other printed JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from codeloop.events import Event

SESSIONS_DIR = Path(".codeloop") / "sessions"
REDACTED = "[redacted]"


def event_line(event: Event, secrets: tuple[str, ...] = ()) -> str:
    """The event's JSON line (no newline), with any secret value replaced."""
    line = json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))
    for secret in secrets:
        line = line.replace(secret, REDACTED)
    return line


class JsonLinesWriter:
    """An event subscriber writing one JSON object per line, flushed per event."""

    def __init__(self, stream: IO[str], secrets: tuple[str, ...] = ()) -> None:
        self._stream = stream
        self._secrets = tuple(s for s in secrets if s)

    def __call__(self, event: Event) -> None:
        self._stream.write(event_line(event, self._secrets) + "\n")
        self._stream.flush()


class Recorder(JsonLinesWriter):
    """Writes the session to `<repo>/.codeloop/sessions/<session id>.jsonl`."""

    def __init__(self, repo_root: Path, session_id: str, secrets: tuple[str, ...] = ()) -> None:
        self.path = repo_root / SESSIONS_DIR / f"{session_id}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        super().__init__(self._file, secrets)

    def close(self) -> None:
        self._file.close()
