"""Placing hunks by their content and applying them to a file's text, or saying why not.

Owns finding where a hunk goes, tolerant of wrong line numbers, CRLF/LF, trailing whitespace
and indentation; V4A's `@@ anchor` lines (searched after each in turn) and `*** End of File`;
recognising a hunk already applied; refusing one that fits several places, and explaining a hunk
that fits nowhere by where it diverges and the closest existing lines. Pure: text in, text out;
it never touches a file.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import partial
from operator import methodcaller

from codeloop.edits.diff import Hunk
from codeloop.edits.errors import PatchError
from codeloop.edits.reindent import reindent

_NEIGHBOURHOOD = 40  # lines either side of a hunk searched first for what it meant


# (C-level callables, not Python functions: every line of a file is keyed with them, and
# measured on benchmarks/edits.py the Python wrappers were 10% of a plan)
_norm: Callable[[str], str] = str.rstrip  # a line up to trailing whitespace (and its EOL)
_bare: Callable[[str], str] = methodcaller("rstrip", "\r\n")  # without its "\n" or "\r\n"


def lines_of(content: str) -> list[str]:
    """`content`'s lines without their ends of line (CRLF or LF: the same lines)."""
    return list(map(_bare, split_lines(content)))


def split_lines(content: str) -> list[str]:
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
    wanted = list(map(key, needle))
    if key not in keyed:
        keyed[key] = list(map(key, haystack))
    lines, found, pos = keyed[key], [], -1
    while True:  # (list.index: each occurrence of the first line, found at C speed)
        try:
            pos = lines.index(wanted[0], pos + 1, len(lines) - len(wanted) + 1)
        except ValueError:
            return found if len(found) < 2 else sorted(found, key=lambda at: abs(at - hint))
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
           cursor: int | None, adds: bool, keyed: dict[_Key, list[str]]
           ) -> tuple[str, list[int]]:
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
    point counts. `keyed` holds `file_lines` under each key used so far, kept by the caller
    across the hunks of a file.
    """
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
    if rival and len(settled) == 1 and (not numbered or _settle(
            sorted(settled + present[:1], key=lambda at: abs(at - hint)), hint, numbered,
            cursor) != settled):
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


def _ambiguity(found: list[int], path: str, label: str, number: Callable[[int], int],
               hunk: Hunk) -> str:
    lines = [str(number(pos)) for pos in found]
    listed = ", ".join(lines[:-1]) + " and " + lines[-1]
    if _searched(hunk):
        return (f"{label} of {path}: its SEARCH lines match {len(found)} places (lines "
                f"{listed}). Send the block with more SEARCH lines, so that it matches one place.")
    if hunk.anchors or hunk.header == "@@":  # a V4A hunk: anchors say where, not numbers
        return (f"{label} of {path}: its context matches {len(found)} places (lines {listed}). "
                "Send the hunk with an @@ anchor line (the def or class line above the change) "
                "or with more context lines, so that it matches one place.")
    return (f"{label} of {path}: its context matches {len(found)} places (lines {listed}) and "
            "its line numbers do not say which. Send the hunk with correct line numbers or "
            "with more context lines, so that it matches one place.")


def _searched(hunk: Hunk) -> bool:
    """Whether the hunk is a SEARCH/REPLACE block (refusals then speak of SEARCH lines)."""
    return hunk.header.startswith("SEARCH block")


def _elsewhere(found: list[int], path: str, label: str, number: Callable[[int], int]) -> str:
    old, new = map(number, found)
    return (f"{label} of {path}: it fits at line {old}, but its new lines are already at line "
            f"{new}: it may have been applied there already. Send it with correct line numbers "
            "(or with more context lines) so that it says which.")


def _divergence(file_lines: list[str], needle: list[str], path: str, label: str,
                hint: int, number: Callable[[int], int], scope: str = "the file",
                term: str = "hunk") -> str:
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
                f"{number(best_pos)}, but {term} line {best_len + 1} expects {missing!r} where the "
                f"file has {actual!r} (line {number(where)}).")
        hint = where
    else:
        first = "SEARCH line" if term == "SEARCH" else "context/removed line"
        text = f"{label} of {path}: its first {first} {missing!r} does not occur in {scope}."
    close = _closest(file_lines, _norm(missing), hint)
    if close:
        text += " Closest existing lines: " + "; ".join(
            f"line {number(index)}: {line!r}" for line, index in close)
    return text


def _absent(file_lines: list[str], old: list[str], path: str, label: str, hint: int,
            number: Callable[[int], int], hunk: Hunk, floor: int) -> str:
    """Why a hunk fits nowhere; for an anchored one, told within the region its last anchor
    points at (what precedes the anchor is not what it meant)."""
    if not hunk.anchors:
        return _divergence(file_lines, old, path, label, hint, number,
                           term="SEARCH" if _searched(hunk) else "hunk")
    scope = f"the file after its @@ anchor {hunk.anchors[-1]!r} (line {number(floor - 1)})"
    return _divergence(file_lines[floor:], old, path, label, 0,
                       lambda index: number(index + floor), scope)


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


def _anchor_line(file_lines: list[str], anchor: str, start: int,
                 keyed: dict[_Key, list[str]]) -> int | None:
    """The first line from `start` on that is `anchor`: exactly, else ignoring trailing
    whitespace, else stripped (as Codex matches them). `keyed` as for `_place`."""
    for key in (_bare, _norm, str.strip):
        if key not in keyed:
            keyed[key] = list(map(key, file_lines))
        try:
            return keyed[key].index(key(anchor), start)
        except ValueError:
            continue
    return None


def _after_anchors(file_lines: list[str], anchors: tuple[str, ...], start: int,
                   number: Callable[[int], int], keyed: dict[_Key, list[str]]
                   ) -> tuple[int, str]:
    """Where a hunk's region starts: just after the line matching each anchor in turn, the first
    searched after the hunk before (then from the top: hunks sent out of order); or -1 and why
    not, with the closest existing lines. Without anchors: the whole file."""
    if not anchors:
        return 0, ""
    at = start
    for depth, anchor in enumerate(anchors):
        found = _anchor_line(file_lines, anchor, at, keyed)
        if found is None and depth == 0 and at:
            found = _anchor_line(file_lines, anchor, 0, keyed)
        if found is None:
            after = f" after line {number(at - 1)} ({anchors[depth - 1]!r})" if depth else ""
            text = f"its @@ anchor {anchor!r} does not occur in the file{after}."
            close = _closest(file_lines, _norm(anchor), at)
            if close:
                text += " Closest existing lines: " + "; ".join(
                    f"line {number(index)}: {line!r}" for line, index in close)
            return -1, text
        at = found + 1
    return at, ""


def _at_end(file_lines: list[str], old: list[str], new: list[str]) -> tuple[str, list[int]]:
    """A `*** End of File` hunk where its old side ends the file ("apply"), or its new side
    does ("applied"); ("", []) when neither does. A hunk that only adds lines is applied when
    they already end the file."""
    sides = (("applied", new), ("apply", old)) if not old else (("apply", old), ("applied", new))
    for key in (_norm, str.strip):
        for verdict, side in sides:
            pos = len(file_lines) - len(side)
            if side and pos >= 0 and list(map(key, file_lines[pos:])) == list(map(key, side)):
                return verdict, [pos]
    return ("apply", [len(file_lines)]) if not old else ("", [])


def _place_v4a(file_lines: list[str], floor: int, hunk: Hunk, old: list[str], new: list[str],
               cursor: int | None, adds: bool, keyed: dict[_Key, list[str]]
               ) -> tuple[str, list[int]]:
    """`_place` for a hunk with anchors or `*** End of File`: only in the region after its
    anchors (from `floor`), where the first fit is the one meant, as the anchor said where to
    look; an End of File hunk at the file's end first, elsewhere only if it does not fit there."""
    if hunk.at_end:
        verdict, found = _at_end(file_lines, old, new)
        if verdict and found[0] >= floor:
            return verdict, found
    start = None if cursor is None else max(cursor - floor, 0)
    region = {key: lines[floor:] for key, lines in keyed.items()} if floor else keyed
    verdict, found = _place(file_lines[floor:], old, new, start or 0, False, start, adds,
                            region)
    found = [pos + floor for pos in found]
    if hunk.anchors and verdict == "ambiguous":
        return "apply", found[:1]
    if hunk.anchors and verdict == "elsewhere":  # (the one nearer the anchor is meant)
        return ("apply", found[:1]) if found[0] < found[1] else ("applied", found[1:])
    return verdict, found


