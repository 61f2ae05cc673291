"""The patch engine against the diffs real models write.

Each test builds a real git repo, plans the model's diff with `plan`, commits the edits through
`Sandbox.commit_patch`, and checks the exact bytes left on disk.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from codeloop.edits.errors import PatchError
from codeloop.edits.patch import FileEdit, diffstat, plan
from codeloop.workspace.git import index_modes
from codeloop.workspace.sandbox import Sandbox

TEN = "".join(f"line {n}\n" for n in range(1, 11)).encode()
GREET = b'def greet(name):\n    message = "hello " + name\n    print(message)\n    return message\n'
FUNCS = b"def one():\n    return 0\n\ndef two():\n    return 0\n\ndef three():\n    return 0\n"

MakeRepo = Callable[[dict[str, bytes]], Path]
Apply = Callable[[dict[str, bytes], list[str]], tuple[Path, list[FileEdit]]]


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def make_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeRepo:
    """A committed git repo at tmp_path/repo holding exactly `files` (path -> bytes)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def make(files: dict[str, bytes]) -> Path:
        root = tmp_path / "repo"
        root.mkdir()
        _git(root, "init", "-q")
        _git(root, "config", "core.autocrlf", "false")
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        _git(root, "add", "-A")
        _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
        return root

    return make


@pytest.fixture
def apply(make_repo: MakeRepo) -> Iterator[Apply]:
    """plan -> Sandbox.commit_patch; returns the worktree (proven clean) and edits."""
    sandboxes: list[Sandbox] = []

    def run(files: dict[str, bytes], diffs: list[str]) -> tuple[Path, list[FileEdit]]:
        sandbox = Sandbox.create(make_repo(files), "s1")
        sandboxes.append(sandbox)
        edits = plan(sandbox.path, diffs, partial(index_modes, sandbox.path))
        sandbox.commit_patch(edits, "apply the model's diff")
        assert _git(sandbox.path, "status", "--porcelain") == ""
        return sandbox.path, edits

    yield run
    for sandbox in sandboxes:
        sandbox.close()


def _read(root: Path, rel: str) -> bytes:
    return (root / rel).read_bytes()


@pytest.mark.parametrize("header", ["@@ -40,3 +40,3 @@", "@@ -5,3 +5,3 @@", "@@ -1,3 +2,3 @@"])
def test_patch_with_wrong_line_numbers_applies(apply: Apply, header: str) -> None:
    diff = f"--- a/f.txt\n+++ b/f.txt\n{header}\n line 2\n-line 3\n+LINE THREE\n line 4\n"
    root, _ = apply({"f.txt": TEN}, [diff])
    assert _read(root, "f.txt") == TEN.replace(b"line 3\n", b"LINE THREE\n")


@pytest.mark.parametrize("header", ["@@ @@", "@@"])
def test_bare_hunk_header_without_numbers_applies(apply: Apply, header: str) -> None:
    diff = f"--- a/f.txt\n+++ b/f.txt\n{header}\n line 6\n-line 7\n+LINE SEVEN\n line 8\n"
    root, _ = apply({"f.txt": TEN}, [diff])
    assert _read(root, "f.txt") == TEN.replace(b"line 7\n", b"LINE SEVEN\n")


def test_bare_headers_place_each_hunk_after_the_previous_one(apply: Apply) -> None:
    # hunk 2's lines occur both before and after hunk 1; hunks come in file order, so it is
    # the later occurrence
    text = b"x = 0\npass\npass\ny = 0\npass\npass\nz = 0\n"
    diff = "--- a/o.py\n+++ b/o.py\n@@ @@\n-y = 0\n+y = 1\n@@ @@\n pass\n-pass\n+stop\n"
    root, _ = apply({"o.py": text}, [diff])
    assert _read(root, "o.py") == b"x = 0\npass\npass\ny = 1\npass\nstop\nz = 0\n"


