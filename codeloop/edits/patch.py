"""Turning the unified diffs real models write into exact file edits, or a precise refusal.

Owns the lenient repair of diff text (wrong or missing hunk numbers and counts, missing `a/` `b/`
prefixes, blank context lines without their space, git's quoted paths and its rename and mode
headers), parsing with `unidiff`, placing each hunk by its content (tolerating CRLF/LF, trailing
whitespace and indentation differences; recognising a hunk already applied; refusing a hunk
that fits several places), and path safety (only regular files are patched). The result is
each file's whole new content (`FileEdit`), which `Sandbox.commit_patch` writes. It reads the
sandbox but never writes to it.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from unidiff import PatchedFile, PatchSet
from unidiff.errors import UnidiffParseError

from codeloop.workspace.sandbox import index_modes

DEV_NULL = "/dev/null"
_HUNK_HEADER = re.compile(r"^@@(?:\s+-(\d+)(?:,\d+)?\s+\+(\d+)(?:,\d+)?)?\s*(?:@@+(.*))?$")
_GIT_HEADER = re.compile(r"^diff --git ")
_C_ESCAPE = re.compile(rb'\\([0-7]{1,3}|[abtnvfr"\\])')
_C_CHARS = {b"a": b"\a", b"b": b"\b", b"t": b"\t", b"n": b"\n", b"v": b"\v", b"f": b"\f",
            b"r": b"\r", b'"': b'"', b"\\": b"\\"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NEIGHBOURHOOD = 40  # lines either side of a hunk searched first for what it meant
REGULAR, EXECUTABLE = "100644", "100755"
_UNSUPPORTED_MODES = {"120000": "a symbolic link", "160000": "a submodule"}


class PatchError(Exception):
    """The patch cannot be applied; the message says precisely why, for the model to read."""


@dataclass
class FileEdit:
    """The whole effect of a patch on one file: content before and after (None = absent), its
    git mode before and after, and the path it was renamed from (its `before` is that file's)."""

    path: str
    before: str | None
    after: str | None
    already_applied: list[str] = field(default_factory=list)
    mode_before: str | None = None
    mode_after: str | None = None
    renamed_from: str | None = None

    @property
    def changed(self) -> bool:
        return (self.before != self.after or self.mode_before != self.mode_after
                or self.renamed_from is not None)


@dataclass
class _Hunk:
    old_start: int | None
    lines: list[str]  # each starts with ' ', '-', '+'; '\\' markers already folded away
    header: str
    no_eol_old: bool = False
    no_eol_new: bool = False


@dataclass
class _FileHeader:
    """One file's header as the model wrote it, decoded: the paths (or DEV_NULL), whether its
    hunks gave line numbers, and what a `diff --git` extended header said."""

    source: str
    target: str
    numbered: list[bool] = field(default_factory=list)
    git: bool = False  # from a `diff --git` section: a hunkless file is meaningful
    rename: bool = False
    new_mode: str | None = None
    unsupported: str = ""  # why codeloop cannot apply it (a binary patch, a copy)


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


def _git_section(line: str, section: _FileHeader) -> bool:
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


def _header_lines(header: _FileHeader) -> list[str]:
    """The header unidiff parses; the paths it reads are never used (ours are decoded), so
    control characters that would confuse it are masked."""
    def shown(path: str, side: str) -> str:
        return path if path == DEV_NULL else side + _CONTROL.sub("?", path)
    return [f"--- {shown(header.source, 'a/')}", f"+++ {shown(header.target, 'b/')}"]


def _is_file_header(lines: list[str], i: int) -> bool:
    return (lines[i].startswith("--- ") and i + 1 < len(lines)
            and lines[i + 1].startswith("+++ "))


def _ends_hunk(lines: list[str], i: int) -> bool:
    return bool(_HUNK_HEADER.match(lines[i]) or _is_file_header(lines, i)
                or _GIT_HEADER.match(lines[i]))


def _more_hunk_lines(lines: list[str], i: int) -> bool:
    """Whether hunk lines follow from `i` on, past blank lines (before any header or prose)."""
    while i < len(lines) and lines[i] == "":
        i += 1
    return i < len(lines) and lines[i][0] in " -+" and not _ends_hunk(lines, i)


def repair(diff_text: str) -> tuple[str, list[_FileHeader]]:
    """Rewrite a model's diff as a strictly valid unified diff: exact counts, real headers.

    Returns the text and, per file header in it, the decoded header (paths, whether each hunk
    gave line numbers, what a `diff --git` section said). A `diff --git` section without
    `---`/`+++` lines (a pure rename or mode change) gets a header of its own.
    A line inside a hunk without its leading marker (often a blank line) is a context line whose
    space was dropped, as long as more hunk lines follow it.
    """
    lines = diff_text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    headers: list[_FileHeader] = []
    section: _FileHeader | None = None  # a `diff --git` section whose file header is pending

    def flush() -> None:
        if section is not None:
            headers.append(section)
            out.extend(_header_lines(section))

    i = 0
    while i < len(lines):
        line = lines[i]
        match = _HUNK_HEADER.match(line)
        if _GIT_HEADER.match(line) or (match and section is not None):
            flush()  # (a hunk right after a `diff --git` line belongs to that line's paths)
            section = None
        if _GIT_HEADER.match(line):
            section = _FileHeader(*_git_paths(line[len("diff --git "):]), git=True)
            i += 1
            continue
        if section is not None and _git_section(line, section):
            i += 1
            continue
        if _is_file_header(lines, i):
            header = section or _FileHeader("", "")
            header.source = _strip_prefix(line[4:])
            header.target = _strip_prefix(lines[i + 1][4:])
            headers.append(header)
            out.extend(_header_lines(header))
            section = None
            i += 2
            continue
        if not match:
            i += 1
            continue
        body: list[str] = []
        i += 1
        while i < len(lines) and not _ends_hunk(lines, i):
            item = lines[i]
            if (not item or item[0] not in " -+\\") and _more_hunk_lines(lines, i + 1):
                item = " " + item  # a context line whose leading space was dropped
            elif not item or item[0] not in " -+\\":
                break
            body.append(item)
            i += 1
        old = sum(1 for b in body if b[0] in " -")
        new = sum(1 for b in body if b[0] in " +")
        if headers:
            headers[-1].numbered.append(match.group(1) is not None)
        old_start = int(match.group(1) or 0)
        new_start = int(match.group(2) or 0)
        out.append(f"@@ -{old_start},{old} +{new_start},{new} @@{match.group(3) or ''}")
        out.extend(body)
    flush()
    return "\n".join(out) + "\n", headers


def _norm(line: str) -> str:
    return line.rstrip()


def _bare(line: str) -> str:
    """A file's line without its end of line ("\\n" or "\\r\\n")."""
    return line.rstrip("\r\n")


def _lines_of(content: str) -> list[str]:
    """`content`'s lines without their ends of line (CRLF or LF: the same lines)."""
    return [_bare(line) for line in _split(content)]


def _split(content: str) -> list[str]:
    """`content`'s lines, each with its "\\n" (a CRLF stays whole). Only "\\n" ends a line, as
    for git and diff: a form feed, a lone "\\r" or a Unicode line separator is part of one."""
    lines = [line + "\n" for line in content.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


_Key = Callable[[str], str]


def _find(haystack: list[str], needle: list[str], hint: int, key: _Key,
          keyed: dict[_Key, list[str]]) -> list[int]:
    """All positions where `needle` occurs in `haystack` under `key`, nearest to `hint` first.
    `keyed` holds the haystack under each key used so far (a file can be long: keyed once)."""
    if not needle:
        return [min(max(hint, 0), len(haystack))]
    wanted = [key(n) for n in needle]
    if key not in keyed:
        keyed[key] = [key(h) for h in haystack]
    lines, found, pos = keyed[key], [], -1
    while True:  # (list.index: each occurrence of the first line, found at C speed)
        try:
            pos = lines.index(wanted[0], pos + 1, len(lines) - len(wanted) + 1)
        except ValueError:
            return sorted(found, key=lambda at: abs(at - hint))
        if lines[pos:pos + len(wanted)] == wanted:
            found.append(pos)


def _settle(found: list[int], hint: int, numbered: bool, cursor: int | None) -> list[int]:
    """The one place among `found` (sorted nearest to `hint` first) the hunk means, or all of
    them when nothing settles it. A numbered hunk is settled by its line numbers when the
    nearest match is at the hinted line or less than half as far from it as the next one. An
    unnumbered hunk is settled when it matches once, or once after the hunk before it
    (hunks come in file order)."""
    if len(found) <= 1:
        return found
    if numbered:
        nearest, runner_up = abs(found[0] - hint), abs(found[1] - hint)
        return found[:1] if nearest == 0 or 2 * nearest < runner_up else found
    after = [pos for pos in found if cursor is not None and pos >= cursor]
    return after if len(after) == 1 else found


def _find_new(file_lines: list[str], old: list[str], new: list[str], hint: int,
              keys: tuple[_Key, ...], keyed: dict[_Key, list[str]]) -> list[int]:
    """Where the hunk's new side already sits, nearest `hint` first: compared under `keys` (as
    leniently as its old side was found), but never so leniently that the two sides look alike
    (a hunk that changes only indentation is looked for with it, one that changes only
    trailing whitespace exactly)."""
    telling = [key for key in keys if list(map(key, old)) != list(map(key, new))]
    for key in telling or [_bare]:
        found = _find(file_lines, new, hint, key, keyed)
        if found:
            return found
    return []


def _place(file_lines: list[str], old: list[str], new: list[str], hint: int, numbered: bool,
           cursor: int | None, adds: bool) -> tuple[str, list[int]]:
    """What a hunk means here, from where its old side and its new side sit in the file.

    Returns ("applied", [where its new side is]), ("apply", [where its old side is]),
    ("ambiguous", [the places its old side fits]), ("absent", []), or ("elsewhere", [where its
    old side is, where its new side is]) for an unnumbered hunk that cannot be told apart from
    one already applied. The old side is matched exactly up to trailing whitespace, else up to
    indentation. The file already holds the hunk when its new side is found and
    - its old side lies inside it (lines added at the hunk's start or end), or
    - its old side is nowhere, or
    - (a numbered hunk that `adds` a line other than a blank one) it sits exactly at the hunk's
      line numbers: a patch sent again lands there exactly, so it is recognised where it went,
      not applied a second time to a repeat of its context elsewhere, however far. (A new side
      of context and blank lines alone says nothing: it is found anywhere.)
    Such a new side anywhere else may be a look-alike that already has the change, or this
    hunk applied before: the old side is applied only where its place is settled as `_settle`
    says, the new side counting as one more match (an unnumbered hunk has no numbers to settle
    it by), else the hunk is "elsewhere". Without an old side, only a new side at the insertion
    point counts.
    """
    keyed: dict[_Key, list[str]] = {}
    found = _find(file_lines, old, hint, _norm, keyed)
    # (the new side's indentation is the file's wherever the old side's was)
    keys: tuple[_Key, ...] = (_norm,) if found else (_norm, str.strip)
    if old and not found:
        found = _find(file_lines, old, hint, str.strip, keyed)
    present = _find_new(file_lines, old, new, hint, keys, keyed) if new and file_lines else []
    present = [pos for pos in present if numbered or cursor is None or pos >= cursor]
    inside = [pos for pos in present
              if any(pos <= at <= pos + len(new) - len(old) for at in found)]
    if inside:
        return "applied", inside[:1]
    rival = bool(present and old and (adds or not found))  # (the new side, apart from the old)
    if rival and (not found or numbered and hint in present):
        return "applied", [hint] if found else present[:1]
    settled = sorted(_settle(found, hint, numbered, cursor))
    contest = sorted(settled + present[:1], key=lambda at: abs(at - hint))
    if rival and len(settled) == 1 and (
            not numbered or _settle(contest, hint, numbered, cursor) != settled):
        return "elsewhere", [settled[0], present[0]]
    if not settled:
        return "absent", []
    return ("apply" if len(settled) == 1 else "ambiguous"), settled


def _as_sent(index: int, applied: list[tuple[int, int, int]]) -> int:
    """The 1-based line number, in the file as the model saw it, of the line at `index` once the
    hunks `applied` so far (each: position, lines removed, lines added) are in."""
    for pos, removed, added in reversed(applied):
        if index >= pos + added:
            index -= added - removed
        elif index > pos:
            index = pos
    return index + 1


def _ambiguity(found: list[int], path: str, label: str, number: Callable[[int], int]) -> str:
    lines = [str(number(pos)) for pos in found]
    listed = ", ".join(lines[:-1]) + " and " + lines[-1]
    return (f"{label} of {path}: its context matches {len(found)} places (lines {listed}) and "
            "its line numbers do not say which. Send the hunk with correct line numbers or "
            "with more context lines, so that it matches one place.")


def _elsewhere(found: list[int], path: str, label: str, number: Callable[[int], int]) -> str:
    old, new = map(number, found)
    return (f"{label} of {path}: it fits at line {old}, but its new lines are already at line "
            f"{new}: it may have been applied there already. Send it with correct line numbers "
            "(or with more context lines) so that it says which.")


def _divergence(file_lines: list[str], needle: list[str], path: str, label: str,
                hint: int, number: Callable[[int], int]) -> str:
    """Say where the expected lines stop matching the file, and what exists that is closest,
    looking near the hunk's own line numbers first (repeated code elsewhere is not it)."""
    best_pos, best_len = 0, -1
    for pos in sorted(range(len(file_lines)), key=lambda pos: abs(pos - hint)):
        length = 0
        while (length < len(needle) and pos + length < len(file_lines)
               and _norm(file_lines[pos + length]) == _norm(needle[length])):
            length += 1
        if length > best_len:
            best_pos, best_len = pos, length
    best_len = max(best_len, 0)
    missing = needle[best_len] if best_len < len(needle) else ""
    if best_len > 0:
        where = best_pos + best_len
        actual = _bare(file_lines[where]) if where < len(file_lines) else "<end of file>"
        text = (f"{label} of {path}: its first {best_len} line(s) match the file at line "
                f"{number(best_pos)}, but hunk line {best_len + 1} expects {missing!r} where the "
                f"file has {actual!r} (line {number(where)}).")
        hint = where
    else:
        text = (f"{label} of {path}: its first context/removed line {missing!r} "
                f"does not occur in the file.")
    close = _closest(file_lines, _norm(missing), hint)
    if close:
        text += " Closest existing lines: " + "; ".join(
            f"line {number(index)}: {line!r}" for line, index in close)
    return text


def _closest(file_lines: list[str], wanted: str, hint: int) -> list[tuple[str, int]]:
    """Up to 3 (line, index) like `wanted`: from the hunk's neighbourhood if any are there, else
    from the whole file; a line that occurs several times is named where it is nearest `hint`."""
    low = max(hint - _NEIGHBOURHOOD, 0)
    for start, stop in ((low, hint + _NEIGHBOURHOOD), (0, len(file_lines))):
        nearest: dict[str, int] = {}
        for index in range(start, min(stop, len(file_lines))):
            key = _norm(file_lines[index])
            if key not in nearest or abs(index - hint) < abs(nearest[key] - hint):
                nearest[key] = index
        close = difflib.get_close_matches(wanted, list(nearest), n=3, cutoff=0.5)
        if close:
            return [(line, nearest[line]) for line in close]
    return []


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip(" \t"))]


