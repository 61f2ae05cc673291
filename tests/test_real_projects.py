"""codeloop on a real project's own suite: more-itertools 10.5.0, downloaded from PyPI.

A one-line bug at line 4,412 of its 4,980-line `more.py` makes `ChunkedEvenTests` (line 4,860
of the 5,972-line `test_more.py`) fail. The opening prompt must show both, with their line
numbers, where the model can write a patch from them (issue 14: they used to be elided); then a
patch in the model's own dialect, through the built-in apply_patch tool, fixes it for real.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from codeloop.workspace.projects import copy_project
from tests.conftest import run_codeloop
from tests.scripted_server import PatchCall, Reply, ScriptedModelServer

BUG = ("    partial_size = full_size - 1\n", "    partial_size = full_size - 2\n")
SUITE = f"{sys.executable} -m pytest -q -p no:cacheprovider tests"


@pytest.fixture
def more_itertools(tmp_path: Path, pypi_sources) -> Path:
    source = shutil.copytree(pypi_sources("more-itertools", "10.5.0"), tmp_path / "source")
    more = source / "more_itertools" / "more.py"
    text = more.read_text()
    assert text.count(BUG[0]) == 1
    more.write_text(text.replace(*BUG))
    return copy_project(source, tmp_path / "more-itertools")


def _session(repo: Path, env: dict[str, str], server: ScriptedModelServer, *extra: str):
    done = run_codeloop(repo, env, "--task", "make the failing tests pass", "--base-url",
                        server.base_url, "--test-cmd", SUITE, "--warm-tests", "off", "--json",
                        *extra, timeout=180)
    return done, [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("edit_tool", ["text", "function"])
def test_the_opening_prompt_shows_the_bug_and_the_failing_test_with_line_numbers(
        more_itertools, isolated_env, edit_tool):
    with ScriptedModelServer([Reply(text="Looking.")]) as server:
        done, events = _session(more_itertools, isolated_env, server, "--model", "scripted",
                                "--edit-tool", edit_tool)
        [request] = server.chat_requests
    baseline = next(e for e in events if e["type"] == "test.done")
    assert not baseline["passed"], done.stderr
    assert any(f["id"].startswith("tests/test_more.py::ChunkedEvenTests")
               for f in baseline["failures"])
    prompt = "\n".join(str(m["content"]) for m in request.body["messages"])
    # the buggy line in its function, numbered as in the file
    assert re.search(r"\n 4412  {5}partial_size = full_size - 2\n", prompt)
    assert re.search(r"\n 4377  def chunked_even\(iterable, n\):", prompt)
    # the failing test class and its test methods
    assert re.search(r"\n 4860  class ChunkedEvenTests\(TestCase\):", prompt)
    assert re.search(r"\n 4866      def test_1\(self\):", prompt)
    assert "characters elided" not in prompt.split("more_itertools/more.py", 1)[1].split(
        "tests/test_more.py", 1)[0]


def test_a_builtin_patch_fixes_it_against_the_real_suite(more_itertools, isolated_env):
    fix = PatchCall("update_file", "more_itertools/more.py",
                    "@@ def chunked_even(iterable, n):\n"
                    "     full_size = q + (1 if r > 0 else 0)\n"
                    f"-{BUG[1]}+{BUG[0]}     num_full = length - partial_size * num_lists\n")
    with ScriptedModelServer([Reply(patch_calls=[fix])]) as server:
        done, events = _session(more_itertools, isolated_env, server, "--model",
                                "gpt-5.1-codex", "--transport", "responses-http")
    assert done.returncode == 0, done.stderr[-2000:]
    runs = [e for e in events if e["type"] == "test.done"]
    assert [r["passed"] for r in runs] == [False, True]
    assert runs[-1]["counts"].get("passed", 0) > 400  # the project's own suite, whole
