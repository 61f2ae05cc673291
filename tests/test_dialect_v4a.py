"""The V4A patch envelope (Codex's `apply_patch`) planned against real files.

Each test commits real files to a git repo in a tmp dir, plans a V4A patch with `plan` (git's
modes from the repo's own index) and checks the exact text each file would hold, or the
refusal the model would read.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from codeloop.edits.dialects import parse_edit
from codeloop.edits.errors import PatchError
from codeloop.edits.patch import FileEdit, plan
from codeloop.workspace.git import index_modes
from tests.conftest import committed_repo, tree_state

GREET = 'def greet(name):\n    message = "hello " + name\n    print(message)\n    return message\n'
SHAPES = ("class Square:\n    def area(self):\n        return 0\n\n"
          "class Circle:\n    def area(self):\n        return 0\n")


def _plan(root: Path, *patches: str) -> dict[str, FileEdit]:
    return {edit.path: edit for edit in plan(root, list(patches), partial(index_modes, root))}


def _repo(tmp_path: Path, files: dict[str, str]) -> Path:
    return committed_repo(tmp_path / "repo", files)


def test_update_with_one_hunk_applies(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"greet.py": GREET})
    patch = ("*** Begin Patch\n*** Update File: greet.py\n@@ def greet(name):\n"
             '-    message = "hello " + name\n+    message = "hi " + name\n'
             "     print(message)\n*** End Patch\n")
    edits = _plan(root, patch)
    assert edits["greet.py"].after == GREET.replace('"hello "', '"hi "')


def test_update_with_several_hunks_in_two_files_applies(tmp_path: Path) -> None:
    ten = "".join(f"line {n}\n" for n in range(1, 11))
    root = _repo(tmp_path, {"f.txt": ten, "greet.py": GREET})
    patch = ("*** Begin Patch\n*** Update File: f.txt\n@@\n line 1\n-line 2\n+LINE 2\n line 3\n"
             "@@\n line 8\n-line 9\n+LINE 9\n line 10\n"
             "*** Update File: greet.py\n@@\n-    return message\n+    return message.upper()\n"
             "*** End Patch")
    edits = _plan(root, patch)
    assert edits["f.txt"].after == ten.replace("line 2\n", "LINE 2\n").replace("line 9", "LINE 9")
    assert edits["greet.py"].after.endswith("    return message.upper()\n")


def test_stacked_anchors_pick_the_method_of_the_right_class(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"shapes.py": SHAPES})
    body = "-        return 0\n+        return 3.14 * self.r ** 2\n"
    anchored = ("*** Begin Patch\n*** Update File: shapes.py\n@@ class Circle:\n"
                f"@@     def area(self):\n{body}*** End Patch\n")
    edits = _plan(root, anchored)
    assert edits["shapes.py"].after == ("class Square:\n    def area(self):\n        return 0\n\n"
                                        "class Circle:\n    def area(self):\n"
                                        "        return 3.14 * self.r ** 2\n")
    with pytest.raises(PatchError, match="matches 2 places"):  # (without them: which one?)
        _plan(root, f"*** Begin Patch\n*** Update File: shapes.py\n@@\n{body}*** End Patch\n")


def test_parse_reads_anchors_end_of_file_add_delete_and_move() -> None:
    files = parse_edit("*** Begin Patch\n*** Add File: new.py\n+x = 1\n"
                       "*** Delete File: old.py\n*** Update File: a.py\n*** Move to: b.py\n"
                       "@@ class A:\n@@ def f(self):\n-    pass\n+    return 1\n*** End of File\n"
                       "*** End Patch\n")
    (add, add_hunks), (delete, delete_hunks), (move, move_hunks) = files
    assert (add.source, add.target, [h.lines for h in add_hunks]) == ("/dev/null", "new.py",
                                                                      [["+x = 1"]])
    assert (delete.source, delete.target, delete_hunks) == ("old.py", "/dev/null", [])
    assert (move.source, move.target, move.rename) == ("a.py", "b.py", True)
    hunk, = move_hunks
    assert (hunk.old_start, hunk.anchors, hunk.at_end) == (None, ("class A:", "def f(self):"),
                                                           True)


def test_end_of_file_hunk_lands_at_the_end(tmp_path: Path) -> None:
    text = "x = 1\ny = 2\n\nx = 1\ny = 2\n"
    root = _repo(tmp_path, {"vars.py": text})
    body = " x = 1\n-y = 2\n+y = 3\n"
    edits = _plan(root, f"*** Begin Patch\n*** Update File: vars.py\n@@\n{body}"
                        "*** End of File\n*** End Patch\n")
    assert edits["vars.py"].after == "x = 1\ny = 2\n\nx = 1\ny = 3\n"
    with pytest.raises(PatchError, match="matches 2 places"):
        _plan(root, f"*** Begin Patch\n*** Update File: vars.py\n@@\n{body}*** End Patch\n")


def test_add_file_creates_it(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"greet.py": GREET})
    edits = _plan(root, "*** Begin Patch\n*** Add File: pkg/util.py\n+def two():\n+\n"
                        "+    return 2\n*** End Patch\n")
    assert (edits["pkg/util.py"].before, edits["pkg/util.py"].after) == (
        None, "def two():\n\n    return 2\n")


def test_delete_file_deletes_it(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"greet.py": GREET, "keep.py": "x = 1\n"})
    edits = _plan(root, "*** Begin Patch\n*** Delete File: greet.py\n*** End Patch\n")
    assert list(edits) == ["greet.py"]
    assert (edits["greet.py"].before, edits["greet.py"].after) == (GREET, None)


def test_move_to_renames_and_changes_the_file(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"greet.py": GREET})
    edits = _plan(root, "*** Begin Patch\n*** Update File: greet.py\n*** Move to: pkg/hello.py\n"
                        "@@\n-    print(message)\n+    print(message, flush=True)\n"
                        "*** End Patch\n")
    edit, = edits.values()
    assert (edit.path, edit.renamed_from) == ("pkg/hello.py", "greet.py")
    assert edit.after == GREET.replace("print(message)", "print(message, flush=True)")


def test_patch_without_envelope_lines_applies(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"greet.py": GREET})
    edits = _plan(root, "\n*** Update File: greet.py\n@@\n-    return message\n+    return 1\n")
    assert edits["greet.py"].after.endswith("    return 1\n")


def test_patch_in_a_heredoc_applies(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"greet.py": GREET})
    edits = _plan(root, "apply_patch <<'EOF'\n*** Begin Patch\n*** Update File: greet.py\n@@\n"
                        "-    return message\n+    return 1\n*** End Patch\nEOF\n")
    assert edits["greet.py"].after.endswith("    return 1\n")


def test_patch_cut_short_is_refused_by_line(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"greet.py": GREET})
    with pytest.raises(PatchError, match=r"V4A patch, line 4: expected '\*\*\* End Patch'"):
        _plan(root, "*** Begin Patch\n*** Update File: greet.py\n@@\n-    return message\n")


def test_malformed_hunk_line_is_refused_by_line_and_what_was_expected(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"greet.py": GREET})
    with pytest.raises(PatchError) as refused:
        _plan(root, "*** Begin Patch\n*** Update File: greet.py\n@@\n-    return message\n"
                    "return 1\n*** End Patch\n")
    assert str(refused.value) == (
        "malformed V4A patch, line 5: expected a hunk line starting with ' ', '-' or '+', an "
        "'@@' line, '*** End of File' or the next file header; found 'return 1'")


def test_crlf_file_keeps_its_line_ends(tmp_path: Path) -> None:
    crlf = GREET.replace("\n", "\r\n")
    root = _repo(tmp_path, {"greet.py": crlf})
    patch = ("*** Begin Patch\r\n*** Update File: greet.py\r\n@@ def greet(name):\r\n"
             "-    print(message)\r\n+    print(message.title())\r\n*** End Patch\r\n")
    edits = _plan(root, patch)
    assert edits["greet.py"].after == crlf.replace("print(message)", "print(message.title())")


def test_patch_sent_twice_is_recognised_as_applied(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"shapes.py": SHAPES})
    patch = ("*** Begin Patch\n*** Update File: shapes.py\n@@ class Circle:\n@@ def area(self):\n"
             "-        return 0\n+        return 1\n*** End Patch\n")
    after = _plan(root, patch)["shapes.py"].after
    (root / "shapes.py").write_text(after)
    edit = _plan(root, patch)["shapes.py"]
    assert (edit.after, edit.already_applied) == (after, ["shapes.py hunk 1 (@@ class Circle: "
                                                          "@@ def area(self):)"])


def test_hunk_that_does_not_match_names_its_anchor_and_first_mismatching_line(
        tmp_path: Path) -> None:
    root = _repo(tmp_path, {"shapes.py": SHAPES})
    with pytest.raises(PatchError) as refused:
        _plan(root, "*** Begin Patch\n*** Update File: shapes.py\n@@ class Circle:\n"
                    "     def area(self):\n-        return 1\n+        return 2\n*** End Patch\n")
    assert str(refused.value) == (
        "hunk 1 (@@ class Circle:) of shapes.py: its first 1 line(s) match the file at line 6, "
        "but hunk line 2 expects '        return 1' where the file has '        return 0' "
        "(line 7). Closest existing lines: line 7: '        return 0'")


def test_missing_anchor_is_named_with_the_closest_lines(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"shapes.py": SHAPES})
    with pytest.raises(PatchError) as refused:
        _plan(root, "*** Begin Patch\n*** Update File: shapes.py\n@@ class Circles:\n"
                    "-        return 0\n+        return 2\n*** End Patch\n")
    assert str(refused.value) == (
        "hunk 1 (@@ class Circles:) of shapes.py: its @@ anchor 'class Circles:' does not occur "
        "in the file. Closest existing lines: line 5: 'class Circle:'; line 1: 'class Square:'")


@pytest.mark.parametrize("path", ["../outside.py", "/tmp/outside.py", ".git/config"])
def test_path_outside_the_sandbox_is_refused_with_nothing_written(tmp_path: Path,
                                                                  path: str) -> None:
    root = _repo(tmp_path, {"greet.py": GREET})
    before = tree_state(root)
    for section in (f"*** Add File: {path}\n+x = 1\n", f"*** Delete File: {path}\n",
                    f"*** Update File: greet.py\n*** Move to: {path}\n"):
        with pytest.raises(PatchError, match="^refused: "):
            _plan(root, f"*** Begin Patch\n*** Update File: greet.py\n@@\n-    return message\n"
                        f"+    return 1\n{section}*** End Patch\n")
    assert tree_state(root) == before
    assert not (tmp_path / "outside.py").exists()
