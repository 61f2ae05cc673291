"""What the model has in view: files shown (as they were then), reads answered, the last test
report, and the files the user pinned.

Owns the de-duplication that keeps repeats out of the context: a file is shown again only when
it changed, a re-read of an unchanged file and a repeated failure report become one-line
references. Reads the sandbox's files; never writes them, never talks to the model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from codeloop.context import prompt
from codeloop.context.windows import focus_of
from codeloop.core.events import ModelToolCall
from codeloop.testrunner.run import TestResult


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else ""


class ModelView:
    """The model's view of the sandbox at `root`, kept to tell what it has not seen yet."""

    def __init__(self, root: Path, pinned: list[str], report_limit: int) -> None:
        self.root = root
        self.pinned = pinned  # the session's own list: an /add during start-up is in it too
        self.report_limit = report_limit  # bytes of a test report
        self.shown: dict[str, str] = {}  # file -> digest of the content shown
        self.reads: dict[str, tuple[str, int]] = {}  # read_file arguments -> (digest, turn)
        self._last_report: tuple[str, int] | None = None  # (test report, turn it was shown)

    def reread(self, turn: int, call: ModelToolCall) -> str:
        """A read of a file already in context and unchanged: a reference instead of the bytes."""
        if call.name != "read_file":
            return ""
        try:
            path = self.root / json.loads(call.arguments or "{}").get("path", "")
        except (ValueError, AttributeError, TypeError):
            return ""
        digest = _digest(path) if path.is_file() else ""
        seen = self.reads.get(call.arguments)
        self.reads[call.arguments] = (digest, seen[1] if seen and seen[0] == digest else turn)
        if digest and seen and seen[0] == digest:
            return (f"(unchanged since you read it in turn {seen[1]}: that content is still "
                    "current, so it is not repeated here)")
        return ""

    def report_once(self, turn: int, result: TestResult) -> str:
        """The test report, or a one-line reference when the same failures were reported before
        (they are already in the conversation; repeating them only costs tokens). A passing
        report is one line: it is always given as it is."""
        report = prompt.test_report(result, self.report_limit)
        if not result.passed and self._last_report is not None and self._last_report[0] == report:
            return (f"Test command result: {result.summary}: the same failures as after "
                    f"turn {self._last_report[1]}, word for word.")
        self._last_report = (report, turn)
        return report

    def _unseen(self, rels: list[str]) -> list[str]:
        """Those of `rels` whose current content the model has not seen, now counted as seen."""
        fresh = [rel for rel in rels if self.shown.get(rel) != _digest(self.root / rel)]
        for rel in fresh:
            self.shown[rel] = _digest(self.root / rel)
        return fresh

    def failure_files(self, result: TestResult) -> str:
        """Files the failures point to whose current content the model has not seen yet."""
        fresh = self._unseen(prompt.files_for_failures(self.root, result))
        if not fresh:
            return ""
        return "Files the failures point to (current content):\n" + prompt.files_section(
            self.root, fresh, focus_of(self.root, result.failures))

    def pinned_files(self) -> str:
        """Pinned files whose current content the model has not seen yet."""
        fresh = self._unseen(self.pinned)
        if not fresh:
            return ""
        return "Pinned files (current content):\n" + prompt.files_section(self.root, fresh)

    def remember(self, messages: list[dict[str, Any]]) -> None:
        """Files these messages show as they are now (an older version does not count)."""
        text = "\n".join(str(m.get("content") or "") for m in messages)
        for rel in prompt.tracked_files(self.root):
            path = self.root / rel
            if f"### {rel}\n" in text and _shown_as_now(path, rel, text):
                self.shown[rel] = _digest(path)

    def forget(self) -> None:
        """What the model has seen is gone from its context: show it again when relevant."""
        self.shown.clear()
        self.reads.clear()
        self._last_report = None


def _shown_as_now(path: Path, rel: str, text: str) -> bool:
    """Whether `text` shows the file as it is now: its start, or (a large file shown as
    windows) the block header that gives its current size."""
    content = path.read_text(errors="replace")
    return content[:2000] in text or prompt.window_header(rel, content) in text
