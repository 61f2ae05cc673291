"""Patches land faithfully on every repository shape: CRLF checkouts, odd and quoted paths,
renames and modes, tab indentation, repeated code.

`plan` runs on real files; commits and `--apply` go through `Sandbox` on real git repos; one
headless session runs against the scripted server on a CRLF checkout.
"""

from __future__ import annotations

import json
import os
import py_compile
import re
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from codeloop.edits.errors import PatchError
from codeloop.edits.patch import FileEdit, diffstat, plan
from codeloop.workspace.errors import SandboxDamaged, SandboxError
from codeloop.workspace.git import index_modes
from codeloop.workspace.sandbox import Sandbox
from tests.conftest import PYTEST_CMD, fix_diff, git, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

THREE = "a = 1\nb = 2\nc = 3\n"
CHANGE_B = "--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,3 @@\n a = 1\n-b = 2\n+b = 20\n c = 3\n"
NEW_FILE = "--- /dev/null\n+++ b/n.py\n@@ -0,0 +1,2 @@\n+x = 1\n+y = 2\n"


def _repo(root: Path, files: dict[str, bytes], attributes: str = "", autocrlf: str = "false",
          safecrlf: str = "false") -> Path:
    """A committed repo whose working tree is what git's own checkout would write."""
    root.mkdir(parents=True)
    git(root, "init", "-q")
    git(root, "config", "core.autocrlf", autocrlf)
    if attributes:
        (root / ".gitattributes").write_text(attributes)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    for rel in files:  # check out again: the user's files carry the checkout's line endings
        (root / rel).unlink()
    git(root, "checkout", "--", ".")
    git(root, "config", "core.safecrlf", safecrlf)
    return root


CRLF_SHAPES = {"autocrlf": {"autocrlf": "true"},
               "autocrlf-safecrlf": {"autocrlf": "true", "safecrlf": "true"},
               "eol-attribute": {"attributes": "*.py text eol=crlf\n"}}


@pytest.fixture
def sandboxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Sandbox]]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made: list[Sandbox] = []
    yield made
    for sandbox in made:
        sandbox.close()


def _sandbox(made: list[Sandbox], repo: Path) -> Sandbox:
    sandbox = Sandbox.create(repo, f"s{len(made)}")
    made.append(sandbox)
    return sandbox


def _commit(sandbox: Sandbox, diffs: list[str]) -> None:
    edits = plan(sandbox.path, diffs, partial(index_modes, sandbox.path))
    sandbox.commit_patch([edit for edit in edits if edit.changed], "turn")
    assert git(sandbox.path, "status", "--porcelain") == ""


# --- point 2: CRLF checkouts -------------------------------------------------------------------

@pytest.mark.parametrize("shape", CRLF_SHAPES)
def test_a_patch_lands_in_a_crlf_checkout_and_files_keep_crlf(
        tmp_path: Path, sandboxes: list[Sandbox], shape: str) -> None:
    repo = _repo(tmp_path / "repo", {"m.py": THREE.encode()}, **CRLF_SHAPES[shape])
    sandbox = _sandbox(sandboxes, repo)
    assert (sandbox.path / "m.py").read_bytes() == b"a = 1\r\nb = 2\r\nc = 3\r\n"
    _commit(sandbox, [CHANGE_B + NEW_FILE])
    # the checkout keeps CRLF (a new file gets it too, as git's checkout would write it) ...
    assert (sandbox.path / "m.py").read_bytes() == b"a = 1\r\nb = 20\r\nc = 3\r\n"
    assert (sandbox.path / "n.py").read_bytes() == b"x = 1\r\ny = 2\r\n"
    # ... while the commit holds what the repo's own rules store
    assert git(sandbox.path, "show", "HEAD:m.py") == "a = 1\nb = 20\nc = 3\n"
    assert git(sandbox.path, "show", "HEAD:n.py") == "x = 1\ny = 2\n"


@pytest.mark.parametrize("shape", CRLF_SHAPES)
def test_apply_brings_the_result_home_to_a_crlf_checkout(
        tmp_path: Path, sandboxes: list[Sandbox], shape: str) -> None:
    repo = _repo(tmp_path / "repo", {"m.py": THREE.encode(), "k.py": b"k = 1\n"},
                 **CRLF_SHAPES[shape])
    index = (repo / ".git" / "index").read_bytes()
    sandbox = _sandbox(sandboxes, repo)
    _commit(sandbox, [CHANGE_B + NEW_FILE])
    assert sorted(sandbox.apply_to_worktree()) == ["m.py", "n.py"]
    assert (repo / "m.py").read_bytes() == b"a = 1\r\nb = 20\r\nc = 3\r\n"
    assert (repo / "n.py").read_bytes() == b"x = 1\r\ny = 2\r\n"
    assert (repo / "k.py").read_bytes() == b"k = 1\r\n"
    assert (repo / ".git" / "index").read_bytes() == index