@pytest.mark.parametrize("counts", ["-2,7 +2,7", "-2,1 +2,1"])
def test_wrong_line_counts_in_header_are_recounted(apply: Apply, counts: str) -> None:
    diff = (f"--- a/f.txt\n+++ b/f.txt\n@@ {counts} @@\n line 2\n-line 3\n+LINE THREE\n line 4\n"
            "@@ -8,2 +8,2 @@\n-line 8\n+LINE EIGHT\n line 9\n")
    root, _ = apply({"f.txt": TEN}, [diff])
    expected = TEN.replace(b"line 3\n", b"LINE THREE\n").replace(b"line 8\n", b"LINE EIGHT\n")
    assert _read(root, "f.txt") == expected


def test_paths_without_a_b_prefixes_apply(apply: Apply) -> None:
    diff = "--- pkg/mod.py\n+++ pkg/mod.py\n@@ -1,4 +1,4 @@\n def greet(name):\n" \
           '-    message = "hello " + name\n+    message = "hi " + name\n     print(message)\n'
    root, edits = apply({"pkg/mod.py": GREET}, [diff])
    assert [edit.path for edit in edits] == ["pkg/mod.py"]
    assert _read(root, "pkg/mod.py") == GREET.replace(b"hello ", b"hi ")


def test_crlf_file_with_lf_patch_keeps_crlf(apply: Apply) -> None:
    text = b"alpha\r\nbeta\r\ngamma\r\n"
    diff = "--- a/w.txt\n+++ b/w.txt\n@@ -1,3 +1,4 @@\n alpha\n-beta\n+BETA\n+delta\n gamma\n"
    root, _ = apply({"w.txt": text}, [diff])
    assert _read(root, "w.txt") == b"alpha\r\nBETA\r\ndelta\r\ngamma\r\n"


def test_lf_file_with_crlf_patch_keeps_lf(apply: Apply) -> None:
    diff = "--- a/u.txt\r\n+++ b/u.txt\r\n@@ -1,3 +1,4 @@\r\n alpha\r\n-beta\r\n+BETA\r\n" \
           "+delta\r\n gamma\r\n"
    root, _ = apply({"u.txt": b"alpha\nbeta\ngamma\n"}, [diff])
    assert _read(root, "u.txt") == b"alpha\nBETA\ndelta\ngamma\n"


def test_file_trailing_whitespace_absent_from_patch_context_applies(apply: Apply) -> None:
    text = b"alpha  \nbeta\ngamma \t\n"
    diff = "--- a/s.txt\n+++ b/s.txt\n@@ -1,3 +1,3 @@\n alpha\n-beta\n+BETA\n gamma\n"
    root, _ = apply({"s.txt": text}, [diff])
    assert _read(root, "s.txt") == b"alpha  \nBETA\ngamma \t\n"


def test_patch_trailing_whitespace_absent_from_file_applies(apply: Apply) -> None:
    diff = "--- a/s.txt\n+++ b/s.txt\n@@ -1,3 +1,3 @@\n alpha   \n-beta  \n+BETA\n gamma \n"
    root, _ = apply({"s.txt": b"alpha\nbeta\ngamma\n"}, [diff])
    assert _read(root, "s.txt") == b"alpha\nBETA\ngamma\n"


def test_blank_context_line_without_its_space_applies(apply: Apply) -> None:
    text = b"def a():\n    return 1\n\n\ndef b():\n    return 2\n"
    diff = "--- a/m.py\n+++ b/m.py\n@@ -1,6 +1,6 @@\n def a():\n     return 1\n\n\n" \
           " def b():\n-    return 2\n+    return 3\n"
    root, _ = apply({"m.py": text}, [diff])
    assert _read(root, "m.py") == b"def a():\n    return 1\n\n\ndef b():\n    return 3\n"


def test_new_files_from_dev_null_are_created_in_new_directories(apply: Apply) -> None:
    diff = ("--- /dev/null\n+++ b/top.py\n@@ -0,0 +1 @@\n+TOP = 1\n"
            "--- /dev/null\n+++ b/pkg/sub/new.py\n@@ -0,0 +1,2 @@\n+x = 1\n+y = 2\n")
    root, edits = apply({"f.txt": TEN}, [diff])
    assert [(edit.path, edit.before) for edit in edits] == [("top.py", None),
                                                            ("pkg/sub/new.py", None)]
    assert _read(root, "top.py") == b"TOP = 1\n"
    assert _read(root, "pkg/sub/new.py") == b"x = 1\ny = 2\n"
    assert _git(root, "ls-files").split() == ["f.txt", "pkg/sub/new.py", "top.py"]


