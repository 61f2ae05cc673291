"""Reading the V4A patch envelope (Codex's `apply_patch`) into the edit model.

Owns the grammar (protocols.md §9.1): `*** Begin Patch` ... `*** End Patch` (the envelope lines
may be left out, or wrapped in a shell here-document), `*** Add File:`, `*** Delete File:`,
`*** Update File:` with `*** Move to:`, `@@ anchor` hunks without line numbers and
`*** End of File`. Each section becomes a `(FileHeader, [Hunk])` pair as a unified diff would;
where the hunks go is `place`'s job and whether a path may be touched `paths'`. No I/O here.
"""

from __future__ import annotations

import re

from codeloop.edits.diff import DEV_NULL, FileHeader, Hunk
from codeloop.edits.errors import PatchError

BEGIN, END = "*** Begin Patch", "*** End Patch"
_ADD, _DELETE, _UPDATE = "*** Add File:", "*** Delete File:", "*** Update File:"
_MOVE, _EOF = "*** Move to:", "*** End of File"
_HEADERS = (_ADD, _DELETE, _UPDATE)
_HEREDOC = re.compile(r"""^[\w./-]*\s*<<-?\s*(['"]?)(\w+)\1\s*$""")
# (a unified-diff range some models add to a V4A `@@` line: it says nothing V4A can use)
_RANGE = re.compile(r"^-\d+(?:,\d+)?\s+\+\d+(?:,\d+)?\s*(?:@@\s*)?")
_EXPECTED_HEADER = (f"expected '{_ADD} PATH', '{_UPDATE} PATH' or '{_DELETE} PATH'"
                    f" (or '{END}')")

_Line = tuple[int, str]  # (1-based line number in the text as sent, the line)


def _unwrapped(text: str) -> list[str]:
    """The text's lines, a shell here-document around it (`apply_patch <<'EOF'` ... `EOF`)
    blanked out so that line numbers stay those of the text as sent."""
    lines = text.replace("\r\n", "\n").split("\n")
    filled = [index for index, line in enumerate(lines) if line.strip()]
    if len(filled) >= 2:
        opener = _HEREDOC.match(lines[filled[0]].strip())
        second, last = lines[filled[1]], lines[filled[-1]].strip()
        if opener and (second.strip() == BEGIN or second.startswith(_HEADERS)) \
                and last == opener.group(2):
            lines[filled[0]] = lines[filled[-1]] = ""
    return lines


def _first(lines: list[str]) -> str:
    return next((line.strip() for line in lines if line.strip()), "")


def is_v4a(text: str) -> bool:
    """Whether `text` is a V4A patch: its first line (past blank lines and a here-document
    opener) is `*** Begin Patch` or a V4A file header."""
    # (as `_first(_unwrapped(text))` says, reading only the lines that decide it: every reply's
    # text is asked, and stripping all its lines was 3% of planning a 50-hunk diff, measured)
    lines = text.replace("\r\n", "\n").split("\n")
    filled = (line for line in lines if line.strip())
    first, second = next(filled, "").strip(), next(filled, "")
    if first == BEGIN or first.startswith(_HEADERS):
        return True
    opener = _HEREDOC.match(first)
    if not opener or not (second.strip() == BEGIN or second.startswith(_HEADERS)):
        return False
    return next(line for line in reversed(lines) if line.strip()).strip() == opener.group(2)


def _error(number: int, message: str) -> PatchError:
    return PatchError(f"malformed V4A patch, line {number}: {message}")


def _envelope(text: str) -> list[_Line]:
    """The numbered lines inside the envelope; a patch that opens it must close it (a reply cut
    off mid-patch is refused, not half applied)."""
    lines = list(enumerate(_unwrapped(text), 1))
    filled = [(number, line) for number, line in lines if line.strip()]
    if not filled:
        raise PatchError(f"malformed V4A patch: it is empty; send '{BEGIN}', file sections, "
                         f"'{END}'")
    if filled[0][1].strip() == BEGIN and filled[-1][1].strip() != END:
        number, line = filled[-1]
        raise _error(number, f"expected '{END}' as the last line, found {line!r} (was the "
                             "patch cut short?)")
    return lines


def _path(number: int, line: str, marker: str) -> str:
    path = line[len(marker):].strip()
    if not path:
        raise _error(number, f"'{marker}' needs a path after it, relative to the repository root")
    return path


def _section_end(lines: list[_Line], index: int) -> int:
    """Where the section whose body starts at `index` ends: the next header or envelope line."""
    while index < len(lines):
        line = lines[index][1]
        if line.startswith(_HEADERS) or line.strip() in (BEGIN, END):
            return index
        index += 1
    return index


