"""Input history kept across sessions, one JSON string per line (entries may span lines).

Owns the file under the user's state directory; used by the TUI's input box.
"""

from __future__ import annotations

import json
from pathlib import Path

from codeloop.core.dirs import state_dir

MAX_ENTRIES = 1000


class History:
    """Entries oldest first; `previous`/`following` walk them like a shell does."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "history"
        self.entries: list[str] = []
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines()[-MAX_ENTRIES:]:
                try:
                    self.entries.append(json.loads(line))
                except ValueError:
                    continue
        self.position = len(self.entries)

    def add(self, entry: str) -> None:
        if entry.strip() and (not self.entries or self.entries[-1] != entry):
            self.entries.append(entry)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
        self.position = len(self.entries)

    def previous(self) -> str | None:
        if self.position == 0:
            return None
        self.position -= 1
        return self.entries[self.position]

    def following(self) -> str | None:
        if self.position >= len(self.entries):
            return None
        self.position += 1
        return self.entries[self.position] if self.position < len(self.entries) else ""