def test_apply_in_a_crlf_checkout_still_refuses_a_file_the_user_changed(
        tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    repo = _repo(tmp_path / "repo", {"m.py": THREE.encode()}, autocrlf="true")
    sandbox = _sandbox(sandboxes, repo)
    _commit(sandbox, [CHANGE_B])
    (repo / "m.py").write_bytes(b"a = 1\r\nb = 2\r\nc = 4\r\n")
    with pytest.raises(SandboxError, match="you changed these files while codeloop ran: m.py"):
        sandbox.apply_to_worktree()
    assert (repo / "m.py").read_bytes() == b"a = 1\r\nb = 2\r\nc = 4\r\n"


def test_a_failed_commit_restores_every_file_it_wrote(
        tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    repo = _repo(tmp_path / "repo", {"m.py": THREE.encode()})
    sandbox = _sandbox(sandboxes, repo)
    edits = plan(sandbox.path, [CHANGE_B + NEW_FILE], partial(index_modes, sandbox.path))
    head = sandbox.head()
    # an index lock held by someone else makes the staging fail midway
    lock = Path(git(sandbox.path, "rev-parse", "--git-path", "index.lock").strip())
    lock = lock if lock.is_absolute() else sandbox.path / lock
    lock.write_text("")
    try:
        with pytest.raises(SandboxError):
            sandbox.commit_patch(edits, "turn")
    finally:
        lock.unlink()
    assert sandbox.head() == head
    assert (sandbox.path / "m.py").read_text() == THREE
    assert not (sandbox.path / "n.py").exists()
    assert git(sandbox.path, "status", "--porcelain") == ""


# --- point 5: odd paths -------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["b/a\x00b.py", "b/a\x1b[2Jb.py", '"b/a\\tb.py"',
                                    '"b/a\\001b.py"', "b/a\x7fb.py"])
def test_a_control_character_in_a_path_is_a_precise_refusal(tmp_path: Path, target: str) -> None:
    root = _repo(tmp_path / "repo", {"m.py": THREE.encode()})
    with pytest.raises(PatchError, match=r"^refused: .* control character") as caught:
        plan(root, [f"--- /dev/null\n+++ {target}\n@@ -0,0 +1 @@\n+x = 1\n"],
             partial(index_modes, root))
    # the refusal reaches the model and the screen: it names the character, never holds it
    assert not re.search(r"[\x00-\x1f\x7f]", str(caught.value))