def _unit(indents: list[str]) -> str | None:
    """One level of indentation among `indents`: a tab, or the spaces they are multiples of."""
    used = [indent for indent in indents if indent]
    if used and all(set(indent) == {"\t"} for indent in used):
        return "\t"
    if used and all(set(indent) == {" "} for indent in used):
        return " " * math.gcd(*map(len, used))
    return None


def _reindent(hunk_side: list[str], file_side: list[str]) -> Callable[[str], str]:
    """How the hunk's added lines must be indented to fit the file, learnt from the context and
    removed lines placed on the file's: unchanged unless their indentation differed (placement
    tolerated it), else an indentation seen there maps as it did, and any other level of the
    hunk's unit becomes that level of the file's, shifted by as many levels as the seen ones
    were (a hunk written one level too shallow stays one level too shallow nowhere)."""
    pairs = {_indent(h): _indent(f) for h, f in zip(hunk_side, file_side, strict=True)
             if h.strip()}
    if all(h == f for h, f in pairs.items()):
        return lambda line: line
    ours, theirs = _unit(list(pairs)), _unit(list(pairs.values()))
    shifts = {len(f) // len(theirs) - len(h) // len(ours) for h, f in pairs.items()
              } if ours and theirs else set()
    shift = shifts.pop() if len(shifts) == 1 else None

    def fit(line: str) -> str:
        indent = _indent(line)
        if indent in pairs:
            return pairs[indent] + line[len(indent):]
        levels = len(indent) // len(ours) if ours else 0
        if shift is not None and theirs and indent == ours * levels and levels + shift >= 0:
            return theirs * (levels + shift) + line[len(indent):]
        return line
    return fit


