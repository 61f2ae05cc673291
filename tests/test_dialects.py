"""Every edit dialect, in every carrier, gives the same files; edit-like text is never ignored.

The corpus is `tests/data/dialects/` (its README says what each folder holds). The differential
tests extract each reply's or argument's edit as the agent does (`scan_text`,
`patch_argument`), plan it with `plan` against a copy of the sample project, and compare the
resulting bytes with `expected/`. The last tests run `codeloop --task` against the scripted
server: a reply whose edit cannot be used is a rejection the model is told about, not `no_edits`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codeloop.edits.errors import PatchError
from codeloop.edits.extract import operation_patch, patch_argument, scan_text
from codeloop.edits.patch import plan
from tests.conftest import PYTEST_CMD, fix_diff, make_repo, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer

CORPUS = Path(__file__).resolve().parent / "data" / "dialects"
REPLIES = sorted((CORPUS / "replies").iterdir())
ARGUMENTS = sorted((CORPUS / "arguments").iterdir())
REFUSALS = sorted((CORPUS / "refusals").iterdir())
OPERATIONS = sorted((CORPUS / "operations").iterdir())
DIALECTS = ("udiff_git", "udiff_plain", "v4a", "sr")


def _no_modes(paths: list[str]) -> dict[str, str]:
    return {}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return shutil.copytree(CORPUS / "project", tmp_path / "project")


def _result(root: Path, edits: list[str]) -> dict[str, bytes]:
    """The project's files after `plan` of the edits, as bytes (plan itself writes nothing)."""
    files = _tree(root)
    for edit in plan(root, edits, _no_modes):
        if edit.after is None:
            files.pop(edit.path, None)
        else:
            files[edit.path] = edit.after.encode("utf-8", "surrogateescape")
    return files


def test_the_corpus_has_every_dialect_in_every_carrier():
    names = {p.stem for p in REPLIES} | {p.stem for p in ARGUMENTS}
    for dialect in DIALECTS:
        assert {f"{dialect}_patch", f"{dialect}_input", f"{dialect}_diff"} <= names
        assert {f"{dialect}_fenced", f"{dialect}_bare"} <= names
        assert {f"{dialect}_hostile_path", f"{dialect}_no_match"} <= {p.stem for p in REFUSALS}


@pytest.mark.parametrize("reply", REPLIES, ids=lambda p: p.stem)
def test_every_dialect_in_a_reply_gives_the_same_files(project: Path, reply: Path):
    found = scan_text(reply.read_bytes().decode())
    assert len(found.edits) == 1 and found.unusable == [], found
    assert _result(project, found.edits) == _tree(CORPUS / "expected")
    assert _tree(project) == _tree(CORPUS / "project")


@pytest.mark.parametrize("argument", ARGUMENTS, ids=lambda p: p.stem)
def test_every_dialect_as_apply_patch_arguments_gives_the_same_files(project: Path,
                                                                    argument: Path):
    edit = patch_argument(argument.read_bytes().decode())
    assert _result(project, [edit]) == _tree(CORPUS / "expected")


@pytest.mark.parametrize("calls", OPERATIONS, ids=lambda p: p.stem)
def test_the_builtin_tools_operations_give_the_same_files(project: Path, calls: Path):
    # one apply_patch_call item per file, as the Responses API's built-in tool sends them
    edits = [operation_patch(json.dumps(op)) for op in json.loads(calls.read_text())]
    assert _result(project, edits) == _tree(CORPUS / "expected")


def test_an_operation_deletes_a_file(project: Path):
    edit = operation_patch(json.dumps({"type": "delete_file", "path": "shapes.py"}))
    assert "shapes.py" not in _result(project, [edit]) and "calc.py" in _result(project, [edit])


def test_a_hostile_path_in_an_operation_is_refused_as_in_a_git_diff(project: Path):
    operation = {"type": "update_file", "path": "../outside.py", "diff": "@@\n-a\n+b\n"}
    with pytest.raises(PatchError) as refused:
        plan(project, [operation_patch(json.dumps(operation))], _no_modes)
    with pytest.raises(PatchError) as reference:
        plan(project, [(CORPUS / "refusals" / "udiff_git_hostile_path.txt").read_text()],
             _no_modes)
    assert str(refused.value).splitlines()[0] == str(reference.value).splitlines()[0]
    assert _tree(project) == _tree(CORPUS / "project")