def test_git_quoted_paths_are_decoded(tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    repo = _repo(tmp_path / "repo", {"café.py": THREE.encode(), 'say "hi".py': b"s = 1\n"})
    # the diff exactly as git writes it: quoted paths with octal UTF-8 and C escapes
    work = _repo(tmp_path / "work", {"café.py": THREE.encode(), 'say "hi".py': b"s = 1\n"})
    (work / "café.py").write_text(THREE.replace("b = 2", "b = 20"))
    (work / 'say "hi".py').write_text("s = 2\n")
    diff = git(work, "diff")
    assert '"a/caf\\303\\251.py"' in diff and '"b/say \\"hi\\".py"' in diff
    sandbox = _sandbox(sandboxes, repo)
    _commit(sandbox, [diff])
    assert (sandbox.path / "café.py").read_text() == THREE.replace("b = 2", "b = 20")
    assert (sandbox.path / 'say "hi".py').read_text() == "s = 2\n"


# --- point 10 (a): indentation -------------------------------------------------------------------

def test_added_lines_take_the_tab_indentation_of_the_file(tmp_path: Path) -> None:
    source = "def f(x):\n\tif x:\n\t\treturn 1\n\treturn 0\n"
    root = _repo(tmp_path / "repo", {"t.py": source.encode()})
    diff = ("--- a/t.py\n+++ b/t.py\n@@ -1,4 +1,6 @@\n def f(x):\n     if x:\n"
            "-        return 1\n+        if x > 9:\n+            return 9\n+        return 2\n"
            "     return 0\n")
    [edit] = plan(root, [diff], partial(index_modes, root))
    assert edit.after == ("def f(x):\n\tif x:\n\t\tif x > 9:\n\t\t\treturn 9\n\t\treturn 2\n"
                          "\treturn 0\n")
    (root / "t.py").write_text(edit.after)
    py_compile.compile(str(root / "t.py"), doraise=True)


def test_two_space_hunk_in_a_four_space_file_is_reindented(tmp_path: Path) -> None:
    source = "class C:\n    def f(self):\n        return 1\n"
    root = _repo(tmp_path / "repo", {"c.py": source.encode()})
    diff = ("--- a/c.py\n+++ b/c.py\n@@ -1,3 +1,4 @@\n class C:\n   def f(self):\n"
            "-    return 1\n+    x = 2\n+    return x\n")
    [edit] = plan(root, [diff], partial(index_modes, root))
    assert edit.after == "class C:\n    def f(self):\n        x = 2\n        return x\n"


# --- point 10 (b): renames and modes ------------------------------------------------------------

def _git_diff(tmp_path: Path, files: dict[str, bytes], change: str) -> str:
    """What `git diff` (with rename detection) prints for a shell `change` to `files`."""
    work = _repo(tmp_path / "work", files)
    subprocess.run(change, shell=True, cwd=work, check=True)
    git(work, "add", "-A")
    return git(work, "diff", "--cached", "-M")


@pytest.mark.parametrize("change", ["git mv m.py moved.py",
                                    "git mv m.py sub/moved.py && sed -i s/b\\ =\\ 2/b\\ =\\ 20/ "
                                    "sub/moved.py"])
def test_git_rename_diffs_apply(tmp_path: Path, sandboxes: list[Sandbox], change: str) -> None:
    files = {"m.py": THREE.encode(), "other.py": b"o = 1\n"}
    diff = _git_diff(tmp_path, files, f"mkdir -p sub && {change}")
    assert "rename from m.py" in diff
    sandbox = _sandbox(sandboxes, _repo(tmp_path / "repo", files))
    _commit(sandbox, [diff])
    moved = "moved.py" if "sub/" not in change else "sub/moved.py"
    assert not (sandbox.path / "m.py").exists()
    expected = THREE if "sed" not in change else THREE.replace("b = 2", "b = 20")
    assert (sandbox.path / moved).read_text() == expected
    assert git(sandbox.path, "ls-files").split() == sorted(["other.py", moved])
    status = git(sandbox.path, "diff", "-M", "--name-status", "HEAD~1", "HEAD").split()
    assert status[0].startswith("R") and status[1:] == ["m.py", moved]


def test_apply_brings_a_rename_and_a_mode_change_home(
        tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    files = {"m.py": THREE.encode(), "run.sh": b"echo hi\n"}
    diff = _git_diff(tmp_path, files, "git mv m.py moved.py && chmod +x run.sh")
    repo = _repo(tmp_path / "repo", files, autocrlf="true")
    sandbox = _sandbox(sandboxes, repo)
    _commit(sandbox, [diff])
    assert sorted(sandbox.apply_to_worktree()) == ["m.py", "moved.py", "run.sh"]
    assert not (repo / "m.py").exists()
    assert (repo / "moved.py").read_bytes() == THREE.replace("\n", "\r\n").encode()
    assert os.access(repo / "run.sh", os.X_OK)


def test_a_new_file_on_an_ignored_path_is_committed_like_any_other(
        tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    sandbox = _sandbox(sandboxes, _repo(tmp_path / "repo", {".gitignore": b"*.cfg\n"}))
    _commit(sandbox, ["--- /dev/null\n+++ b/app.cfg\n@@ -0,0 +1 @@\n+debug = true\n"])
    assert git(sandbox.path, "show", "HEAD:app.cfg") == "debug = true\n"


def test_a_model_style_rename_with_hunks_applies(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"m.py": THREE.encode()})
    diff = "diff --git a/m.py b/n.py\nrename from m.py\nrename to n.py\n" + \
        CHANGE_B.replace("+++ b/m.py", "+++ b/n.py")
    [edit] = plan(root, [diff], partial(index_modes, root))
    assert (edit.path, edit.renamed_from, edit.after) == ("n.py", "m.py",
                                                          THREE.replace("b = 2", "b = 20"))


def test_a_rename_onto_an_existing_file_is_refused(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"m.py": THREE.encode(), "n.py": b"n\n"})
    with pytest.raises(PatchError, match="n.py: the patch renames m.py to n.py, which exists"):
        plan(root, ["diff --git a/m.py b/n.py\nsimilarity index 100%\nrename from m.py\n"
                    "rename to n.py\n"], partial(index_modes, root))


def test_mode_changes_apply(tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    files = {"run.sh": b"echo hi\n", "tool.sh": b"#!/bin/sh\n"}
    diff = _git_diff(tmp_path, files, "chmod +x run.sh && printf 'echo new\\n' > new.sh && "
                     "chmod +x new.sh && chmod +x tool.sh && echo 'echo tool' >> tool.sh")
    assert "old mode 100644\nnew mode 100755" in diff and "new file mode 100755" in diff
    sandbox = _sandbox(sandboxes, _repo(tmp_path / "repo", files))
    _commit(sandbox, [diff])
    staged = {line.split()[-1]: line.split()[0] for line in
              git(sandbox.path, "ls-files", "-s").splitlines()}
    assert staged == {"new.sh": "100755", "run.sh": "100755", "tool.sh": "100755"}
    assert all(os.access(sandbox.path / name, os.X_OK) for name in staged)
    assert (sandbox.path / "tool.sh").read_text() == "#!/bin/sh\necho tool\n"


def test_hunks_right_after_a_git_header_without_file_lines_apply(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"m.py": THREE.encode()})
    diff = "diff --git a/m.py b/m.py\n" + CHANGE_B.split("\n", 2)[2]
    [edit] = plan(root, [diff], partial(index_modes, root))
    assert edit.after == THREE.replace("b = 2", "b = 20")


@pytest.mark.parametrize(("diff", "reason"), [
    ("diff --git a/logo.png b/logo.png\nnew file mode 100644\nindex 0000000..1b2c3d4\n"
     "GIT binary patch\nliteral 4\nLcmZ?wbhEGr0000\n\nliteral 0\nHcmV?d00001\n",
     "logo.png: binary patches are not supported"),
    ("diff --git a/m.py b/copy.py\nsimilarity index 100%\ncopy from m.py\ncopy to copy.py\n",
     "copy.py: copies are not supported"),
])
def test_a_git_patch_codeloop_cannot_apply_is_refused_with_the_reason(
        tmp_path: Path, diff: str, reason: str) -> None:
    root = _repo(tmp_path / "repo", {"m.py": THREE.encode()})
    with pytest.raises(PatchError, match=reason):
        plan(root, [diff], partial(index_modes, root))


def test_a_mode_codeloop_cannot_write_is_refused_with_the_reason(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"m.py": THREE.encode()})
    with pytest.raises(PatchError, match="m.py: mode 120000 .*symbolic link.* not supported"):
        plan(root, ["diff --git a/m.py b/m.py\nold mode 100644\nnew mode 120000\n"],
             partial(index_modes, root))


