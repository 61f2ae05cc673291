"""Aider's SEARCH/REPLACE blocks: the path on the line before, `<<<<<<< SEARCH` / `=======` /
`>>>>>>> REPLACE`, fenced or bare.

Each test plans the model's reply with `plan` against a real committed repository and checks the
exact content it would leave, or the precise refusal and that nothing would be written.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from codeloop.edits.errors import PatchError
from codeloop.edits.patch import FileEdit, plan
from codeloop.workspace.git import index_modes
from tests.conftest import committed_repo, git

CALC = ("def add(a, b):\n    return a - b\n\n\n"
        "def mul(a, b):\n    total = 0\n    for _ in range(b):\n        total += a\n"
        "    return total\n")
FIXED_ADD = CALC.replace("return a - b", "return a + b")
ADD_BLOCK = ("<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n=======\ndef add(a, b):\n"
             "    return a + b\n>>>>>>> REPLACE\n")


def _repo(tmp_path: Path, files: dict[str, str]) -> Path:
    return committed_repo(tmp_path / "repo", files)


def _plan(root: Path, text: str) -> dict[str, FileEdit]:
    return {edit.path: edit for edit in plan(root, [text], partial(index_modes, root))}


def _refusal(root: Path, text: str) -> str:
    with pytest.raises(PatchError) as refused:
        _plan(root, text)
    return str(refused.value)


@pytest.mark.parametrize("reply", [
    f"calc.py\n{ADD_BLOCK}",
    f"Fix the sign:\n\ncalc.py\n```python\n{ADD_BLOCK}```\nDone.\n",
    f"`calc.py`:\n\n```\n{ADD_BLOCK}```\n",
    f"```python\ncalc.py\n{ADD_BLOCK}```\n",
], ids=["bare", "fenced", "backticked-path", "path-inside-fence"])
def test_one_block_fenced_or_bare_applies(tmp_path: Path, reply: str) -> None:
    edits = _plan(_repo(tmp_path, {"calc.py": CALC}), reply)
    assert edits["calc.py"].after == FIXED_ADD


def test_several_blocks_and_files_apply_in_one_plan(tmp_path: Path) -> None:
    reply = (f"calc.py\n```python\n{ADD_BLOCK}```\n\nThen the loop:\n\ncalc.py\n```python\n"
             "<<<<<<< SEARCH\n    total = 0\n    for _ in range(b):\n        total += a\n"
             "    return total\n=======\n    return a * b\n>>>>>>> REPLACE\n"
             "<<<<<<< SEARCH\n    return a + b\n=======\n    return b + a\n>>>>>>> REPLACE\n```\n"
             "util.py\n```python\n<<<<<<< SEARCH\nNAME = 'x'\n=======\nNAME = 'y'\n"
             ">>>>>>> REPLACE\n```\n")
    edits = _plan(_repo(tmp_path, {"calc.py": CALC, "util.py": "NAME = 'x'\n"}), reply)
    assert edits["calc.py"].after == ("def add(a, b):\n    return b + a\n\n\n"
                                      "def mul(a, b):\n    return a * b\n")
    assert edits["util.py"].after == "NAME = 'y'\n"


def test_empty_search_creates_a_file_and_refuses_an_existing_one(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"calc.py": CALC})
    create = "pkg/new.py\n```python\n<<<<<<< SEARCH\n=======\nVALUE = 1\n>>>>>>> REPLACE\n```\n"
    edits = _plan(root, create)
    assert edits["pkg/new.py"].before is None and edits["pkg/new.py"].after == "VALUE = 1\n"
    refused = _refusal(root, create.replace("pkg/new.py", "calc.py"))
    assert "calc.py: the patch creates this file but it already exists" in refused


def test_block_on_a_crlf_file_keeps_its_line_endings(tmp_path: Path) -> None:
    root = _repo(tmp_path, {"calc.py": CALC.replace("\n", "\r\n")})
    assert (root / "calc.py").read_bytes().count(b"\r\n") == CALC.count("\n")
    edits = _plan(root, f"calc.py\n{ADD_BLOCK}".replace("\n", "\r\n"))
    assert edits["calc.py"].after == FIXED_ADD.replace("\n", "\r\n")


def test_block_with_other_indentation_lands_in_the_files_indentation(tmp_path: Path) -> None:
    source = "class Calc:\n\tdef add(self, a, b):\n\t\treturn a - b\n"
    reply = ("calc.py\n<<<<<<< SEARCH\n    def add(self, a, b):\n        return a - b\n=======\n"
             "    def add(self, a, b):\n        return a + b\n>>>>>>> REPLACE\n")
    edits = _plan(_repo(tmp_path, {"calc.py": source}), reply)
    assert edits["calc.py"].after == source.replace("a - b", "a + b")


def test_unchanged_lines_keep_the_files_own_bytes(tmp_path: Path) -> None:
    source = "def add(a, b):   \n    return a - b\n"
    reply = ("calc.py\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n=======\ndef add(a, b):\n"
             "    return a + b\n>>>>>>> REPLACE\n")
    edits = _plan(_repo(tmp_path, {"calc.py": source}), reply)
    assert edits["calc.py"].after == "def add(a, b):   \n    return a + b\n"


def test_block_not_found_is_refused_naming_the_block_and_nothing_is_planned(
        tmp_path: Path) -> None:
    root = _repo(tmp_path, {"calc.py": CALC, "util.py": "NAME = 'x'\n"})
    reply = ("util.py\n<<<<<<< SEARCH\nNAME = 'x'\n=======\nNAME = 'y'\n>>>>>>> REPLACE\n"
             "calc.py\n<<<<<<< SEARCH\ndef add(a, b):\n    return a / b\n=======\n"
             "def add(a, b):\n    return a + b\n>>>>>>> REPLACE\n")
    refused = _refusal(root, reply)
    assert "(SEARCH block 2) of calc.py" in refused
    assert "'    return a / b'" in refused and "line 2: '    return a - b'" in refused
    assert (root / "util.py").read_text() == "NAME = 'x'\n"
    assert git(root, "status", "--porcelain") == ""


@pytest.mark.parametrize("search", ["", "x = 0\n"], ids=["create", "update"])
@pytest.mark.parametrize("path", ["../outside.py", "/etc/passwd", ".git/config"])
def test_hostile_path_is_refused(tmp_path: Path, path: str, search: str) -> None:
    root = _repo(tmp_path, {"calc.py": CALC})
    reply = f"{path}\n<<<<<<< SEARCH\n{search}=======\nx = 1\n>>>>>>> REPLACE\n"
    assert f"refused: {path!r}" in _refusal(root, reply)
    assert not (tmp_path / "outside.py").exists()
    assert git(root, "status", "--porcelain") == ""


@pytest.mark.parametrize(("reply", "message"), [
    ("calc.py\n<<<<<<< SEARCH\ndef add(a, b):\n>>>>>>> REPLACE\n",
     "SEARCH/REPLACE block 1 for calc.py: no '=======' line"),
    (f"calc.py\n{ADD_BLOCK}calc.py\n<<<<<<< SEARCH\nx\n=======\ny\n",
     "SEARCH/REPLACE block 2 for calc.py: no '>>>>>>> REPLACE' line ends it"),
    (f"Here is the change:\n{ADD_BLOCK}", "SEARCH/REPLACE block 1: no file path"),
])
def test_malformed_block_is_refused_naming_it(tmp_path: Path, reply: str, message: str) -> None:
    assert message in _refusal(_repo(tmp_path, {"calc.py": CALC}), reply)


def test_refusals_speak_of_search_lines(tmp_path: Path) -> None:
    root = committed_repo(tmp_path / "r", {"calc.py": "def add(a, b):\n    return a + b\n\n\n"
                                                      "def sub(a, b):\n    return a + b\n"})
    missing = "calc.py\n<<<<<<< SEARCH\ndef sub(a, b):\n    return a * b\n=======\n" \
              "def sub(a, b):\n    return a - b\n>>>>>>> REPLACE\n"
    with pytest.raises(PatchError, match=r"SEARCH line 2 expects '    return a \* b'"):
        plan(root, [missing], partial(index_modes, root))
    twice = "calc.py\n<<<<<<< SEARCH\n    return a + b\n=======\n    return a - b\n" \
            ">>>>>>> REPLACE\n"
    with pytest.raises(PatchError, match="its SEARCH lines match 2 places .*more SEARCH lines"):
        plan(root, [twice], partial(index_modes, root))