def _apply_hunks(path: str, content: str, hunks: list[_Hunk]) -> tuple[str, list[str]]:
    """Place and apply every hunk of one file; returns new content and already-applied labels."""
    file_lines = _split(content)
    eol = "\r\n" if file_lines and file_lines[0].endswith("\r\n") else "\n"
    already: list[str] = []
    errors: list[str] = []
    delta = 0
    cursor: int | None = None  # where the previous hunk ended
    applied: list[tuple[int, int, int]] = []  # (position, removed, added) of each hunk placed
    for number, hunk in enumerate(hunks, 1):
        label = f"hunk {number} ({hunk.header})"
        old = [line[1:] for line in hunk.lines if line[0] in " -"]
        new = [line[1:] for line in hunk.lines if line[0] in " +"]
        numbered = hunk.old_start is not None
        if old:
            hint = hunk.old_start - 1 + delta if numbered else cursor or 0
        else:
            hint = hunk.old_start + delta if numbered else len(file_lines)
        adds = any(line[0] == "+" and line[1:].strip() for line in hunk.lines)
        verdict, found = _place(file_lines, old, new, hint, numbered, cursor, adds)
        if verdict == "applied":
            already.append(f"{path} {label}")
            # (the file holds its effect: what follows sits where the new side numbers it)
            delta += len(new) - len(old)
            cursor = found[0] + len(new)
            continue
        if verdict != "apply":
            number = partial(_as_sent, applied=applied)
            errors.append(_ambiguity(found, path, label, number) if verdict == "ambiguous"
                          else _elsewhere(found, path, label, number) if verdict == "elsewhere"
                          else _divergence(file_lines, old, path, label, hint, number))
            continue
        pos = found[0]
        fit = _reindent(old, [_bare(line) for line in file_lines[pos:pos + len(old)]])
        replacement: list[str] = []
        at = pos
        for kind, text in ((line[0], line[1:]) for line in hunk.lines):
            if kind == " ":
                replacement.append(file_lines[at])
            elif kind == "+":
                replacement.append(fit(text) + eol)
            at += kind != "+"
        if hunk.no_eol_new and replacement and at >= len(file_lines):
            replacement[-1] = replacement[-1].rstrip("\r\n")
        file_lines[pos:at] = replacement
        delta += len(replacement) - (at - pos)
        cursor = pos + len(replacement)
        applied.append((pos, at - pos, len(replacement)))
    if errors:
        raise PatchError("\n".join(errors))
    for index in range(len(file_lines) - 1):
        if not file_lines[index].endswith("\n"):
            file_lines[index] += eol
    return "".join(file_lines), already