# --- point 10 (c): ambiguous placement ----------------------------------------------------------

TWINS = ("def one():\n    total = 0\n    return total\n\n\n"
         "def two():\n    total = 0\n    return total\n")


@pytest.mark.parametrize("header", ["@@", "@@ -4,3 +4,3 @@"])
def test_a_hunk_matching_several_places_is_refused_naming_them(tmp_path: Path,
                                                               header: str) -> None:
    root = _repo(tmp_path / "repo", {"t.py": TWINS.encode()})
    hunk = "     total = 0\n-    return total\n+    return total + 1\n"
    with pytest.raises(PatchError) as caught:
        plan(root, [f"--- a/t.py\n+++ b/t.py\n{header}\n{hunk}"], partial(index_modes, root))
    assert "of t.py: its context matches 2 places (lines 2 and 7)" in str(caught.value)
    # the advice given works: one more context line places it
    [edit] = plan(root, [f"--- a/t.py\n+++ b/t.py\n{header}\n def two():\n{hunk}"],
                  partial(index_modes, root))
    assert edit.after == TWINS[:-len("return total\n")] + "return total + 1\n"


@pytest.mark.parametrize(("header", "changed"), [("@@ -7,2 +7,2 @@", "two"),
                                                 ("@@ -1,2 +1,2 @@", "one"),
                                                 ("@@ -9,2 +9,2 @@", "two")])
def test_line_numbers_that_settle_an_ambiguous_hunk_place_it(
        tmp_path: Path, header: str, changed: str) -> None:
    root = _repo(tmp_path / "repo", {"t.py": TWINS.encode()})
    hunk = "     total = 0\n-    return total\n+    return total + 1\n"
    [edit] = plan(root, [f"--- a/t.py\n+++ b/t.py\n{header}\n{hunk}"], partial(index_modes, root))
    parts = TWINS.split("\n\n\n")
    where = 0 if changed == "one" else 1
    parts[where] = parts[where].replace("return total", "return total + 1")
    assert edit.after == "\n\n\n".join(parts)


def test_an_earlier_hunk_settles_where_a_later_unnumbered_one_goes(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"t.py": TWINS.encode()})
    diff = ("--- a/t.py\n+++ b/t.py\n@@\n-def two():\n+def second():\n@@\n"
            "     total = 0\n-    return total\n+    return total + 1\n")
    [edit] = plan(root, [diff], partial(index_modes, root))
    assert edit.after == ("def one():\n    total = 0\n    return total\n\n\n"
                          "def second():\n    total = 0\n    return total + 1\n")


def test_line_numbers_in_a_refusal_are_those_of_the_file_as_sent(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"t.py": TWINS.encode()})
    # hunk 1 adds two lines at the top; hunk 2 is then ambiguous among the file's lines 2 and 7
    diff = ("--- a/t.py\n+++ b/t.py\n@@ -1,1 +1,3 @@\n+import os\n+\n def one():\n@@\n"
            "     total = 0\n-    return total\n+    return total + 1\n")
    with pytest.raises(PatchError, match=r"matches 2 places \(lines 2 and 7\)"):
        plan(root, [diff], partial(index_modes, root))


# --- point 10 (d): the closest-lines hint ---------------------------------------------------------

