"""Reading Aider's SEARCH/REPLACE blocks into the edit model: one unnumbered hunk per block.

Owns recognising the dialect (a `<<<<<<< SEARCH` line), finding each block's path (alone on
the line before the block, or before its opening fence), and turning each block into a `Hunk`
named `SEARCH block N`, so that `place` finds it by content and names it in its refusals.
Prose and fences around the blocks are ignored. Pure: it never reads the files it names; an
empty SEARCH section means "create this file", and whether it exists is `patch`'s to say.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from codeloop.edits.diff import DEV_NULL, FileHeader, Hunk
from codeloop.edits.errors import PatchError

# (Aider's own parser accepts 5 to 9 marker characters; models miscount them)
SEARCH_LINE = re.compile(r"^<{5,9} SEARCH>?\s*$")
DIVIDER_LINE = re.compile(r"^={5,9}\s*$")
REPLACE_LINE = re.compile(r"^>{5,9} REPLACE\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass
class _Block:
    number: int  # 1-based, in the order of the text
    path: str
    search: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)


def is_search_replace(text: str) -> bool:
    """Whether `text` holds a SEARCH/REPLACE block (or a broken one: its refusal is precise)."""
    return "<<<<<" in text and any(  # (no SEARCH line without it: most texts told at once)
        SEARCH_LINE.match(line) for line in text.replace("\r\n", "\n").split("\n"))


def path_on(line: str) -> str:
    """The path a line names when it holds a path alone (as Aider's models write it: bare, in
    backticks or bold, as a heading, with a trailing colon), else ""."""
    name = line.strip().lstrip("#").strip().strip("*`'\"").rstrip(":").strip("*`'\"")
    return "" if not name or any(char.isspace() for char in name) else name


def _path_before(lines: list[str], at: int, previous: str) -> str:
    """The path of the block whose SEARCH line is `at`: the line above it, past blank lines and
    its opening fence. Right after another block (several blocks in one fence) it is that
    block's path; "" when there is none."""
    i = at - 1
    while i >= 0 and (not lines[i].strip() or _FENCE.match(lines[i])):
        i -= 1
    if i < 0:
        return ""
    if REPLACE_LINE.match(lines[i]):
        return previous
    return path_on(lines[i])


def _read_blocks(lines: list[str]) -> tuple[list[_Block], list[str]]:
    """Every block of the text, and what is wrong with each malformed one."""
    blocks: list[_Block] = []
    errors: list[str] = []
    previous = ""
    i = 0
    while i < len(lines):
        if not (lines[i].startswith("<") and SEARCH_LINE.match(lines[i])):
            i += 1
            continue
        block = _Block(len(blocks) + 1, _path_before(lines, i, previous))
        name = f"SEARCH/REPLACE block {block.number}" + (f" for {block.path}" if block.path
                                                          else "")
        i += 1
        section = block.search
        while i < len(lines) and not (lines[i][:1] in ("<", ">") and (  # (else neither matches)
                SEARCH_LINE.match(lines[i]) or REPLACE_LINE.match(lines[i]))):
            if section is block.search and DIVIDER_LINE.match(lines[i]):
                section = block.replace
            else:
                section.append(lines[i])
            i += 1
        closed = i < len(lines) and bool(REPLACE_LINE.match(lines[i]))
        if section is block.search:
            errors.append(f"{name}: no '=======' line between its SEARCH and REPLACE lines")
        elif not closed:
            errors.append(f"{name}: no '>>>>>>> REPLACE' line ends it")
        elif not block.path:
            errors.append(f"{name}: no file path; write the path alone on the line before "
                          "'<<<<<<< SEARCH' (or before the block's opening fence)")
        else:
            blocks.append(block)
            previous = block.path
        i += closed
    return blocks, errors


def _hunk(block: _Block) -> Hunk:
    """The block as a hunk: the lines SEARCH and REPLACE share are context, the rest removed and
    added. (All '-' then all '+' would find the same place, but would rewrite unchanged lines
    from the model's copy, losing the file's own trailing whitespace, and would count a block
    that only deletes lines as one that adds them; with context it is the hunk a unified diff of
    the same change holds, and lands byte for byte as that diff would.)"""
    lines = _changed_middle(block.search, block.replace)
    if lines is None:
        lines = []
        matcher = difflib.SequenceMatcher(None, block.search, block.replace, autojunk=False)
        for tag, old_from, old_to, new_from, new_to in matcher.get_opcodes():
            if tag == "equal":
                lines.extend(" " + line for line in block.search[old_from:old_to])
                continue
            lines.extend("-" + line for line in block.search[old_from:old_to])
            lines.extend("+" + line for line in block.replace[new_from:new_to])
    return Hunk(None, lines, f"SEARCH block {block.number}")


def _changed_middle(search: list[str], replace: list[str]) -> list[str] | None:
    """The block's hunk lines without difflib (half of reading 50 blocks, measured on
    benchmarks/edits.py) when the sides are equal, or differ in a middle run on each side none
    of whose lines the other side has (the usual block): difflib's opcodes are then the shared
    start, that run replaced, the shared end, as its longest matches can only be those two.
    None otherwise."""
    if search == replace:
        return [" " + line for line in search]
    start, stop = 0, min(len(search), len(replace))
    while start < stop and search[start] == replace[start]:
        start += 1
    end = 0
    while end < stop - start and search[-1 - end] == replace[-1 - end]:
        end += 1
    old, new = search[start:len(search) - end], replace[start:len(replace) - end]
    if not old or not new or not set(old).isdisjoint(replace) or not set(new).isdisjoint(search):
        return None
    return [*(" " + line for line in search[:start]), *("-" + line for line in old),
            *("+" + line for line in new), *(" " + line for line in search[len(search) - end:])]


def parse(text: str) -> list[tuple[FileHeader, list[Hunk]]]:
    """The text's blocks as file operations: each file's blocks one update, in order; a block
    with an empty SEARCH section one creation. Raises PatchError naming each malformed block."""
    blocks, errors = _read_blocks(text.replace("\r\n", "\n").split("\n"))
    if errors:
        raise PatchError("\n".join(errors))
    files: list[tuple[FileHeader, list[Hunk]]] = []
    updates: dict[str, list[Hunk]] = {}
    for block in blocks:
        if not any(line.strip() for line in block.search):
            files.append((FileHeader(DEV_NULL, block.path),
                          [Hunk(None, ["+" + line for line in block.replace],
                                f"SEARCH block {block.number}")]))
        elif block.path in updates:
            updates[block.path].append(_hunk(block))
        else:
            updates[block.path] = [_hunk(block)]
            files.append((FileHeader(block.path, block.path), updates[block.path]))
    return files
