"""Turning the unified diffs real models write into exact file edits, or a precise refusal.

Owns the lenient repair of diff text (wrong or missing hunk numbers and counts, missing `a/` `b/`
prefixes, blank context lines without their space), parsing with `unidiff`, placing each hunk by
its content (tolerating CRLF/LF and trailing-whitespace differences), path safety, and rendering
the result as one canonical diff for `git apply`. It reads the sandbox but never writes to it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

DEV_NULL = "/dev/null"
_HUNK_HEADER = re.compile(r"^@@(?:\s+-(\d+)(?:,\d+)?\s+\+(\d+)(?:,\d+)?)?\s*(?:@@+(.*))?$")
_GIT_HEADER = re.compile(r"^diff --git ")
_IGNORED_HEADERS = ("index ", "similarity index", "rename from", "rename to", "old mode",
                    "new mode", "Binary files", "diff --git ", "new file mode", "deleted file mode")


class PatchError(Exception):
    """The patch cannot be applied; the message says precisely why, for the model to read."""


@dataclass
class FileEdit:
    """The whole effect of a patch on one file: content before and after (None = absent)."""

    path: str
    before: str | None
    after: str | None
    already_applied: list[str] = field(default_factory=list)


@dataclass
class _Hunk:
    old_start: int | None
    lines: list[str]  # each starts with ' ', '-', '+'; '\\' markers already folded away
    header: str
    no_eol_old: bool = False
    no_eol_new: bool = False


def _strip_prefix(raw: str) -> str:
    path = raw.split("\t")[0].strip()
    if path.startswith('"') and path.endswith('"'):
        path = path[1:-1]
    if path == DEV_NULL:
        return path
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


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


def repair(diff_text: str) -> tuple[str, list[bool]]:
    """Rewrite a model's diff as a strictly valid unified diff: exact counts, real headers.

    Returns the text and, per hunk, whether its header gave line numbers (a placement hint).
    A line inside a hunk without its leading marker (often a blank line) is a context line whose
    space was dropped, as long as more hunk lines follow it.
    """
    lines = diff_text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    numbered: list[bool] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_file_header(lines, i):
            source, target = _strip_prefix(line[4:]), _strip_prefix(lines[i + 1][4:])
            out.append(f"--- {source if source == DEV_NULL else 'a/' + source}")
            out.append(f"+++ {target if target == DEV_NULL else 'b/' + target}")
            i += 2
            continue
        match = _HUNK_HEADER.match(line)
        if not match:
            if line.startswith(_IGNORED_HEADERS):
                out.append(line)
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
        numbered.append(match.group(1) is not None)
        old_start = int(match.group(1) or 0)
        new_start = int(match.group(2) or 0)
        out.append(f"@@ -{old_start},{old} +{new_start},{new} @@{match.group(3) or ''}")
        out.extend(body)
    return "\n".join(out) + "\n", numbered


def _norm(line: str) -> str:
    return line.rstrip()


def _find(haystack: list[str], needle: list[str], hint: int, key) -> list[int]:
    """All positions where `needle` occurs in `haystack` under `key`, nearest to `hint` first."""
    if not needle:
        return [min(max(hint, 0), len(haystack))]
    wanted = [key(n) for n in needle]
    keyed = [key(h) for h in haystack]
    first = wanted[0]
    found = [
        pos for pos in range(len(keyed) - len(wanted) + 1)
        if keyed[pos] == first and keyed[pos:pos + len(wanted)] == wanted
    ]
    return sorted(found, key=lambda pos: abs(pos - hint))


def _locate(file_lines: list[str], needle: list[str], hint: int) -> int | None:
    """Where the hunk's old side sits: exact up to trailing whitespace, else unique by content."""
    found = _find(file_lines, needle, hint, _norm)
    if found:
        return found[0]
    loose = _find(file_lines, needle, hint, str.strip)
    return loose[0] if len(loose) == 1 else None