def test_the_hint_offers_the_lines_near_the_hunk_first(tmp_path: Path) -> None:
    doc = '    """Return the first item of *iterable*.\n\n    Raises on an empty one.\n    """\n'
    filler = "".join(f"x{n} = {n}\n" for n in range(40))
    source = f"def first(iterable):\n{doc}    return next(iter(iterable))\n\n\n{filler}" \
             f"def nth_or_last(iterable, n):\n{doc}    return list(iterable)[n]\n"
    root = _repo(tmp_path / "repo", {"more.py": source.encode()})
    near = source.splitlines().index("def nth_or_last(iterable, n):") + 1
    diff = (f"--- a/more.py\n+++ b/more.py\n@@ -{near + 1},5 +{near + 1},5 @@\n"
            '     """Return the first item of *iterable*.\n \n     Raises on an empty one.\n'
            '     """\n-    return list(iterable)[n - 1]\n+    return list(iterable)[n:][0]\n')
    with pytest.raises(PatchError) as caught:
        plan(root, [diff], partial(index_modes, root))
    message = str(caught.value)
    assert f"match the file at line {near + 1}," in message
    assert f"Closest existing lines: line {near + 5}: '    return list(iterable)[n]'" in message


# --- a real session on a CRLF checkout ---------------------------------------------------------