def check_path(root: Path, rel: str) -> str:
    """Refuse paths outside the sandbox (absolute, `..`, via a symlink), inside `.git/`, or
    holding a control character (a NUL cannot even be passed to the OS)."""
    control = _CONTROL.search(rel)
    if control:
        raise PatchError(f"refused: {rel!r} contains a control character "
                         f"({control.group(0)!r}); file names here are printable text")
    if not rel or rel.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", rel) or "\\" in rel:
        raise PatchError(f"refused: {rel!r} is an absolute or non-POSIX path; use paths "
                         "relative to the repository root")
    parts = PurePosixPath(rel).parts
    if ".." in parts:
        raise PatchError(f"refused: {rel!r} climbs out of the repository with '..'")
    if ".git" in parts:
        raise PatchError(f"refused: {rel!r} is inside .git/")
    real_root = root.resolve()
    if not (real_root / rel).resolve().is_relative_to(real_root):
        raise PatchError(f"refused: {rel!r} leads outside the repository through a symlink")
    return str(PurePosixPath(*parts))


def _check_target(root: Path, rel: str) -> None:
    """Refuse to change what is not a regular file of its own: a symbolic link, or a path
    through one (writing through it would change the file it points to, which git does not see
    as changed: the link would be committed as it was), a directory, or a path under a file.
    A link is refused, not followed: the model learns the real path, and no reply reaches one
    file by two names."""
    parts = PurePosixPath(rel).parts
    for depth in range(1, len(parts) + 1):
        here, name = root.joinpath(*parts[:depth]), "/".join(parts[:depth])
        if here.is_symlink():
            via = (f"{rel!r} is a symbolic link" if depth == len(parts)
                   else f"{rel!r} leads through {name!r}, a symbolic link")
            real = (root / rel).resolve()
            advice = (f"; patch {real.relative_to(root.resolve()).as_posix()!r} itself"
                      if real.is_relative_to(root.resolve()) else "")
            raise PatchError(f"refused: {via} (to {os.readlink(here)!r}){advice}")
        if depth < len(parts) and here.exists() and not here.is_dir():
            raise PatchError(f"refused: {rel!r} cannot be created: {name!r} is a file")
    if (root / rel).is_dir():
        kind = "a submodule (a repository of its own)" if (root / rel / ".git").exists() \
            else "a directory"
        raise PatchError(f"refused: {rel!r} is {kind}; a patch changes files")


