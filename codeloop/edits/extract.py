"""Finding the edits in a model reply: `apply_patch` tool calls and the edits written in its text.

In the text, in order of appearance: unified diffs (```diff/```patch/untagged fences, or bare
`--- a/x` … `@@` text), V4A envelopes (`*** Begin Patch` … `*** End Patch`, fenced or bare, or a
fence whose body starts with `*** Update File:`) and SEARCH/REPLACE blocks (the path on the line
before; all of a reply's blocks are one edit text). Something edit-like that is none of these (a
```diff fence of prose, a lone `@@` hunk header, a broken envelope) is `unusable`: it is handed on
so that it is refused precisely, never silently dropped. V4A and SEARCH/REPLACE are handed on in
their plain form (no fence, `\\n` line ends, V4A inside its envelope). Owns extraction only:
reading a dialect is `dialects`', placing and applying `patch`'s and `Sandbox`'s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from codeloop.edits.search_replace import DIVIDER_LINE, REPLACE_LINE, SEARCH_LINE, path_on

_FENCE = re.compile(r"^```[ \t]*([\w+-]*)[^\n]*\n(.*?)(^```[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_DIFF_LANGS = {"diff", "patch", "udiff"}
_BEGIN = re.compile(r"^\*\*\* Begin Patch\s*$")
_END = re.compile(r"^\*\*\* End Patch\s*$")
_V4A_FILE = re.compile(r"^\*\*\* (?:Update|Add|Delete) File: ")
_HUNK = re.compile(r"^@@(?: -\d|.*@@)")
_EDIT_LIKE = re.compile(r"^(?:\*\*\* Begin Patch|\*\*\* (?:Update|Add|Delete) File: |<{5,9} SEARCH"
                        r"|@@ -\d|@@.*@@|--- .*\n\+\+\+ )", re.MULTILINE)
_DIFF_LINE = ("--- ", "+++ ", "@@", " ", "+", "-", "\\", "diff --git ", "index ", "new file mode ",
              "deleted file mode ", "old mode ", "new mode ", "similarity index ", "rename from ",
              "rename to ", "Binary files ")
_BULLET = re.compile(r"^[-+*] [A-Z`*]")  # prose after a bare diff, not a hunk line


@dataclass
class ProposedEdit:
    """One edit text (a unified diff, a V4A envelope, SEARCH/REPLACE blocks, or an edit-like
    fragment to refuse) and where it came from (`tool:<call id>` or `text`)."""

    source: str
    diff: str
    refusal: str = ""  # an edit call that could not be read: the whole change is refused


@dataclass
class Found:
    """A reply's edit texts in order of appearance, and the edit-like fragments that are none."""

    edits: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)


@dataclass
class _Scan:
    """What a scan has seen so far: (offset, text) items, the SEARCH/REPLACE blocks for one
    text, and the path a block without its own path line belongs to."""

    cut_off: bool
    edits: list[tuple[int, str]] = field(default_factory=list)
    unusable: list[tuple[int, str]] = field(default_factory=list)
    blocks: list[tuple[int, str]] = field(default_factory=list)
    path: str = ""

    def found(self) -> Found:
        edits = list(self.edits)
        if self.blocks:
            edits.append((self.blocks[0][0], "".join(block for _, block in self.blocks)))
        return Found([text for _, text in sorted(edits, key=lambda item: item[0])],
                     [text for _, text in sorted(self.unusable, key=lambda item: item[0])])


def _looks_like_diff(body: str) -> bool:
    return bool(re.search(r"^--- .*\n\+\+\+ ", body, re.MULTILINE)) and "@@" in body


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").split("\n")