def apply_hunks(path: str, content: str, hunks: list[Hunk]) -> tuple[str, list[str]]:
    """Place and apply every hunk of one file; returns new content and already-applied labels."""
    file_lines = split_lines(content)
    eol = "\r\n" if file_lines and file_lines[0].endswith("\r\n") else "\n"
    already: list[str] = []
    errors: list[str] = []
    delta = 0
    cursor: int | None = None  # where the previous hunk ended
    applied: list[tuple[int, int, int]] = []  # (position, removed, added) of each hunk placed
    keyed: dict[_Key, list[str]] = {}  # file_lines under each key: keyed once, kept in step
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
        number = partial(_as_sent, applied=applied)
        floor, problem = _after_anchors(file_lines, hunk.anchors, cursor or 0, number, keyed)
        if problem:
            errors.append(f"{label} of {path}: {problem}")
            continue
        if hunk.anchors or hunk.at_end:
            verdict, found = _place_v4a(file_lines, floor, hunk, old, new, cursor, adds, keyed)
        else:
            verdict, found = _place(file_lines, old, new, hint, numbered, cursor, adds, keyed)
        if verdict == "applied":
            already.append(f"{path} {label}")
            # (the file holds its effect: what follows sits where the new side numbers it)
            delta += len(new) - len(old)
            cursor = found[0] + len(new)
            continue
        if verdict != "apply":
            errors.append(_ambiguity(found, path, label, number, hunk) if verdict == "ambiguous"
                          else _elsewhere(found, path, label, number) if verdict == "elsewhere"
                          else _absent(file_lines, old, path, label, hint, number, hunk, floor))
            continue
        pos = found[0]
        fit = reindent(old, list(map(_bare, file_lines[pos:pos + len(old)])))
        replacement: list[str] = []
        at = pos
        for line in hunk.lines:
            if line[0] == "+":
                replacement.append(fit(line[1:]) + eol)
                continue
            if line[0] == " ":
                replacement.append(file_lines[at])
            at += 1
        if hunk.no_eol_new and replacement and at >= len(file_lines):
            replacement[-1] = replacement[-1].rstrip("\r\n")
        file_lines[pos:at] = replacement
        for key, lines in keyed.items():
            lines[pos:at] = map(key, replacement)
        delta += len(replacement) - (at - pos)
        cursor = pos + len(replacement)
        applied.append((pos, at - pos, len(replacement)))
    if errors:
        raise PatchError("\n".join(errors))
    text = "".join(file_lines)
    # (each line holds at most one "\n", at its end: counting them says whether a line other
    # than the last lacks it, without a loop in Python)
    if file_lines and text.count("\n") < len(file_lines) - (not file_lines[-1].endswith("\n")):
        for index in range(len(file_lines) - 1):
            if not file_lines[index].endswith("\n"):
                file_lines[index] += eol
        text = "".join(file_lines)
    return text, already
