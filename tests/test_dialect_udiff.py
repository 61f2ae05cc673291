"""Aider's udiff dialect: plain `--- path` headers and hunks without line numbers.

Each test plans the model's diff with `plan` against a real committed repository and checks the
exact content it would leave, or the precise refusal.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from codeloop.edits.errors import PatchError
from codeloop.edits.patch import FileEdit, plan
from codeloop.workspace.git import index_modes
from tests.conftest import committed_repo

CALC = ("def add(a, b):\n    return a - b\n\n\n"
        "def mul(a, b):\n    total = 0\n    for _ in range(b):\n        total += a\n"
        "    return total\n")
FIXED_ADD = CALC.replace("return a - b", "return a + b")


def _plan(tmp_path: Path, files: dict[str, str], text: str) -> dict[str, FileEdit]:
    root = committed_repo(tmp_path / "repo", files)
    return {edit.path: edit for edit in plan(root, [text], partial(index_modes, root))}


@pytest.mark.parametrize("hunk_header", ["@@ ... @@", "@@ def add(a, b): @@", "@@ def add(a, b):",
                                         "@@ -1,2 +1,2 @@", "@@"])
def test_udiff_with_plain_paths_and_any_hunk_header_applies(tmp_path: Path,
                                                           hunk_header: str) -> None:
    text = (f"--- calc.py\n+++ calc.py\n{hunk_header}\n def add(a, b):\n-    return a - b\n"
            "+    return a + b\n")
    edits = _plan(tmp_path, {"calc.py": CALC}, text)
    assert edits["calc.py"].after == FIXED_ADD


def test_udiff_whole_function_replacement_places_by_content(tmp_path: Path) -> None:
    text = ("--- calc.py\n+++ calc.py\n@@ ... @@\n"
            "-def mul(a, b):\n-    total = 0\n-    for _ in range(b):\n-        total += a\n"
            "-    return total\n"
            "+def mul(a, b):\n+    return a * b\n")
    edits = _plan(tmp_path, {"calc.py": CALC}, text)
    assert edits["calc.py"].after == CALC.split("def mul")[0] + "def mul(a, b):\n    return a * b\n"


def test_udiff_several_hunks_and_files_apply_together(tmp_path: Path) -> None:
    text = ("--- calc.py\n+++ calc.py\n@@ def add(a, b): @@\n def add(a, b):\n-    return a - b\n"
            "+    return a + b\n@@ ... @@\n def mul(a, b):\n-    total = 0\n+    total = 0  # sum\n"
            "--- util.py\n+++ util.py\n@@ ... @@\n-NAME = 'x'\n+NAME = 'y'\n"
            "--- /dev/null\n+++ new.py\n@@ ... @@\n+created = True\n")
    edits = _plan(tmp_path, {"calc.py": CALC, "util.py": "NAME = 'x'\n"}, text)
    assert edits["calc.py"].after == FIXED_ADD.replace("total = 0\n", "total = 0  # sum\n")
    assert edits["util.py"].after == "NAME = 'y'\n"
    assert edits["new.py"].before is None and edits["new.py"].after == "created = True\n"


def test_udiff_hunk_not_found_is_refused_naming_its_header(tmp_path: Path) -> None:
    text = "--- calc.py\n+++ calc.py\n@@ def sub(a, b): @@\n-    return a / b\n+    return a\n"
    with pytest.raises(PatchError) as refused:
        _plan(tmp_path, {"calc.py": CALC}, text)
    assert "hunk 1 (@@ def sub(a, b): @@) of calc.py" in str(refused.value)
    assert "'    return a / b'" in str(refused.value)