def _divergence(file_lines: list[str], needle: list[str], path: str, label: str) -> str:
    """Say where the expected lines stop matching the file, and what exists that is closest."""
    best_pos, best_len = 0, -1
    for pos in range(len(file_lines)):
        length = 0
        while (length < len(needle) and pos + length < len(file_lines)
               and _norm(file_lines[pos + length]) == _norm(needle[length])):
            length += 1
        if length > best_len:
            best_pos, best_len = pos, length
    best_len = max(best_len, 0)
    missing = needle[best_len].rstrip("\n") if best_len < len(needle) else ""
    if best_len > 0:
        where = best_pos + best_len
        actual = file_lines[where].rstrip("\n") if where < len(file_lines) else "<end of file>"
        text = (f"{label} of {path}: its first {best_len} line(s) match the file at line "
                f"{best_pos + 1}, but hunk line {best_len + 1} expects {missing!r} where the file "
                f"has {actual!r} (line {where + 1}).")
    else:
        text = (f"{label} of {path}: its first context/removed line {missing!r} "
                f"does not occur in the file.")
    candidates = {_norm(line): n for n, line in reversed(list(enumerate(file_lines, 1)))}
    close = difflib.get_close_matches(_norm(missing), list(candidates), n=3, cutoff=0.5)
    if close:
        text += " Closest existing lines: " + "; ".join(
            f"line {candidates[c]}: {c!r}" for c in close)
    return text


def _apply_hunks(path: str, content: str, hunks: list[_Hunk]) -> tuple[str, list[str]]:
    """Place and apply every hunk of one file; returns new content and already-applied labels."""
    file_lines = content.splitlines(keepends=True)
    eol = "\r\n" if file_lines and file_lines[0].endswith("\r\n") else "\n"
    already: list[str] = []
    errors: list[str] = []
    cursor = delta = 0
    for number, hunk in enumerate(hunks, 1):
        label = f"hunk {number} ({hunk.header})"
        old = [line[1:] for line in hunk.lines if line[0] in " -"]
        new = [line[1:] for line in hunk.lines if line[0] in " +"]
        numbered = hunk.old_start is not None
        if old:
            hint = hunk.old_start - 1 + delta if numbered else cursor
            pos = _locate(file_lines, old, hint)
        else:
            hint = hunk.old_start + delta if numbered else len(file_lines)
            pos = min(max(hint, 0), len(file_lines))
        only_adds = not any(line[0] == "-" for line in hunk.lines)
        if new and file_lines and (
            (pos is None and _locate(file_lines, new, hint) is not None)
            or (only_adds and pos is not None and _find(
                file_lines[pos:pos + len(new)], new, 0, _norm) == [0])
        ):
            already.append(f"{path} {label}")
            continue
        if pos is None:
            errors.append(_divergence(file_lines, old, path, label))
            continue
        replacement: list[str] = []
        at = pos
        for kind, text in ((line[0], line[1:]) for line in hunk.lines):
            if kind == " ":
                replacement.append(file_lines[at])
            elif kind == "+":
                replacement.append(text + eol)
            at += kind != "+"
        if hunk.no_eol_new and replacement and at >= len(file_lines):
            replacement[-1] = replacement[-1].rstrip("\r\n")
        file_lines[pos:at] = replacement
        delta += len(replacement) - (at - pos)
        cursor = pos + len(replacement)
    if errors:
        raise PatchError("\n".join(errors))
    for index in range(len(file_lines) - 1):
        if not file_lines[index].endswith("\n"):
            file_lines[index] += eol
    return "".join(file_lines), already


def check_path(root: Path, rel: str) -> str:
    """Refuse paths outside the sandbox (absolute, `..`, via a symlink) or inside `.git/`."""
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


def _hunks_of(patched_file, numbered: Iterator[bool]) -> list[_Hunk]:
    hunks = []
    for hunk in patched_file:
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
        start = hunk.source_start if next(numbered, False) else None
        hunks.append(_Hunk(start, lines, header, no_eol_old, no_eol_new))
    return hunks


def _read(root: Path, rel: str) -> str | None:
    path = root / rel
    if not path.is_file():
        return None
    return path.read_bytes().decode("utf-8", "surrogateescape")