def _hunks_of(patched_file, numbered: list[bool]) -> list[_Hunk]:
    hunks = []
    for hunk, has_numbers in zip(patched_file, numbered, strict=True):
        lines: list[str] = []
        no_eol_old = no_eol_new = False
        for line in hunk:
            if line.line_type == "\\":
                previous = lines[-1][0] if lines else " "
                no_eol_old |= previous in " -"
                no_eol_new |= previous in " +"
                continue
            lines.append(line.line_type + line.value.rstrip("\n"))
        header = f"@@ -{hunk.source_start},{hunk.source_length} +{hunk.target_start}," \
                 f"{hunk.target_length} @@"
        start = hunk.source_start if has_numbers else None
        hunks.append(_Hunk(start, lines, header, no_eol_old, no_eol_new))
    return hunks


def _read(root: Path, rel: str) -> str | None:
    path = root / rel
    if not path.is_file():
        return None
    return path.read_bytes().decode("utf-8", "surrogateescape")


def _mode(root: Path, rel: str) -> str | None:
    path = root / rel
    if not path.is_file():
        return None
    return EXECUTABLE if path.stat().st_mode & 0o111 else REGULAR


class _Plan:
    """The edits of one reply so far, keyed by path; a path renamed away reads as absent."""

    def __init__(self, root: Path, modes: dict[str, str]) -> None:
        self.root = root
        self.modes = modes  # git's own, where the patch sets a mode (else the worktree's)
        self.edits: dict[str, FileEdit] = {}

    def renamed_away(self, rel: str) -> bool:
        return any(edit.renamed_from == rel for edit in self.edits.values())

    def edit(self, rel: str) -> FileEdit:
        if self.renamed_away(rel):
            raise PatchError(f"{rel}: this reply renames it away and then changes it again; "
                             "send one diff per file")
        if rel not in self.edits:
            content = _read(self.root, rel)
            mode = (self.modes.get(rel) or _mode(self.root, rel)) if content is not None else None
            self.edits[rel] = FileEdit(rel, content, content, mode_before=mode, mode_after=mode)
        return self.edits[rel]

    def rename(self, source: str, rel: str) -> FileEdit:
        """The edit of `rel` that takes over `source` (already renamed: `rel`'s own edit)."""
        origin = self.edit(source)
        target = self.edits[rel].after if rel in self.edits else _read(self.root, rel)
        if origin.after is None and target is not None:
            if not origin.changed:
                del self.edits[source]
            edit = self.edit(rel)
            edit.already_applied.append(f"{source} -> {rel} (already renamed)")
            return edit
        if origin.after is None:
            raise PatchError(f"{source}: the patch renames it to {rel} but it does not exist")
        if target is not None:
            raise PatchError(f"{rel}: the patch renames {source} to {rel}, which exists; "
                             "rename onto a free path, or send a diff against both files")
        del self.edits[source]
        self.edits[rel] = FileEdit(rel, origin.before, origin.after, origin.already_applied,
                                   origin.mode_before, origin.mode_after, renamed_from=source)
        return self.edits[rel]