def test_a_session_on_a_crlf_checkout_rejects_an_odd_path_then_applies_home(
        tmp_path: Path, isolated_env: dict[str, str]) -> None:
    repo = make_repo(tmp_path, "offbyone")
    git(repo, "config", "core.autocrlf", "true")
    for rel in git(repo, "ls-files").split():  # as a fresh checkout on Windows would be
        (repo / rel).unlink()
    git(repo, "checkout", "--", ".")
    assert b"\r\n" in (repo / "pager" / "paginate.py").read_bytes()
    assert git(repo, "status", "--porcelain") == ""
    odd = "--- /dev/null\n+++ b/pager/evil\x00.py\n@@ -0,0 +1 @@\n+x = 1\n"
    replies = [Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": odd}))]),
               Reply(tool_calls=[ToolCall("apply_patch",
                                          json.dumps({"patch": fix_diff("offbyone")}))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, "--task", "fix", "--base-url", server.base_url,
                            "--model", "scripted", "--test-cmd", PYTEST_CMD, "--json", "--apply",
                            timeout=120)
        requests = server.chat_requests
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    [rejected] = [e for e in events if e["type"] == "patch.rejected"]
    assert "control character" in rejected["reason"]
    assert "control character" in requests[1].body["messages"][-1]["content"]
    assert events[-1]["outcome"] == "passed" and events[-1]["applied_to_worktree"] is True
    fixed = (repo / "pager" / "paginate.py").read_bytes()
    assert b"return (total + per_page - 1) // per_page\r\n" in fixed
    assert fixed.count(b"\n") == fixed.count(b"\r\n")


# --- review findings: what the patch may target -------------------------------------------------

@pytest.mark.parametrize(("diff", "reason"), [
    ("--- a/link.py\n+++ b/link.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n",
     "refused: 'link.py' is a symbolic link (to 'real.py'); patch 'real.py' itself"),
    ("diff --git a/link.py b/moved.py\nrename from link.py\nrename to moved.py\n",
     "refused: 'link.py' is a symbolic link (to 'real.py')"),
    ("--- /dev/null\n+++ b/linked/new.py\n@@ -0,0 +1 @@\n+n = 1\n",
     "refused: 'linked/new.py' leads through 'linked', a symbolic link (to 'pkg'); "
     "patch 'pkg/new.py' itself"),
    ("--- a/gone.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-a = 1\n",
     "refused: 'gone.py' is a symbolic link (to 'missing.py')"),
])
def test_a_patch_through_a_symlink_is_refused_naming_where_it_points(
        tmp_path: Path, diff: str, reason: str) -> None:
    repo = _repo(tmp_path / "repo", {"real.py": b"a = 1\n", "pkg/m.py": b"m = 1\n"})
    os.symlink("real.py", repo / "link.py")
    os.symlink("pkg", repo / "linked")
    os.symlink("missing.py", repo / "gone.py")
    with pytest.raises(PatchError) as caught:
        plan(repo, [diff], partial(index_modes, repo))
    assert reason in str(caught.value)


@pytest.mark.parametrize(("target", "reason"), [
    ("d", "refused: 'd' is a directory; a patch changes files"),
    ("pkg/__init__.py", "refused: 'pkg/__init__.py' cannot be created: 'pkg' is a file"),
])
def test_a_patch_onto_a_directory_or_under_a_file_is_refused_precisely(
        tmp_path: Path, target: str, reason: str) -> None:
    repo = _repo(tmp_path / "repo", {"pkg": b"x = 1\n", "d/f.py": b"y = 1\n"})
    with pytest.raises(PatchError, match=re.escape(reason)):
        plan(repo, [f"--- /dev/null\n+++ b/{target}\n@@ -0,0 +1 @@\n+z = 1\n"],
             partial(index_modes, repo))


@pytest.mark.parametrize("target", ["d", "pkg/__init__.py"])
def test_a_write_that_cannot_happen_is_a_clean_refusal_that_changes_nothing(
        tmp_path: Path, sandboxes: list[Sandbox], target: str) -> None:
    repo = _repo(tmp_path / "repo", {"m.py": THREE.encode(), "pkg": b"x = 1\n",
                                     "d/f.py": b"y = 1\n"})
    sandbox = _sandbox(sandboxes, repo)
    head = sandbox.head()
    # (edits `plan` would refuse, handed to the sandbox directly: its own guard must hold too)
    edits = [FileEdit("m.py", THREE, "a = 1\n", mode_before="100644", mode_after="100644"),
             FileEdit(target, None, "z = 1\n", mode_after="100644")]
    with pytest.raises(SandboxError, match="nothing was changed"):
        sandbox.commit_patch(edits, "turn")
    assert sandbox.head() == head
    assert (sandbox.path / "m.py").read_text() == THREE
    assert (sandbox.path / "pkg").read_text() == "x = 1\n"
    assert (sandbox.path / "d" / "f.py").read_text() == "y = 1\n"
    assert git(sandbox.path, "status", "--porcelain") == ""


# --- review findings: content survives byte for byte --------------------------------------------

ODD_BREAKS = "import os\n\x0c\ndef f():\n    return 1\n\x1c x = 2\r y\x85 \u2028 \u2029\x1d\x1e\n"


def test_form_feeds_and_other_unicode_line_breaks_are_kept(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"m.py": ODD_BREAKS.encode()})
    diff = "--- a/m.py\n+++ b/m.py\n@@ -3,2 +3,2 @@\n def f():\n-    return 1\n+    return 2\n"
    [edit] = plan(root, [diff], partial(index_modes, root))
    assert edit.after == ODD_BREAKS.replace("return 1", "return 2")
    assert diffstat([edit]).splitlines() == ["m.py | +1 -1", "1 file(s) changed, +1 -1"]


@pytest.mark.parametrize("diff", [
    "diff --git a/m.py b/n.py\nsimilarity index 100%\nrename from m.py\nrename to n.py\n",
    "diff --git a/m.py b/m.py\nold mode 100644\nnew mode 100755\n",
])
def test_a_rename_or_mode_change_keeps_the_content_byte_for_byte(tmp_path: Path,
                                                                 diff: str) -> None:
    content = ODD_BREAKS + "no final newline\r"
    root = _repo(tmp_path / "repo", {"m.py": content.encode()})
    [edit] = plan(root, [diff], partial(index_modes, root))
    assert edit.after == content


def test_a_mode_change_is_read_from_the_index_when_core_filemode_is_off(
        tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    repo = _repo(tmp_path / "repo", {"run.sh": b"echo hi\n"})
    git(repo, "update-index", "--chmod=+x", "run.sh")
    git(repo, "commit", "-q", "-m", "executable")
    git(repo, "config", "core.fileMode", "false")
    sandbox = _sandbox(sandboxes, repo)
    (sandbox.path / "run.sh").chmod(0o644)  # as on a file system without x bits: git ignores it
    assert git(sandbox.path, "status", "--porcelain") == ""
    _commit(sandbox, ["diff --git a/run.sh b/run.sh\nold mode 100755\nnew mode 100644\n"])
    assert git(sandbox.path, "ls-tree", "HEAD", "run.sh").split()[0] == "100644"


# --- review findings: a patch sent again ----------------------------------------------------------

PLACED = ("def one():\n    total = 0\n    return total\n\n\n"
          "def two():\n    total = 0\n    x = 1\n    return total\n")


def test_a_numbered_patch_sent_again_is_already_applied_not_applied_elsewhere(
        tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"t.py": TWINS.encode()})
    diff = ("--- a/t.py\n+++ b/t.py\n@@ -7,2 +7,3 @@\n     total = 0\n+    x = 1\n"
            "     return total\n")
    [edit] = plan(root, [diff], partial(index_modes, root))
    assert edit.after == PLACED
    (root / "t.py").write_text(edit.after)
    [again] = plan(root, [diff], partial(index_modes, root))
    assert (again.changed, again.after) == (False, PLACED)
    assert again.already_applied == ["t.py hunk 1 (@@ -7,2 +7,3 @@)"]


def test_a_patch_of_several_hunks_sent_again_is_already_applied(tmp_path: Path) -> None:
    source = "".join(f"line{n} = {n}\n" for n in range(1, 21))
    root = _repo(tmp_path / "repo", {"big.py": source.encode()})
    diff = ("--- a/big.py\n+++ b/big.py\n@@ -1,2 +1,4 @@\n+import os\n+import sys\n line1 = 1\n"
            " line2 = 2\n@@ -15,2 +17,2 @@\n line15 = 15\n-line16 = 16\n+line16 = 160\n")
    [edit] = plan(root, [diff], partial(index_modes, root))
    (root / "big.py").write_text(edit.after)
    [again] = plan(root, [diff], partial(index_modes, root))
    assert not again.changed and len(again.already_applied) == 2


def test_an_unnumbered_hunk_whose_new_side_is_already_elsewhere_is_refused(
        tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"t.py": PLACED.encode()})
    diff = "--- a/t.py\n+++ b/t.py\n@@\n     total = 0\n+    x = 1\n     return total\n"
    with pytest.raises(PatchError) as caught:
        plan(root, [diff], partial(index_modes, root))
    assert ("hunk 1 (@@ -0,2 +0,3 @@) of t.py: it fits at line 2, but its new lines are "
            "already at line 7") in str(caught.value)
    # line numbers settle it: the first function gets it too
    [edit] = plan(root, [diff.replace("@@\n", "@@ -2,2 +2,3 @@\n")], partial(index_modes, root))
    assert edit.after == PLACED.replace("total = 0\n    return", "total = 0\n    x = 1\n    return")


