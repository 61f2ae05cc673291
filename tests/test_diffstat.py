"""The diff stat counts lines as git does: `diffstat` of a reply's edits beside `git diff
--numstat` of the same edits committed to a real repository, for the shapes where a line count
goes wrong (a last line without its newline, CRLF, a rename, a creation and a deletion, a moved
block).
"""

from __future__ import annotations

import random
import re
from functools import partial
from pathlib import Path

import pytest

from codeloop.edits.patch import FileEdit, diffstat, line_counts, plan
from codeloop.workspace.git import index_modes
from tests.conftest import git

THREE = b"a = 1\nb = 2\nc = 3\n"
CRLF = b"a = 1\r\nb = 2\r\nc = 3\r\n"
CHANGE_B = "@@ -1,3 +1,3 @@\n a = 1\n-b = 2\n+b = 20\n c = 3\n"

CASES = {
    "a line added after a last line without its newline": (
        {"m.py": b"a\nb"},
        "--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,3 @@\n a\n-b\n\\ No newline at end of file\n+b\n+c\n"),
    "the last line changed, and without its newline now": (
        {"m.py": b"x\ny\n"},
        "--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n x\n-y\n+z\n\\ No newline at end of file\n"),
    "a CRLF file, a line changed and lines added": (
        {"m.py": CRLF},
        "--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,5 @@\n a = 1\n-b = 2\n+b = 20\n+b2 = 3\n c = 3\n"
        "+d = 4\n"),
    "a rename with a change": (
        {"m.py": THREE},
        "diff --git a/m.py b/n.py\nsimilarity index 80%\nrename from m.py\nrename to n.py\n"
        "--- a/m.py\n+++ b/n.py\n" + CHANGE_B),
    "a creation and a deletion": (
        {"old.py": b"x = 1\ny = 2\n", "keep.py": b"k\n"},
        "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1,3 @@\n+p = 9\n+q = 8\n+r = 7\n"
        "--- a/old.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x = 1\n-y = 2\n"),
    "a block moved below another": (
        {"m.py": b"a\nb\nc\nd\ne\n"},
        "--- a/m.py\n+++ b/m.py\n@@ -1,5 +1,5 @@\n-a\n-b\n-c\n d\n e\n+a\n+b\n+c\n"),
    "a line changed among repeated lines": (
        {"m.py": b"x\nx\ny\nx\nx\ny\nx\n"},
        "--- a/m.py\n+++ b/m.py\n@@ -4,3 +4,3 @@\n x\n-x\n+z\n y\n"),
}


def _repo(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "core.autocrlf", "false")  # (the bytes as written are what git counts)
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


def _write(root: Path, edits: list[FileEdit]) -> None:
    for edit in edits:
        if edit.renamed_from:
            (root / edit.renamed_from).unlink()
        if edit.after is None:
            (root / edit.path).unlink()
        else:
            (root / edit.path).write_bytes(edit.after.encode("utf-8", "surrogateescape"))


def _numstat(root: Path) -> dict[str, tuple[int, int]]:
    git(root, "add", "-A")
    rows = git(root, "diff", "--cached", "--numstat", "-M", "HEAD").splitlines()
    return {path: (int(added), int(removed))
            for added, removed, path in (row.split("\t") for row in rows)}


def _ours(stat: str) -> dict[str, tuple[int, int]]:
    rows = [re.fullmatch(r"(.*) \| \+(\d+) -(\d+)", row) for row in stat.splitlines()[:-1]]
    return {row[1]: (int(row[2]), int(row[3])) for row in rows if row}


@pytest.mark.parametrize("case", CASES)
def test_the_diff_stat_counts_lines_as_git_numstat_does(tmp_path: Path, case: str) -> None:
    files, diff = CASES[case]
    root = _repo(tmp_path / "repo", files)
    edits = plan(root, [diff], partial(index_modes, root))
    stat = diffstat(edits)
    _write(root, edits)
    theirs = _numstat(root)
    assert _ours(stat) == theirs
    added, removed = map(sum, zip(*theirs.values(), strict=True))
    assert stat.splitlines()[-1] == f"{len(theirs)} file(s) changed, +{added} -{removed}"


def _fewest_edits(before: list[str], after: list[str]) -> tuple[int, int]:
    """Lines added and removed by a longest common subsequence (the textbook table)."""
    table = [[0] * (len(after) + 1) for _ in range(len(before) + 1)]
    for i, old in enumerate(before):
        for j, new in enumerate(after):
            table[i + 1][j + 1] = (table[i][j] + 1 if old == new
                                   else max(table[i][j + 1], table[i + 1][j]))
    kept = table[-1][-1]
    return len(after) - kept, len(before) - kept


def test_line_counts_are_the_fewest_lines_added_and_removed() -> None:
    draw = random.Random(14)
    for _ in range(300):
        before = [draw.choice("abcx") + "\n" for _ in range(draw.randint(0, 14))]
        after = [draw.choice("abcy") + "\n" for _ in range(draw.randint(0, 14))]
        if draw.random() < 0.5:  # (an edit in the middle of shared lines, as models send)
            after = before[:3] + after + before[3:]
        assert line_counts("".join(before), "".join(after)) == _fewest_edits(before, after)