@pytest.mark.parametrize(("operation", "said"), [
    ({"type": "rename_file", "path": "calc.py"}, "unknown apply_patch operation type"),
    ({"type": "update_file", "diff": "@@\n-a\n+b\n"}, "names no path"),
    ({"type": "create_file", "path": "x.py\n*** Delete File: calc.py", "diff": "+x\n"},
     "holds a line break"),
    ({"type": "update_file", "path": "calc.py"}, "has no diff"),
    (["update_file"], "not a JSON object"),
])
def test_a_malformed_operation_is_an_error_saying_what_is_wrong(operation, said: str):
    with pytest.raises(ValueError, match=said):
        operation_patch(json.dumps(operation))


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda p: p.stem)
def test_refusals_name_the_file_and_write_nothing(project: Path, refusal: Path):
    with pytest.raises(PatchError) as refused:
        plan(project, [refusal.read_text()], _no_modes)
    assert ("outside.py" if "hostile" in refusal.stem else "shapes.py") in str(refused.value)
    assert _tree(project) == _tree(CORPUS / "project")
    assert not (project.parent / "outside.py").exists()


def test_a_hostile_path_is_refused_in_every_dialect_as_in_a_git_diff(project: Path):
    def refusal(dialect: str) -> str:
        with pytest.raises(PatchError) as refused:
            plan(project, [(CORPUS / "refusals" / f"{dialect}_hostile_path.txt").read_text()],
                 _no_modes)
        return next(line for line in str(refused.value).splitlines() if "outside.py" in line)
    reference = refusal("udiff_git")
    assert [refusal(dialect) for dialect in DIALECTS] == [reference] * len(DIALECTS)


def test_a_fenced_diff_comes_back_as_it_came_and_a_cut_off_one_is_dropped():
    diff = fix_diff("offbyone")
    assert scan_text(f"Fix:\n\n```diff\n{diff}```\nDone.").edits == [diff]
    assert scan_text(f"Fix:\n\n```diff\n{diff}", cut_off=True).edits == []
    assert scan_text(f"Fix:\n\n{diff}\n*** Begin Patch\n*** Update File: x", cut_off=True).edits \
        == [diff]


def test_edits_of_several_dialects_come_in_the_order_they_appear():
    v4a = (CORPUS / "v4a.patch").read_text()
    udiff = (CORPUS / "unified_git.diff").read_text()
    text = f"First:\n\n{v4a}\nThen:\n\n```diff\n{udiff}```\n"
    assert scan_text(text).edits == [v4a, udiff]
    assert scan_text(f"```diff\n{udiff}```\nand\n```\n{v4a}```\n").edits == [udiff, v4a]


def test_all_search_replace_blocks_of_a_reply_are_one_edit():
    text = (CORPUS / "replies" / "sr_fenced.md").read_text()
    [edit] = scan_text(text).edits
    assert edit.count("<<<<<<< SEARCH") == 4
    assert edit.splitlines()[0] == "calc.py" and "\nshapes.py\n<<<<<<< SEARCH\n" in edit


def test_a_freeform_tool_input_that_is_no_edit_is_still_an_error():
    with pytest.raises(ValueError, match="not valid JSON"):
        patch_argument("please fix the bug")
    with pytest.raises(ValueError, match="non-empty string field"):
        patch_argument(json.dumps({"path": "calc.py"}))


@pytest.mark.parametrize("text", [
    "```diff\nchange the loop so that it stops one earlier\n```\n",
    "Here:\n\n*** Begin Patch\n*** Update File: calc.py\n-    return a + b\n",
    "calc.py\n<<<<<<< SEARCH\ndef sub(a, b):\n    return a + b\n",
    "Change the line under\n@@ -8,2 +8,2 @@\n-    return a + b\n+    return a - b\n",
], ids=["diff_fence_of_prose", "begin_patch_unclosed", "search_without_replace", "lone_hunk"])
def test_edit_like_text_that_is_no_edit_is_handed_on_and_refused(project: Path, text: str):
    found = scan_text(text)
    assert found.edits == [] and len(found.unusable) == 1
    with pytest.raises(PatchError) as refused:
        plan(project, found.unusable, _no_modes)
    assert _tree(project) == _tree(CORPUS / "project")
    # what it saw, and what it reads instead, in the dialect the model was trying to write
    assert str(refused.value).startswith(("no edit codeloop can read", "malformed V4A",
                                          "SEARCH/REPLACE block 1"))
    if str(refused.value).startswith("no edit"):
        assert "'*** Begin Patch'" in str(refused.value) and "SEARCH" in str(refused.value)