def _check_mode(rel: str, mode: str | None) -> None:
    if mode not in (None, REGULAR, EXECUTABLE):
        kind = _UNSUPPORTED_MODES.get(mode or "", "not a file mode git knows")
        raise PatchError(f"{rel}: mode {mode} ({kind}) is not supported; codeloop writes "
                         f"regular files ({REGULAR}) and executables ({EXECUTABLE})")


def _plan_header(plans: _Plan, header: _FileHeader, hunks: list[_Hunk]) -> None:
    source, target = header.source, header.target
    if header.unsupported:
        raise PatchError(f"{target if target != DEV_NULL else source}: {header.unsupported}")
    rel = check_path(plans.root, target if target != DEV_NULL else source)
    _check_target(plans.root, rel)
    _check_mode(rel, header.new_mode)
    if header.rename and source not in (DEV_NULL, rel):
        origin = check_path(plans.root, source)
        _check_target(plans.root, origin)
        edit = plans.rename(origin, rel)
    else:
        if source not in (DEV_NULL, target):
            check_path(plans.root, source)
        edit = plans.edit(rel)
    _plan_file(edit, rel, edit.after, source, target, hunks)
    if edit.after is None:
        edit.mode_after = None
    elif header.new_mode or edit.mode_after is None:
        edit.mode_after = header.new_mode or REGULAR