def test_diff_to_dev_null_deletes_the_file(apply: Apply) -> None:
    diff = "--- a/old.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x = 1\n-y = 2\n"
    root, edits = apply({"old.py": b"x = 1\ny = 2\n", "keep.py": b"k\n"}, [diff])
    assert [(edit.path, edit.after) for edit in edits] == [("old.py", None)]
    assert not (root / "old.py").exists()
    assert _git(root, "ls-files").split() == ["keep.py"]


def test_several_files_in_one_diff_block_apply(apply: Apply) -> None:
    diff = ("--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n-a1\n+A1\n a2\n"
            "--- a/b.txt\n+++ b/b.txt\n@@ -1,2 +1,2 @@\n b1\n-b2\n+B2\n")
    root, edits = apply({"a.txt": b"a1\na2\n", "b.txt": b"b1\nb2\n"}, [diff])
    assert (_read(root, "a.txt"), _read(root, "b.txt")) == (b"A1\na2\n", b"b1\nB2\n")
    assert diffstat(edits) == "a.txt | +1 -1\nb.txt | +1 -1\n2 file(s) changed, +2 -2"


def test_blank_line_between_files_in_one_diff_block_is_not_context(apply: Apply) -> None:
    diff = ("--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n-a1\n+A1\n a2\n\n"
            "--- a/b.txt\n+++ b/b.txt\n@@ -1,2 +1,2 @@\n b1\n-b2\n+B2\n")
    root, _ = apply({"a.txt": b"a1\na2\n", "b.txt": b"b1\nb2\n"}, [diff])
    assert (_read(root, "a.txt"), _read(root, "b.txt")) == (b"A1\na2\n", b"b1\nB2\n")


def test_several_diff_blocks_in_one_call_apply_in_order(apply: Apply) -> None:
    first = "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n line 1\n-line 2\n+LINE TWO\n line 3\n"
    second = ("--- a/f.txt\n+++ b/f.txt\n@@ -8,3 +8,3 @@\n line 8\n-line 9\n+LINE NINE\n"
              " line 10\n--- /dev/null\n+++ b/g.txt\n@@ -0,0 +1 @@\n+g\n")
    root, edits = apply({"f.txt": TEN}, [first, second])
    assert [edit.path for edit in edits] == ["f.txt", "g.txt"]
    expected = TEN.replace(b"line 2\n", b"LINE TWO\n").replace(b"line 9\n", b"LINE NINE\n")
    assert (_read(root, "f.txt"), _read(root, "g.txt")) == (expected, b"g\n")


def test_second_hunk_numbers_ignoring_first_hunks_added_lines_apply(apply: Apply) -> None:
    # hunk 2 has no context and `return 0` occurs three times: only its numbers (old line 5,
    # written as +5 too, ignoring the two lines hunk 1 adds) say it is the one in two()
    diff = ("--- a/f.py\n+++ b/f.py\n@@ -1,2 +1,4 @@\n def one():\n+    '''First.'''\n"
            "+    print(1)\n     return 0\n@@ -5,1 +5,1 @@\n-    return 0\n+    return 2\n")
    root, _ = apply({"f.py": FUNCS}, [diff])
    assert _read(root, "f.py") == (b"def one():\n    '''First.'''\n    print(1)\n    return 0\n"
                                   b"\ndef two():\n    return 2\n\ndef three():\n    return 0\n")


def test_unplaceable_hunk_error_names_file_hunk_divergence_and_closest_lines(
        make_repo: MakeRepo) -> None:
    root = make_repo({"greet.py": GREET})
    diff = "--- a/greet.py\n+++ b/greet.py\n@@ -1,3 +1,3 @@\n def greet(name):\n" \
           '-    message = "hi " + name\n+    message = "hey " + name\n     print(message)\n'
    with pytest.raises(PatchError) as caught:
        plan(root, [diff], partial(index_modes, root))
    message = str(caught.value)
    assert message.startswith("hunk 1 (@@ -1,3 +1,3 @@) of greet.py: ")
    assert "first 1 line(s) match the file at line 1" in message
    assert "hunk line 2 expects '    message = \"hi \" + name'" in message
    assert "where the file has '    message = \"hello \" + name' (line 2)" in message
    assert "Closest existing lines: line 2: '    message = \"hello \" + name'" in message
    assert _read(root, "greet.py") == GREET


