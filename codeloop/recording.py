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


class Recorder:
    """Writes the session to `<repo>/.codeloop/sessions/<session id>.jsonl`, one event per line.

    `mirror` (stdout for `--json`) gets the very same lines; each event is serialised once.
    """

    def __init__(self, repo_root: Path, session_id: str, secrets: tuple[str, ...] = (),
                 mirror: IO[str] | None = None) -> None:
        self.path = repo_root / SESSIONS_DIR / f"{session_id}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self._streams = [self._file] + ([mirror] if mirror else [])
        self._secrets = tuple(s for s in secrets if s)

    def __call__(self, event: Event) -> None:
        line = event_line(event, self._secrets) + "\n"
        for stream in self._streams:
            stream.write(line)
            stream.flush()

    def close(self) -> None:
        self._file.close()