def test_a_deletion_applies_though_the_context_it_leaves_occurs_elsewhere(
        tmp_path: Path) -> None:
    source = "a = 1\n\n\nb = 2\n\nx = 3\n\nc = 4\n"
    root = _repo(tmp_path / "repo", {"d.py": source.encode()})
    # its new side (two blank lines) is at line 2 already: that is no sign of it being applied
    for header in ("@@", "@@ -4,3 +4,2 @@"):
        [edit] = plan(root, [f"--- a/d.py\n+++ b/d.py\n{header}\n \n-x = 3\n \n"],
                      partial(index_modes, root))
        assert edit.after == "a = 1\n\n\nb = 2\n\n\nc = 4\n"


def test_a_mode_change_of_a_missing_file_is_refused(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"m.py": THREE.encode()})
    with pytest.raises(PatchError, match="nope.sh: the file does not exist"):
        plan(root, ["diff --git a/nope.sh b/nope.sh\nold mode 100644\nnew mode 100755\n"],
             partial(index_modes, root))


# --- review findings: indentation, messages -----------------------------------------------------

def test_a_hunk_indented_one_level_too_little_is_shifted_whole(tmp_path: Path) -> None:
    source = "class A:\n    def f(self, x):\n        y = x\n        return y\n"
    root = _repo(tmp_path / "repo", {"a.py": source.encode()})
    diff = ("--- a/a.py\n+++ b/a.py\n@@ -2,3 +2,4 @@\n def f(self, x):\n     y = x\n"
            "-    return y\n+    if y:\n+        return y\n+    return 0\n")
    [edit] = plan(root, [diff], partial(index_modes, root))
    assert edit.after == ("class A:\n    def f(self, x):\n        y = x\n        if y:\n"
                          "            return y\n        return 0\n")


def test_a_refusal_in_a_crlf_file_quotes_lines_without_their_cr(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"m.py": THREE.encode()}, autocrlf="true")
    assert (root / "m.py").read_bytes() == b"a = 1\r\nb = 2\r\nc = 3\r\n"
    with pytest.raises(PatchError) as caught:
        plan(root, [CHANGE_B.replace("-b = 2", "-b = 5")], partial(index_modes, root))
    assert "expects 'b = 5' where the file has 'b = 2' (line 2)" in str(caught.value)
    assert "\\r" not in str(caught.value)


# --- review findings: committing ------------------------------------------------------------------