def test_one_failing_file_means_nothing_is_written(make_repo: MakeRepo) -> None:
    root = make_repo({"a.txt": b"a1\na2\n", "b.txt": b"b1\nb2\n"})
    diff = ("--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n-a1\n+A1\n a2\n"
            "--- a/b.txt\n+++ b/b.txt\n@@ -1,2 +1,2 @@\n b1\n-nope\n+B2\n")
    with pytest.raises(PatchError, match=r"hunk 1 \(@@ -1,2 \+1,2 @@\) of b\.txt") as caught:
        plan(root, [diff], partial(index_modes, root))
    assert "a.txt" not in str(caught.value)
    assert (_read(root, "a.txt"), _read(root, "b.txt")) == (b"a1\na2\n", b"b1\nb2\n")
    assert _git(root, "status", "--porcelain") == ""


def test_already_applied_hunk_is_reported_not_an_error(apply: Apply) -> None:
    text = TEN.replace(b"line 3\n", b"LINE THREE\n")
    diff = ("--- a/f.txt\n+++ b/f.txt\n@@ -2,3 +2,3 @@\n line 2\n-line 3\n+LINE THREE\n line 4\n"
            "@@ -7,3 +7,3 @@\n line 7\n-line 8\n+LINE EIGHT\n line 9\n")
    root, edits = apply({"f.txt": text}, [diff])
    assert [edit.already_applied for edit in edits] == [["f.txt hunk 1 (@@ -2,3 +2,3 @@)"]]
    assert _read(root, "f.txt") == text.replace(b"line 8\n", b"LINE EIGHT\n")


def test_fully_applied_patch_yields_no_changed_edits(make_repo: MakeRepo) -> None:
    text = TEN.replace(b"line 3\n", b"LINE THREE\n")
    root = make_repo({"f.txt": text, "new.txt": b"n\n"})
    diff = ("--- a/f.txt\n+++ b/f.txt\n@@ -2,3 +2,3 @@\n line 2\n-line 3\n+LINE THREE\n line 4\n"
            "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+n\n")
    edits = plan(root, [diff], partial(index_modes, root))
    assert [edit for edit in edits if edit.before != edit.after] == []
    assert [edit.already_applied for edit in edits] == [
        ["f.txt hunk 1 (@@ -2,3 +2,3 @@)"], ["new.txt (already created)"]]
    assert diffstat(edits) == "0 file(s) changed, +0 -0"


def test_already_applied_append_at_end_of_file_is_not_duplicated(make_repo: MakeRepo) -> None:
    # the hunk has no trailing context: its old side ends the file, which is no longer true
    root = make_repo({"f.txt": b"a\nb\nc\nd\n"})
    edits = plan(root, ["--- a/f.txt\n+++ b/f.txt\n@@ -2,2 +2,3 @@\n b\n c\n+d\n"],
                 partial(index_modes, root))
    assert [(edit.after, edit.already_applied) for edit in edits] == [
        ("a\nb\nc\nd\n", ["f.txt hunk 1 (@@ -2,2 +2,3 @@)"])]


@pytest.mark.parametrize("target", ["/etc/passwd", "b/../outside.txt", "b/link/evil.txt",
                                    "b/.git/hooks/pre-commit", "b/sub/../../outside.txt"])
def test_hostile_path_is_refused_and_nothing_is_written(
        make_repo: MakeRepo, tmp_path: Path, target: str) -> None:
    root = make_repo({"f.txt": b"f\n"})
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    passwd = Path("/etc/passwd").read_bytes()
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(PatchError, match="^refused: "):
        plan(root, [f"--- /dev/null\n+++ {target}\n@@ -0,0 +1 @@\n+pwned\n"],
             partial(index_modes, root))
    with pytest.raises(PatchError, match="^refused: "):
        plan(root, [f"--- {target}\n+++ {target}\n@@ -1 +1 @@\n-root\n+pwned\n"],
             partial(index_modes, root))
    assert sorted(tmp_path.rglob("*")) == before
    assert not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "elsewhere" / "evil.txt").exists()
    assert not (root / ".git" / "hooks" / "pre-commit").exists()
    assert Path("/etc/passwd").read_bytes() == passwd