def plan(root: Path, diffs: list[str]) -> list[FileEdit]:
    """Compute every file edit of a reply's diffs, all or nothing; raises PatchError."""
    edits: dict[str, FileEdit] = {}
    errors: list[str] = []
    for diff_text in diffs:
        repaired, numbered_list = repair(diff_text)
        numbered = iter(numbered_list)
        try:
            patch = PatchSet(repaired)
        except UnidiffParseError as exc:
            errors.append(f"malformed diff: {exc}")
            continue
        if not patch or any(not patched and not patched.is_removed_file for patched in patch):
            errors.append("malformed diff: every file needs a '--- a/FILE' / '+++ b/FILE' "
                          "header followed by at least one '@@' hunk")
            continue
        if any(len(hunk) == 0 for patched in patch for hunk in patched):
            errors.append("malformed diff: a hunk has no lines (every line of a hunk starts "
                          "with ' ', '-' or '+')")
            continue
        for patched in patch:
            source = _strip_prefix(patched.source_file)
            target = _strip_prefix(patched.target_file)
            try:
                rel = check_path(root, target if target != DEV_NULL else source)
                if source not in (DEV_NULL, target):
                    check_path(root, source)
                if rel not in edits:
                    content = _read(root, rel)
                    edits[rel] = FileEdit(rel, content, content)
                edit = edits[rel]
                _plan_file(edit, rel, edit.after, source, target, _hunks_of(patched, numbered))
            except PatchError as exc:
                errors.append(str(exc))
    if errors:
        raise PatchError("\n".join(errors))
    return [edit for edit in edits.values() if edit.before != edit.after or edit.already_applied]


def _plan_file(edit: FileEdit, rel: str, current: str | None, source: str, target: str,
               hunks: list[_Hunk]) -> None:
    if target == DEV_NULL:
        if current is None:
            edit.already_applied.append(f"{rel} (already deleted)")
            return
        edit.after = None
        return
    if current is None and source != DEV_NULL and any(
            line[0] in " -" for hunk in hunks for line in hunk.lines):
        raise PatchError(f"{rel}: the file does not exist; to create it use '--- /dev/null'")
    if source == DEV_NULL and current is not None:
        wanted = "".join(line[1:] + "\n" for h in hunks for line in h.lines if line[0] == "+")
        if _norm(current) == _norm(wanted) or current.splitlines() == wanted.splitlines():
            edit.already_applied.append(f"{rel} (already created)")
            return
        raise PatchError(f"{rel}: the patch creates this file but it already exists; "
                         "send a diff against its current content instead")
    after, already = _apply_hunks(rel, current or "", hunks)
    edit.after = after
    edit.already_applied.extend(already)


def _diff_lines(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return out


def render(edits: list[FileEdit]) -> str:
    """One canonical git-style diff for the edits, for `git apply`."""
    parts: list[str] = []
    for edit in edits:
        if edit.before == edit.after:
            continue
        before = (edit.before or "").splitlines(keepends=True)
        after = (edit.after or "").splitlines(keepends=True)
        parts.append(f"diff --git a/{edit.path} b/{edit.path}\n")
        if edit.before is None:
            parts.append("new file mode 100644\n")
        elif edit.after is None:
            parts.append("deleted file mode 100644\n")
        body = difflib.unified_diff(
            before, after,
            fromfile=DEV_NULL if edit.before is None else f"a/{edit.path}",
            tofile=DEV_NULL if edit.after is None else f"b/{edit.path}",
            n=3,
        )
        for line in body:
            if line.startswith(("---", "+++")):
                parts.append(line.rstrip("\n") + "\n")
            else:
                parts.extend(_diff_lines([line]))
    return "".join(parts)


def diffstat(edits: list[FileEdit]) -> str:
    """`N files changed, +A -D` with one line per file, like `git diff --stat` but shorter."""
    rows: list[str] = []
    total_add = total_del = 0
    for edit in edits:
        if edit.before == edit.after:
            continue
        added = removed = 0
        before, after = (edit.before or "").splitlines(), (edit.after or "").splitlines()
        for line in list(difflib.unified_diff(before, after, n=0, lineterm=""))[2:]:
            added += line.startswith("+")
            removed += line.startswith("-")
        total_add, total_del = total_add + added, total_del + removed
        rows.append(f"{edit.path} | +{added} -{removed}")
    rows.append(f"{len(rows)} file(s) changed, +{total_add} -{total_del}")
    return "\n".join(rows)
