"""The edit dialects real models write, each read into the same per-file operations.

A unified diff (git's, or plain with `--- path` headers and `@@ ... @@` hunks), the V4A envelope
(`*** Begin Patch`), and SEARCH/REPLACE blocks all become `(FileHeader, [Hunk])` pairs: from here
on there is one placement engine, one path check, one all-or-nothing plan. Owns recognising
which dialect a text is in; each dialect's reader lives in its own module.
"""

from __future__ import annotations

import re

from codeloop.edits import diff, search_replace, v4a
from codeloop.edits.diff import FileHeader, Hunk
from codeloop.edits.errors import PatchError

FileOperations = list[tuple[FileHeader, list[Hunk]]]
_DIFF_HEADER = re.compile(r"^(?:--- .*\n\+\+\+ |diff --git )", re.MULTILINE)
ACCEPTED = ("codeloop reads a unified diff ('--- a/FILE', '+++ b/FILE', '@@' hunks), a V4A patch "
            "('*** Begin Patch', '*** Update File: FILE', '@@' hunks, '*** End Patch') or "
            "SEARCH/REPLACE blocks (FILE alone on a line, '<<<<<<< SEARCH', '=======', "
            "'>>>>>>> REPLACE')")


def parse_edit(text: str) -> FileOperations:
    """The file operations `text` holds, whatever its dialect; raises PatchError, in the
    dialect's own terms, when it cannot be read."""
    # (SEARCH/REPLACE first: its markers stand unprefixed at a line's start, which no line of a
    # diff or a V4A patch does, while its blocks may quote either verbatim)
    if search_replace.is_search_replace(text):
        return search_replace.parse(text)
    if v4a.is_v4a(text):
        return v4a.parse(text)
    try:
        return diff.parse(text)
    except PatchError:
        if _DIFF_HEADER.search(text.replace("\r\n", "\n")):
            raise  # a unified diff, precisely refused
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise PatchError(f"no edit codeloop can read, in the text starting {first[:80]!r}: "
                         f"{ACCEPTED}") from None