@pytest.mark.parametrize(("marker", "expected"), [
    ("\\ No newline at end of file\n", b"first\nsecond\nLAST"),
    ("", b"first\nsecond\nLAST\n"),  # unmarked, the new last line ends with a newline
])
def test_last_line_without_newline_at_eof_is_patched(
        apply: Apply, marker: str, expected: bytes) -> None:
    diff = f"--- a/n.txt\n+++ b/n.txt\n@@ -1,3 +1,3 @@\n first\n second\n-last\n{marker}" \
           f"+LAST\n{marker}"
    root, _ = apply({"n.txt": b"first\nsecond\nlast"}, [diff])
    assert _read(root, "n.txt") == expected


def test_line_appended_after_last_line_without_newline(apply: Apply) -> None:
    diff = "--- a/n.txt\n+++ b/n.txt\n@@ -2,2 +2,3 @@\n second\n last\n+after\n"
    root, _ = apply({"n.txt": b"first\nsecond\nlast"}, [diff])
    assert _read(root, "n.txt") == b"first\nsecond\nlast\nafter\n"


def test_text_without_diff_headers_is_refused_saying_what_codeloop_reads(make_repo: MakeRepo
                                                                         ) -> None:
    root = make_repo({"greet.py": GREET})
    with pytest.raises(PatchError, match="no edit codeloop can read.*'Sure! Change.*unified "
                                         "diff.*V4A patch.*SEARCH/REPLACE"):
        plan(root, ["Sure! Change `hello` to `hi` in greet.py and it will work.\n"],
             partial(index_modes, root))
    assert _read(root, "greet.py") == GREET


def test_diff_for_missing_file_not_from_dev_null_is_refused(make_repo: MakeRepo) -> None:
    root = make_repo({"greet.py": GREET})
    diff = "--- a/missing.py\n+++ b/missing.py\n@@ -1,2 +1,2 @@\n-x = 1\n+x = 2\n y = 3\n"
    with pytest.raises(PatchError, match=r"^missing\.py: the file does not exist; .*/dev/null"):
        plan(root, [diff], partial(index_modes, root))
    assert not (root / "missing.py").exists()


def test_a_context_line_without_its_leading_space_is_still_context(apply: Apply) -> None:
    # the model dropped the space before "line 3" in the middle of the hunk
    diff = "--- a/f.txt\n+++ b/f.txt\n@@ -1,5 +1,5 @@\n line 1\n-line 2\n+LINE 2\nline 3\n" \
           "-line 4\n+LINE 4\n line 5\n"
    root, _ = apply({"f.txt": TEN}, [diff])
    assert _read(root, "f.txt") == TEN.replace(b"line 2\n", b"LINE 2\n").replace(
        b"line 4\n", b"LINE 4\n")


def test_a_marker_less_line_that_is_not_in_the_file_rejects_the_whole_hunk(
        make_repo: MakeRepo) -> None:
    root = make_repo({"f.txt": TEN})
    diff = "--- a/f.txt\n+++ b/f.txt\n@@ -1,5 +1,5 @@\n line 1\n-line 2\n+LINE 2\nnot here\n" \
           "-line 4\n+LINE 4\n"
    with pytest.raises(PatchError, match="hunk 1"):
        plan(root, [diff], partial(index_modes, root))
    assert _read(root, "f.txt") == TEN


def test_a_context_free_addition_is_not_mistaken_for_already_applied(apply: Apply) -> None:
    diff = "--- a/f.txt\n+++ b/f.txt\n@@ -0,0 +1,1 @@\n+line 5\n"
    root, edits = apply({"f.txt": TEN}, [diff])
    assert edits[0].already_applied == []
    assert _read(root, "f.txt") == b"line 5\n" + TEN