def test_a_commit_that_fails_after_staging_restores_files_and_index(
        tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    files = {"m.py": THREE.encode(), "run.sh": b"echo hi\n", "old.py": b"o = 1\n"}
    diff = _git_diff(tmp_path, files, "chmod +x run.sh && git mv old.py new.py")
    sandbox = _sandbox(sandboxes, _repo(tmp_path / "repo", files))
    edits = [e for e in plan(sandbox.path, [CHANGE_B + NEW_FILE, diff],
                             partial(index_modes, sandbox.path)) if e.changed]
    head, index = sandbox.head(), git(sandbox.path, "ls-files", "-s")
    # the branch's ref is locked: staging succeeds, the commit itself fails
    branch = git(sandbox.path, "symbolic-ref", "HEAD").strip()
    common = Path(git(sandbox.path, "rev-parse", "--path-format=absolute",
                      "--git-common-dir").strip())
    lock = common / f"{branch}.lock"
    lock.write_text("")
    try:
        with pytest.raises(SandboxError, match="nothing was changed"):
            sandbox.commit_patch(edits, "turn")
    finally:
        lock.unlink()
    assert sandbox.head() == head
    assert git(sandbox.path, "ls-files", "-s") == index
    assert git(sandbox.path, "status", "--porcelain") == ""
    assert (sandbox.path / "m.py").read_text() == THREE
    assert not (sandbox.path / "n.py").exists() and not (sandbox.path / "new.py").exists()
    assert not os.access(sandbox.path / "run.sh", os.X_OK)


def test_an_index_lock_held_while_staging_changes_nothing_and_does_not_damage_the_sandbox(
        tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    sandbox = _sandbox(sandboxes, _repo(tmp_path / "repo", {"m.py": THREE.encode()}))
    head, index = sandbox.head(), git(sandbox.path, "ls-files", "-s")
    # another git (an editor's `git status`) holds the sandbox's index for a moment
    lock = Path(git(sandbox.path, "rev-parse", "--path-format=absolute",
                    "--git-path", "index.lock").strip())
    lock.write_text("")
    try:
        with pytest.raises(SandboxError, match="nothing was changed") as caught:
            sandbox.commit_patch(plan(sandbox.path, [CHANGE_B + NEW_FILE],
                                      partial(index_modes, sandbox.path)), "turn")
        assert not isinstance(caught.value, SandboxDamaged)
        assert (sandbox.path / "m.py").read_text() == THREE
        assert not (sandbox.path / "n.py").exists()
    finally:
        lock.unlink()
    assert sandbox.head() == head
    assert git(sandbox.path, "ls-files", "-s") == index
    assert git(sandbox.path, "status", "--porcelain") == ""
    _commit(sandbox, [CHANGE_B])  # the session goes on


def test_a_failure_after_the_commit_still_leaves_the_commit_and_its_files(
        tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    repo = _repo(tmp_path / "repo", {"m.py": THREE.encode(), ".gitattributes": b"*.py filter=f\n"})
    git(repo, "config", "filter.f.clean", "cat")
    git(repo, "config", "filter.f.smudge", "cat")
    git(repo, "config", "filter.f.required", "true")
    sandbox = _sandbox(sandboxes, repo)
    head = sandbox.head()
    git(repo, "config", "filter.f.smudge", "false")  # the checkout after the commit fails
    commit = sandbox.commit_patch(plan(sandbox.path, [CHANGE_B + NEW_FILE],
                                       partial(index_modes, sandbox.path)), "turn")
    assert commit == sandbox.head() != head
    assert (sandbox.path / "m.py").read_text() == THREE.replace("b = 2", "b = 20")
    assert (sandbox.path / "n.py").read_text() == "x = 1\ny = 2\n"
    assert git(sandbox.path, "status", "--porcelain") == ""


def test_the_users_hooks_do_not_run_in_the_sandbox(tmp_path: Path,
                                                   sandboxes: list[Sandbox]) -> None:
    repo = _repo(tmp_path / "repo", {"m.py": THREE.encode()})
    hooks = repo / ".git" / "hooks"
    (hooks / "prepare-commit-msg").write_text("#!/bin/sh\necho 'ticket id required' >&2\nexit 1\n")
    (hooks / "post-commit").write_text(f"#!/bin/sh\ntouch {tmp_path}/post-commit-ran\n")
    for hook in hooks.glob("*-commit*"):
        hook.chmod(0o755)
    sandbox = _sandbox(sandboxes, repo)
    _commit(sandbox, [CHANGE_B])
    assert git(sandbox.path, "show", "HEAD:m.py") == THREE.replace("b = 2", "b = 20")
    assert not (tmp_path / "post-commit-ran").exists()


# --- review findings: a change already made to a look-alike ---------------------------------------

LOOK_ALIKES = ("def first(items):\n    total = 0\n    total += 1\n    for item in items:\n"
               "        total += item\n    return total\n\n\n"
               "def second(items):\n    total = 0\n    for item in items:\n"
               "        total += item\n    return total\n")
COUNT_ONE = ("--- a/m.py\n+++ b/m.py\n@@ -{0},3 +{0},4 @@\n     total = 0\n+    total += 1\n"
             "     for item in items:\n         total += item\n")
BOTH_COUNT = LOOK_ALIKES.replace("total = 0\n    for", "total = 0\n    total += 1\n    for")


def test_a_hunk_is_not_already_applied_because_a_look_alike_nearby_has_its_change(
        tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", {"m.py": LOOK_ALIKES.encode()})
    # its line numbers point nearer first(), which has the change, than second(), which fits
    with pytest.raises(PatchError) as caught:
        plan(root, [COUNT_ONE.format(4)], partial(index_modes, root))
    assert ("hunk 1 (@@ -4,3 +4,4 @@) of m.py: it fits at line 10, but its new lines are "
            "already at line 2") in str(caught.value)
    assert (root / "m.py").read_text() == LOOK_ALIKES
    # numbers that settle it on second() (exactly, or a little off) apply it there
    for start in (10, 8):
        [edit] = plan(root, [COUNT_ONE.format(start)], partial(index_modes, root))
        assert (edit.after, edit.already_applied) == (BOTH_COUNT, [])
    # and that patch sent again is recognised where it went
    (root / "m.py").write_text(BOTH_COUNT)
    [again] = plan(root, [COUNT_ONE.format(10)], partial(index_modes, root))
    assert (again.changed, again.already_applied) == (False, ["m.py hunk 1 (@@ -10,3 +10,4 @@)"])