def _joined(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _path_of(line: str) -> str:
    """The file path a line before a SEARCH block names: the line alone (`calc.py`,
    `**calc.py**:`, `## calc.py`), or one quoted path in prose (`In `calc.py`:`). Any other
    prose names none, and the block is refused for it (never a file named after a word)."""
    quoted = re.findall(r"`([^`\s]+)`", line)
    if len(quoted) == 1 and ("." in quoted[0] or "/" in quoted[0]):
        return quoted[0]
    return path_on(line)


def _is_v4a_line(line: str) -> bool:
    return line == "" or line.startswith(("*** ", "@@", " ", "+", "-"))


def _v4a(lines: list[str], i: int) -> tuple[str, int, bool]:
    """The V4A text starting at line `i` (an envelope, or file sections then wrapped in one),
    the index after it, and whether it was complete (an envelope needs its `*** End Patch`)."""
    if _BEGIN.match(lines[i]):
        j = i + 1
        while j < len(lines) and not _END.match(lines[j]):
            j += 1
        if j < len(lines):
            return _joined(lines[i:j + 1]), j + 1, True
        return _joined(lines[i:]), j, False
    j = i + 1
    while j < len(lines) and _is_v4a_line(lines[j]) and not _END.match(lines[j]):
        j += 1
    body = lines[i:j]
    while body and body[-1] == "":
        body.pop()
    return _joined(["*** Begin Patch", *body, "*** End Patch"]), j, True


def _search_replace(lines: list[str], i: int) -> tuple[list[str], int, bool]:
    """The SEARCH/REPLACE block starting at line `i`, the index after it, and whether it is
    complete (a divider, then the REPLACE marker, before any other SEARCH)."""
    j, divided = i + 1, False
    while j < len(lines):
        if SEARCH_LINE.match(lines[j]):
            break
        if DIVIDER_LINE.match(lines[j]) and not divided:
            divided = True
        elif REPLACE_LINE.match(lines[j]):
            return lines[i:j + 1], j + 1, divided
        j += 1
    return lines[i:j], j, False


def _diff(lines: list[str], i: int) -> tuple[str, int]:
    """The bare unified diff (or lone hunk) starting at line `i`, and the index after it: it
    ends at the first line of prose (a blank line ends it unless hunk lines follow)."""
    j = i
    while j < len(lines):
        line = lines[j]
        if line == "":
            following = lines[j + 1] if j + 1 < len(lines) else ""
            if not following.startswith(_DIFF_LINE) or _BULLET.match(following):
                break
        elif not line.startswith(_DIFF_LINE) or _BULLET.match(line):
            break
        j += 1
    return _joined(lines[i:j]), j


def _block_text(scan: _Scan, lines: list[str], i: int, block: list[str]) -> str:
    """One block in its plain form, its path from the nearest line before it (a previous
    block's REPLACE marker means the same file as that block)."""
    before = next((line for line in reversed(lines[:i])
                   if line.strip() and not line.startswith("```")), "")
    if before and not REPLACE_LINE.match(before):
        scan.path = _path_of(before)
    divider = next(n for n, line in enumerate(block) if DIVIDER_LINE.match(line))
    search, replace = block[1:divider], block[divider + 1:-1]
    return (f"{scan.path}\n<<<<<<< SEARCH\n{_joined(search)}=======\n{_joined(replace)}"
            ">>>>>>> REPLACE\n")


def _scan_lines(scan: _Scan, text: str, offset: int, at_end: bool, diffs: bool = True) -> None:
    """Find the edits in `text` (bare, or one fence's body), which starts at `offset` of the
    reply; `at_end`: it runs to the reply's end (where a cut-off reply lost its tail).
    `diffs`: unified diffs count too (not in a fence tagged as another language: there they are
    quoted output, `ruff --diff`'s or a failing test's)."""
    lines = _lines(text)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    i = 0
    while i < len(lines):
        line, where = lines[i], offset + starts[i]
        if _BEGIN.match(line) or _V4A_FILE.match(line):
            edit, i, complete = _v4a(lines, i)
            if not complete and scan.cut_off and at_end:
                return
            (scan.edits if complete else scan.unusable).append((where, edit))
        elif SEARCH_LINE.match(line):
            block, j, complete = _search_replace(lines, i)
            if not complete and scan.cut_off and at_end and j == len(lines):
                return
            if complete:
                scan.blocks.append((where, _block_text(scan, lines, i, block)))
            else:
                path = next((x for x in reversed(lines[:i]) if x.strip()), "")
                scan.unusable.append((where, _joined([path, *block])))
            i = j
        elif diffs and (line.startswith(("diff --git ", "--- ")) or _HUNK.match(line)):
            edit, j = _diff(lines, i)
            if scan.cut_off and at_end and not "".join(lines[j:]).strip():
                return
            usable = (_looks_like_diff(edit) or line.startswith("diff --git ")) \
                and not _HUNK.match(line)
            if usable or re.search(r"^@@", edit, re.MULTILINE):
                (scan.edits if usable else scan.unusable).append((where, edit))
            i = max(j, i + 1)
        else:
            i += 1


def _scan_fence(scan: _Scan, match: re.Match[str], text: str) -> None:
    lang, body, closed = match.group(1).lower(), match.group(2), bool(match.group(3))
    if scan.cut_off and not closed:
        return
    if (lang in _DIFF_LANGS or not lang) and _looks_like_diff(body):
        scan.edits.append((match.start(2), body))  # as it came: `diff` repairs its quirks
        return
    before = len(scan.edits) + len(scan.unusable) + len(scan.blocks)
    if _EDIT_LIKE.search(body):
        outside = _lines(text[:match.start()])
        scan.path = _path_of(next((x for x in reversed(outside) if x.strip()), "")) or scan.path
        _scan_lines(scan, body, match.start(2), at_end=not closed,
                    diffs=lang in _DIFF_LANGS or not lang)
    if lang in _DIFF_LANGS and before == len(scan.edits) + len(scan.unusable) + len(scan.blocks):
        scan.unusable.append((match.start(2), body))  # a ```diff fence that holds no diff


def scan_text(text: str, cut_off: bool = False) -> Found:
    """Every edit in a reply's text, fenced or bare, in order of appearance, and the edit-like
    fragments that are no usable edit.

    A last fence (or bare edit) left unfinished counts, unless the reply was cut off at the
    token limit.
    """
    scan = _Scan(cut_off)
    last = 0
    for match in _FENCE.finditer(text):
        _scan_lines(scan, text[last:match.start()], last, at_end=False)
        _scan_fence(scan, match, text)
        last = match.end()
    _scan_lines(scan, text[last:], last, at_end=True)
    return scan.found()


def _as_edit(value: str) -> str:
    """An argument's edit text: a unified diff as it came, another dialect in its plain form."""
    if _looks_like_diff(value):
        return value
    found = scan_text(value)
    return found.edits[0] if len(found.edits) == 1 and not found.unusable else value


def patch_argument(arguments: str) -> str:
    """The edit inside an `apply_patch` call's JSON arguments (`patch`, `diff` or `input`), or
    the arguments themselves when they are an edit (a freeform tool's input); raises ValueError
    if there is none."""
    try:
        data = json.loads(arguments) if arguments.strip() else {}
    except ValueError as exc:
        if _EDIT_LIKE.search(arguments):
            return _as_edit(arguments)
        raise ValueError(f"apply_patch arguments are not valid JSON: {exc}") from None
    if isinstance(data, str) and _EDIT_LIKE.search(data):
        return _as_edit(data)
    if isinstance(data, dict):
        for key in ("patch", "diff", "input"):
            if isinstance(data.get(key), str) and data[key].strip():
                return _as_edit(data[key])
    raise ValueError("apply_patch needs a JSON object with a non-empty string field 'patch'")


_OPERATIONS = {"create_file": "Add", "update_file": "Update", "delete_file": "Delete"}


def operation_patch(arguments: str) -> str:
    """The V4A patch for one operation of the built-in apply_patch tool (its JSON: `type`
    create_file / update_file / delete_file, `path`, and `diff` but for a delete); raises
    ValueError saying what is wrong with it."""
    try:
        operation = json.loads(arguments)
    except ValueError:
        operation = None
    if not isinstance(operation, dict):
        raise ValueError("the apply_patch operation is not a JSON object")
    verb = _OPERATIONS.get(operation.get("type"))  # type: ignore[arg-type]
    if verb is None:
        raise ValueError(f"unknown apply_patch operation type {operation.get('type')!r}: it is "
                         f"one of {', '.join(_OPERATIONS)}")
    path, diff = operation.get("path"), operation.get("diff")
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"the {operation['type']} operation names no path")
    if "\n" in path or "\r" in path:  # it would start another section of the patch
        raise ValueError(f"the {operation['type']} operation's path holds a line break: "
                         f"{path!r}")
    if verb == "Delete":
        return f"*** Begin Patch\n*** Delete File: {path}\n*** End Patch\n"
    if not isinstance(diff, str):
        raise ValueError(f"the {operation['type']} operation of {path} has no diff")
    body = diff.replace("\r\n", "\n")
    if body and not body.endswith("\n"):
        body += "\n"
    return f"*** Begin Patch\n*** {verb} File: {path}\n{body}*** End Patch\n"