def _parse(diff_text: str) -> list[tuple[PatchedFile, _FileHeader]]:
    """One diff's files, each with its decoded header; raises PatchError when malformed."""
    repaired, headers = repair(diff_text)
    try:
        patch = PatchSet(repaired)
    except UnidiffParseError as exc:
        raise PatchError(f"malformed diff: {exc}") from None
    if not patch or len(patch) != len(headers) or any(
            len(patched) != len(header.numbered)
            or not patched and not (header.git or header.target == DEV_NULL)
            for patched, header in zip(patch, headers, strict=True)):
        raise PatchError("malformed diff: every file needs a '--- a/FILE' / '+++ b/FILE' "
                         "header followed by at least one '@@' hunk")
    if any(len(hunk) == 0 for patched in patch for hunk in patched):
        raise PatchError("malformed diff: a hunk has no lines (every line of a hunk starts "
                         "with ' ', '-' or '+')")
    return list(zip(patch, headers, strict=True))


def _index_modes(root: Path, headers: list[_FileHeader]) -> dict[str, str]:
    """The modes git's index holds for the existing files whose mode a header sets: git's
    mode, not the x bit on disk (which git ignores under core.fileMode=false). One git call,
    and none for the usual patch that sets no mode."""
    names = []
    for header in headers:
        if header.new_mode and header.source != DEV_NULL:
            with contextlib.suppress(PatchError):  # (a bad path is refused when planned)
                names.append(check_path(root, header.source))
    return index_modes(root, names) if names else {}


