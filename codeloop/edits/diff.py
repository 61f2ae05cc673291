"""Reading unified diffs as models write them: headers, hunks, and the usual quirks repaired.

Owns the lenient repair of diff text (wrong or missing hunk numbers and counts, missing `a/` `b/`
prefixes, Aider's `@@ ... @@` and other hunk headers without numbers, blank context lines
without their space, git's quoted paths and its rename and mode headers) and parsing it into
decoded file headers and hunks (what the repair wrote plainly as it is, anything else with
`unidiff`). It never reads the files a diff names: where a hunk goes is `place`'s job, whether
a path may be touched `paths`'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from unidiff import PatchedFile, PatchSet
from unidiff.errors import UnidiffParseError

from codeloop.edits.errors import PatchError
from codeloop.edits.paths import CONTROL_CHARACTER

DEV_NULL = "/dev/null"
_HUNK_HEADER = re.compile(r"^@@(?:\s+-(\d+)(?:,\d+)?\s+\+(\d+)(?:,\d+)?)?\s*(?:@@+(.*))?$")
# Aider's udiff: `@@ ... @@`, or a title instead of numbers (`@@ def add(a, b): @@`, `@@ def f():`)
_TITLED_HEADER = re.compile(r"^@@\s+\S.*$")
_GIT_HEADER = "diff --git "
_C_ESCAPE = re.compile(rb'\\([0-7]{1,3}|[abtnvfr"\\])')
_C_CHARS = {b"a": b"\a", b"b": b"\b", b"t": b"\t", b"n": b"\n", b"v": b"\v", b"f": b"\f",
            b"r": b"\r", b'"': b'"', b"\\": b"\\"}


@dataclass
class Hunk:
    """One hunk: where its old side starts (None when the model gave no line numbers), its
    lines, and whether either side ends without a newline."""

    old_start: int | None
    lines: list[str]  # each starts with ' ', '-', '+'; '\\' markers already folded away
    header: str
    no_eol_old: bool = False
    no_eol_new: bool = False
    anchors: tuple[str, ...] = ()  # V4A `@@ anchor` lines: each narrows where the hunk goes
    at_end: bool = False  # V4A `*** End of File`: the hunk ends where the file ends


@dataclass
class FileHeader:
    """One file's header as the model wrote it, decoded: the paths (or DEV_NULL), whether its
    hunks gave line numbers, and what a `diff --git` extended header said."""

    source: str
    target: str
    numbered: list[bool] = field(default_factory=list)
    git: bool = False  # from a `diff --git` section: a hunkless file is meaningful
    rename: bool = False
    new_mode: str | None = None
    unsupported: str = ""  # why codeloop cannot apply it (a binary patch, a copy)
    titles: list[str] = field(default_factory=list)  # per hunk: its header if titled, unnumbered


_NO_HEADER = ("malformed diff: every file needs a '--- a/FILE' / '+++ b/FILE' header followed "
              "by at least one '@@' hunk")


def _unquote(path: str) -> str:
    """Decode a path git quoted (`"a/caf\\303\\251.py"`: C escapes, octal UTF-8 bytes)."""
    if len(path) < 2 or not path.startswith('"') or not path.endswith('"'):
        return path
    raw = path[1:-1].encode("utf-8", "surrogateescape")
    return _C_ESCAPE.sub(_unescape, raw).decode("utf-8", "surrogateescape")


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    return _C_CHARS.get(code) or bytes([int(code, 8) & 0xFF])


def _strip_prefix(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith('"'):  # a quoted path ends at its closing quote, before any timestamp
        end = re.match(r'"(?:[^"\\]|\\.)*"', raw)
        path = _unquote(end.group(0)) if end else raw
    else:
        path = raw.split("\t")[0].strip()
    if path == DEV_NULL:
        return path
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


def _git_paths(rest: str) -> tuple[str, str]:
    """The two paths of a `diff --git A B` line (quoted, or split where both halves agree)."""
    quoted = re.findall(r'"(?:[^"\\]|\\.)*"|\S+', rest)
    if len(quoted) == 2 and any(part.startswith('"') for part in quoted):
        return _strip_prefix(quoted[0]), _strip_prefix(quoted[1])
    half = (len(rest) - 1) // 2
    if rest[half:half + 1] == " " and rest[2:half] == rest[half + 3:]:
        return _strip_prefix(rest[:half]), _strip_prefix(rest[half + 1:])
    source, _, target = rest.partition(" b/")
    return _strip_prefix(source), _strip_prefix("b/" + target)


def _git_section(line: str, section: FileHeader) -> bool:
    """Fold one extended-header line of a `diff --git` section into it; False if it is none."""
    if line.startswith("rename from "):
        section.source, section.rename = _unquote(line[len("rename from "):].strip()), True
    elif line.startswith("rename to "):
        section.target, section.rename = _unquote(line[len("rename to "):].strip()), True
    elif line.startswith(("new mode ", "new file mode ")):
        section.new_mode = line.rsplit(" ", 1)[1].strip()
        if line.startswith("new file mode "):
            section.source = DEV_NULL
    elif line.startswith("deleted file mode "):
        section.target = DEV_NULL
    elif line.startswith(("Binary files ", "GIT binary patch")):
        section.unsupported = "binary patches are not supported; send the file's new content " \
                              "as text"
    elif line.startswith(("copy from ", "copy to ")):
        section.unsupported = "copies are not supported; create the copy from '--- /dev/null'"
    else:
        return line.startswith(("index ", "similarity index", "dissimilarity index",
                                "old mode "))
    return True


def _header_lines(header: FileHeader) -> list[str]:
    """The header unidiff parses; the paths it reads are never used (ours are decoded), so
    control characters that would confuse it are masked."""
    def shown(path: str, side: str) -> str:
        return path if path == DEV_NULL else side + CONTROL_CHARACTER.sub("?", path)
    return [f"--- {shown(header.source, 'a/')}", f"+++ {shown(header.target, 'b/')}"]


def _is_file_header(lines: list[str], i: int) -> bool:
    return (lines[i].startswith("--- ") and i + 1 < len(lines)
            and lines[i + 1].startswith("+++ "))


def _is_hunk_header(line: str) -> bool:
    # (both patterns start with "@@": most lines are told apart without a regex)
    return line.startswith("@@") and bool(_HUNK_HEADER.match(line)
                                          or _TITLED_HEADER.match(line))


def _ends_hunk(lines: list[str], i: int) -> bool:
    return (_is_hunk_header(lines[i]) or _is_file_header(lines, i)
            or lines[i].startswith(_GIT_HEADER))


def _more_hunk_lines(lines: list[str], i: int) -> bool:
    """Whether hunk lines follow from `i` on, past blank lines (before any header or prose)."""
    while i < len(lines) and lines[i] == "":
        i += 1
    return i < len(lines) and lines[i][0] in " -+" and not _ends_hunk(lines, i)


def _body(lines: list[str], i: int) -> tuple[list[str], int]:
    """The hunk lines from `i` on, and the index after them. A line without its leading marker
    (often a blank line) is a context line whose space was dropped, as long as more hunk lines
    follow it."""
    body: list[str] = []
    while i < len(lines):
        item = lines[i]
        if item[:1] in (" ", "+"):  # (no header starts so: most lines are told at once)
            body.append(item)
            i += 1
            continue
        if _ends_hunk(lines, i):
            break
        if (not item or item[0] not in " -+\\") and _more_hunk_lines(lines, i + 1):
            item = " " + item
        elif not item or item[0] not in " -+\\":
            break
        body.append(item)
        i += 1
    return body, i


class _Repaired(NamedTuple):
    """A hunk as `repair` writes it."""

    at: int  # the index of its file header; -1 before any
    old_start: int
    old: int  # its lines on the old side
    new_start: int
    new: int
    body: list[str]


def repair(diff_text: str) -> tuple[str, list[FileHeader]]:
    """Rewrite a model's diff as a strictly valid unified diff: exact counts, real headers.
    (`_repair`, without the hunks as written.)"""
    text, headers, _ = _repair(diff_text)
    return text, headers


def _repair(diff_text: str) -> tuple[str, list[FileHeader], list[_Repaired]]:
    """Rewrite a model's diff as a strictly valid unified diff: exact counts, real headers.

    Returns the text and, per file header in it, the decoded header (paths, whether each hunk
    gave line numbers, what a `diff --git` section said). A `diff --git` section without
    `---`/`+++` lines (a pure rename or mode change) gets a header of its own.
    A line inside a hunk without its leading marker (often a blank line) is a context line whose
    space was dropped, as long as more hunk lines follow it.
    """
    lines = diff_text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    headers: list[FileHeader] = []
    written: list[_Repaired] = []
    section: FileHeader | None = None  # a `diff --git` section whose file header is pending

    def flush() -> None:
        if section is not None:
            headers.append(section)
            out.extend(_header_lines(section))

    i = 0
    while i < len(lines):
        line = lines[i]
        at_sign = line.startswith("@@")  # (else neither header pattern can match)
        match = _HUNK_HEADER.match(line) if at_sign else None
        # a titled `@@` line starts a hunk only under a file header: before the first one it is
        # the model's prose (`@@ Fix the sign`), skipped as it always was
        hunk = bool(match or (at_sign and _TITLED_HEADER.match(line)
                              and (headers or section is not None)))
        git = line.startswith(_GIT_HEADER)
        if git or (hunk and section is not None):
            flush()  # (a hunk right after a `diff --git` line belongs to that line's paths)
            section = None
        if git:
            section = FileHeader(*_git_paths(line[len("diff --git "):]), git=True)
            i += 1
            continue
        if section is not None and _git_section(line, section):
            i += 1
            continue
        if _is_file_header(lines, i):
            header = section or FileHeader("", "")
            header.source = _strip_prefix(line[4:])
            header.target = _strip_prefix(lines[i + 1][4:])
            headers.append(header)
            out.extend(_header_lines(header))
            section = None
            i += 2
            continue
        if not hunk:
            i += 1
            continue
        body, i = _body(lines, i + 1)
        old = sum(1 for b in body if b[0] in " -")
        new = sum(1 for b in body if b[0] in " +")
        numbers = match.groups() if match else (None, None, None)
        if headers:
            headers[-1].numbered.append(numbers[0] is not None)
            headers[-1].titles.append("" if match else line.strip())
        old_start, new_start = int(numbers[0] or 0), int(numbers[1] or 0)
        out.append(f"@@ -{old_start},{old} +{new_start},{new} @@{numbers[2] or ''}")
        out.extend(body)
        written.append(_Repaired(len(headers) - 1, old_start, old, new_start, new, body))
    flush()
    return "\n".join(out) + "\n", headers, written


def _hunks(patched_file: PatchedFile, header: FileHeader) -> list[Hunk]:
    """A parsed file's hunks, their `\\ No newline` markers folded into flags; a hunk whose
    header had a title but no numbers is named by that header, as the model wrote it."""
    hunks = []
    for hunk, has_numbers, title in zip(patched_file, header.numbered, header.titles,
                                        strict=True):
        lines: list[str] = []
        no_eol_old = no_eol_new = False
        for line in hunk:
            if line.line_type == "\\":
                previous = lines[-1][0] if lines else " "
                no_eol_old |= previous in " -"
                no_eol_new |= previous in " +"
                continue
            lines.append(line.line_type + line.value.rstrip("\n"))
        name = title or f"@@ -{hunk.source_start},{hunk.source_length} +{hunk.target_start}," \
                        f"{hunk.target_length} @@"
        start = hunk.source_start if has_numbers else None
        hunks.append(Hunk(start, lines, name, no_eol_old, no_eol_new))
    return hunks


def _plain(headers: list[FileHeader], written: list[_Repaired]) -> list[list[Hunk]] | None:
    """Each file's hunks straight from `repair`'s own, when what it wrote is plain: every hunk
    under a file header, none empty, no `\\` marker line. unidiff reads such a text exactly so
    (each hunk's lines are its counts' worth), and reading it took a third of parsing a 50-hunk
    diff (measured, benchmarks/edits.py); None for anything else, which unidiff reads."""
    files: list[list[Hunk]] = [[] for _ in headers]
    for at, old_start, old, new_start, new, body in written:
        if at < 0 or not body or any(line[0] == "\\" for line in body):
            return None
        title = headers[at].titles[len(files[at])]
        name = title or f"@@ -{old_start},{old} +{new_start},{new} @@"
        start = old_start if headers[at].numbered[len(files[at])] else None
        files[at].append(Hunk(start, body, name))
    return files


def parse(diff_text: str) -> list[tuple[FileHeader, list[Hunk]]]:
    """One diff's files, each its decoded header and its hunks; raises PatchError when
    malformed."""
    repaired, headers, written = _repair(diff_text)
    plain = _plain(headers, written)
    if plain is not None:
        if not headers or any(not hunks and not (header.git or header.target == DEV_NULL)
                              for header, hunks in zip(headers, plain, strict=True)):
            raise PatchError(_NO_HEADER)
        return list(zip(headers, plain, strict=True))
    try:
        patch = PatchSet(repaired)
    except UnidiffParseError as exc:
        raise PatchError(f"malformed diff: {exc}") from None
    if not patch or len(patch) != len(headers) or any(
            len(patched) != len(header.numbered)
            or not patched and not (header.git or header.target == DEV_NULL)
            for patched, header in zip(patch, headers, strict=True)):
        raise PatchError(_NO_HEADER)
    if any(len(hunk) == 0 for patched in patch for hunk in patched):
        raise PatchError("malformed diff: a hunk has no lines (every line of a hunk starts "
                         "with ' ', '-' or '+')")
    return [(header, _hunks(patched, header))
            for patched, header in zip(patch, headers, strict=True)]