def test_prose_is_no_edit():
    text = ("The bug is in `sub`: it adds.\n\n- first, it returns a + b\n--- \nNo change is "
            "needed in shapes.py.\n```python\ndef sub(a, b):\n    return a - b\n```\n")
    assert scan_text(text).edits == [] and scan_text(text).unusable == []


BROKEN_V4A = ("I'll fix the page count.\n\n*** Begin Patch\n*** Update File: pager/paginate.py\n"
              "@@ def page_count(total: int, per_page: int) -> int:\n"
              "-    return total // per_page + 1 if total is not None else 0\n"
              "+    return (total + per_page - 1) // per_page\n")
DIFF_OF_PROSE = "The fix:\n\n```diff\nround the page count up instead of adding one\n```\n"


@pytest.mark.parametrize("broken", [BROKEN_V4A, DIFF_OF_PROSE], ids=["begin_patch", "prose"])
def test_a_broken_edit_in_text_is_rejected_and_the_model_told(tmp_path, isolated_env,
                                                             broken: str):
    repo = make_repo(tmp_path, "offbyone")
    fixed = "Corrected:\n\n```diff\n" + fix_diff("offbyone") + "```\n"
    with ScriptedModelServer([Reply(text=broken), Reply(text=fixed)]) as server:
        done = run_codeloop(repo, isolated_env, "--task", "make the tests pass", "--base-url",
                            server.base_url, "--model", "scripted", "--test-cmd", PYTEST_CMD,
                            "--edit-mode", "text", "--json")
        requests = server.chat_requests
    events = [json.loads(line) for line in done.stdout.splitlines()]
    ends = [e["outcome"] for e in events if e["type"] == "turn.end"]
    assert ends == ["rejected", "applied"], done.stderr
    [rejected] = [e for e in events if e["type"] == "patch.rejected"]
    feedback = requests[1].body["messages"][-1]
    assert feedback["role"] == "user" and "NOT applied" in feedback["content"]
    assert rejected["reason"] in feedback["content"]
    assert events[-1]["outcome"] == "passed" and done.returncode == 0


def test_a_good_diff_beside_a_quoted_fragment_applies_as_before(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    reply = ("```diff\n" + fix_diff("offbyone") + "```\n\nIn short, the count rounds up:\n\n"
             "```diff\n-    return total // per_page + 1\n```\n")
    with ScriptedModelServer([Reply(text=reply)]) as server:
        done = run_codeloop(repo, isolated_env, "--task", "make the tests pass", "--base-url",
                            server.base_url, "--model", "scripted", "--test-cmd", PYTEST_CMD,
                            "--edit-mode", "text", "--json")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["outcome"] for e in events if e["type"] == "turn.end"] == ["applied"], done.stderr
    assert done.returncode == 0


def test_a_diff_quoted_in_a_fence_of_another_language_is_no_edit():
    good = "```diff\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n" \
           "-    return a - b\n+    return a + b\n```\n"
    quoted = "The test said:\n```text\n--- expected\n+++ actual\n@@ -1 +1 @@\n-3\n+-1\n```\n"
    assert scan_text(good + quoted).edits == scan_text(good).edits
    assert scan_text(good + quoted).unusable == []


def test_a_block_after_prose_names_no_file_and_creates_none(project: Path):
    text = ("Create the new module as follows:\n```python\n<<<<<<< SEARCH\n=======\n"
            "def helper():\n    return 1\n>>>>>>> REPLACE\n```\n")
    with pytest.raises(PatchError, match="no file path"):
        plan(project, scan_text(text).edits + scan_text(text).unusable, _no_modes)
    assert _tree(project) == _tree(CORPUS / "project")


def test_a_titled_line_before_the_first_file_header_is_prose(project: Path):
    diff = (CORPUS / "unified_git.diff").read_text()
    assert _result(project, ["@@ Fix the sign\n\n" + diff]) == _result(project, [diff])