def _added(path: str, body: list[_Line]) -> list[Hunk]:
    """An added file's one hunk: every line `+`; a blank line between them is an empty line
    whose `+` the model dropped, blank lines after the last are nothing."""
    while body and not body[-1][1].strip():
        body = body[:-1]
    lines = []
    for number, line in body:
        if line and line[0] != "+":
            raise _error(number, f"every line of '{_ADD} {path}' starts with '+', found {line!r}")
        lines.append("+" + line[1:])
    return [Hunk(None, lines, f"{_ADD} {path}")] if lines else []


def _anchor(line: str) -> str:
    """The anchor text of a `@@` line: a trailing `@@` and a unified-diff range dropped."""
    text = _RANGE.sub("", line[2:].strip())
    return text[:-2].rstrip() if text.endswith("@@") else text


def _updated(path: str, body: list[_Line]) -> list[Hunk]:
    """An updated file's hunks. Stacked `@@ anchor` lines narrow one hunk; a blank line counts
    as an empty context line (its space dropped) when more hunk lines follow it."""
    hunks: list[Hunk] = []
    anchors: list[str] = []
    lines: list[str] = []
    blanks = 0  # blank lines seen since the last hunk line: context only if one follows
    opened = 0  # the line that opened the hunk being read, 0 before any

    def close(number: int, at_end: bool = False) -> None:
        nonlocal anchors, lines, blanks
        if not lines:
            raise _error(number, "a hunk has no lines (after its '@@' line come lines "
                                 "starting with ' ', '-' or '+')")
        header = " ".join(f"@@ {anchor}" for anchor in anchors) or "@@"
        hunks.append(Hunk(None, lines, header, anchors=tuple(anchors), at_end=at_end))
        anchors, lines, blanks = [], [], 0

    for number, line in body:
        if line.startswith("@@"):
            if lines:
                close(number)
            if _anchor(line):
                anchors.append(_anchor(line))
            opened = opened or number
        elif line.strip() == _EOF:
            close(number, at_end=True)
            opened = 0
        elif line and line[0] in " +-":
            lines.extend([" "] * blanks + [line])
            blanks, opened = 0, opened or number
        elif not line.strip():
            blanks += bool(opened)
        else:
            raise _error(number, f"expected a hunk line starting with ' ', '-' or '+', an '@@' "
                                 f"line, '{_EOF}' or the next file header; found {line!r}")
    if lines or anchors:
        close(opened)
    return hunks


def _section(lines: list[_Line], index: int) -> tuple[tuple[FileHeader, list[Hunk]], int]:
    """The file section whose header is at `index`, and the index after it."""
    number, line = lines[index]
    end = _section_end(lines, index + 1)
    body = lines[index + 1:end]
    if line.startswith(_ADD):
        path = _path(number, line, _ADD)
        return (FileHeader(DEV_NULL, path, git=True), _added(path, body)), end
    if line.startswith(_DELETE):
        path = _path(number, line, _DELETE)
        extra = next(((n, text) for n, text in body if text.strip()), None)
        if extra:
            raise _error(extra[0], f"nothing follows '{_DELETE} {path}', found {extra[1]!r}")
        return (FileHeader(path, DEV_NULL, git=True), []), end
    path = target = _path(number, line, _UPDATE)
    if body and body[0][1].startswith(_MOVE):
        target = _path(body[0][0], body[0][1], _MOVE)
        body = body[1:]
    hunks = _updated(path, body)
    if not hunks and target == path:
        raise _error(number, f"'{_UPDATE} {path}' has no hunks: follow it with '@@' hunks "
                             f"(or '{_MOVE} NEWPATH' to rename it)")
    header = FileHeader(path, target, [False] * len(hunks), git=True, rename=target != path)
    return (header, hunks), end


def parse(text: str) -> list[tuple[FileHeader, list[Hunk]]]:
    """A V4A patch's files, each its header and its hunks (no line numbers); raises
    PatchError naming the line and what was expected there when it cannot be read."""
    lines = _envelope(text)
    files: list[tuple[FileHeader, list[Hunk]]] = []
    index = 0
    while index < len(lines):
        number, line = lines[index]
        if not line.strip() or line.strip() in (BEGIN, END):
            index += 1
            continue
        if not line.startswith(_HEADERS):
            raise _error(number, f"{_EXPECTED_HEADER}; found {line!r}")
        section, index = _section(lines, index)
        files.append(section)
    if not files:
        raise PatchError(f"malformed V4A patch: it has no file sections ('{_ADD} PATH', "
                         f"'{_UPDATE} PATH' or '{_DELETE} PATH')")
    return files