def plan(root: Path, diffs: list[str]) -> list[FileEdit]:
    """Compute every file edit of a reply's diffs, all or nothing; raises PatchError."""
    errors: list[str] = []
    files: list[tuple[PatchedFile, _FileHeader]] = []
    for diff_text in diffs:
        try:
            files.extend(_parse(diff_text))
        except PatchError as exc:
            errors.append(str(exc))
    plans = _Plan(root, _index_modes(root, [header for _, header in files]))
    for patched, header in files:
        try:
            _plan_header(plans, header, _hunks_of(patched, header.numbered))
        except PatchError as exc:
            errors.append(str(exc))
    if errors:
        raise PatchError("\n".join(errors))
    return [edit for edit in plans.edits.values() if edit.changed or edit.already_applied]


def _plan_file(edit: FileEdit, rel: str, current: str | None, source: str, target: str,
               hunks: list[_Hunk]) -> None:
    if target == DEV_NULL:
        if current is None:
            edit.already_applied.append(f"{rel} (already deleted)")
            return
        edit.after = None
        return
    if current is None and source != DEV_NULL and (not hunks or any(
            line[0] in " -" for hunk in hunks for line in hunk.lines)):
        raise PatchError(f"{rel}: the file does not exist; to create it use '--- /dev/null'")
    if source == DEV_NULL and current is not None:
        wanted = "".join(line[1:] + "\n" for h in hunks for line in h.lines if line[0] == "+")
        if _norm(current) == _norm(wanted) or _lines_of(current) == _lines_of(wanted):
            edit.already_applied.append(f"{rel} (already created)")
            return
        raise PatchError(f"{rel}: the patch creates this file but it already exists; "
                         "send a diff against its current content instead")
    if not hunks and current is not None:
        return  # (a rename or a mode change alone leaves the content as it is, byte for byte)
    after, already = _apply_hunks(rel, current or "", hunks)
    edit.after = after
    edit.already_applied.extend(already)


def diffstat(edits: list[FileEdit]) -> str:
    """`N files changed, +A -D` with one line per file, like `git diff --stat` but shorter."""
    rows: list[str] = []
    total_add = total_del = 0
    for edit in edits:
        if not edit.changed:
            continue
        added = removed = 0
        before, after = _lines_of(edit.before or ""), _lines_of(edit.after or "")
        for line in list(difflib.unified_diff(before, after, n=0, lineterm=""))[2:]:
            added += line.startswith("+")
            removed += line.startswith("-")
        total_add, total_del = total_add + added, total_del + removed
        name = f"{edit.renamed_from} => {edit.path}" if edit.renamed_from else edit.path
        mode = (f" (mode {edit.mode_before} => {edit.mode_after})"
                if None not in (edit.mode_before, edit.mode_after)
                and edit.mode_before != edit.mode_after else "")
        rows.append(f"{name} | +{added} -{removed}{mode}")
    rows.append(f"{len(rows)} file(s) changed, +{total_add} -{total_del}")
    return "\n".join(rows)
