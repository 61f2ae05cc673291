"""Large files in the opening prompt: numbered windows around the failures, not head and tail.

A generated module of a few thousand lines with two bugs deep inside (one raises there, one
returns a wrong value) and a large test file whose failing tests are at its end, run with the
real pytest: the prompt must show the buggy lines, their functions and the failing tests' bodies
with line numbers, where the first and last kilobytes showed none of them.
"""

from __future__ import annotations

import asyncio

from codeloop.context import prompt
from codeloop.testrunner.run import run_tests
from tests.conftest import PYTEST_CMD, committed_repo

STEPS = 700  # 5 lines each: calc/big.py is about 3,500 lines, 80,000 characters
BUG = 650


def _module() -> str:
    parts = ['"""Generated steps."""\n\nimport math\n\n']
    for i in range(STEPS):
        body = f"x - {i}  # the bug" if i == BUG else f"x + {i}"
        parts.append(f'\ndef step_{i}(x):\n    """Step {i}."""\n    return {body}\n\n')
    parts.append('\ndef lookup(table, key):\n    """The value under `key`."""\n'
                 "    wanted = key.upper()\n    return table[wanted]\n")
    return "".join(parts)


def _tests() -> str:
    parts = ["from calc import big\n\n"]
    parts += [f"\ndef test_step_{i}():\n    assert big.step_{i}(0) == {i}\n\n"
              for i in range(STEPS) if i != BUG]
    parts.append(f"\ndef test_step_{BUG}():\n    total = big.step_{BUG}(1)\n"
                 f"    assert total == {BUG + 1}\n\n"
                 '\nclass TestLookup:\n    def test_lower_key(self):\n'
                 '        assert big.lookup({"a": 1}, "a") == 1\n')
    return "".join(parts)


def _numbered(text: str, needle: str) -> str:
    """`needle`'s line of `text` as the windows number it."""
    lines = text.split("\n")
    number = next(n for n, line in enumerate(lines, 1) if needle in line)
    return f"{number:>5}  {lines[number - 1]}"


def _block(content: str, rel: str) -> str:
    start = content.index(f"### {rel}\n")
    return content[start:content.index("\n```", content.index("```\n", start) + 4) + 4]


def test_large_files_show_numbered_windows_around_the_failures(tmp_path):
    module, tests = _module(), _tests()
    assert len(module.splitlines()) > 3000 and len(tests) > 30_000
    repo = committed_repo(tmp_path / "repo", {"calc/__init__.py": "", "calc/big.py": module,
                                              "tests/test_big.py": tests})
    result = asyncio.run(run_tests(PYTEST_CMD, repo, 120, lambda _: None))
    assert sorted(f.id for f in result.failures) == [
        "tests/test_big.py::TestLookup::test_lower_key", f"tests/test_big.py::test_step_{BUG}"]

    task = "Make the failing tests pass."
    content = prompt.opening_messages(repo, task, result, True, [])[2]["content"]
    big, test_file = _block(content, "calc/big.py"), _block(content, "tests/test_big.py")
    for block in (big, test_file):
        assert "characters elided" not in block
        assert len(block) < prompt.FILE_CHARS + prompt.FILE_TAIL + 400
        assert "not part of the file" in block and " not shown …" in block
    # the wrong value: its function, found from what the failing test calls
    for needle in (f"def step_{BUG}(x):", f'"""Step {BUG}."""', "x - 650  # the bug"):
        assert _numbered(module, needle) in big
    # the raise: the frame in the module, with its whole function
    for needle in ("def lookup(table, key):", "wanted = key.upper()", "return table[wanted]"):
        assert _numbered(module, needle) in big
    assert _numbered(module, "import math") in big
    # the failing tests' own bodies, with the class around the method
    for needle in (f"def test_step_{BUG}():", f"total = big.step_{BUG}(1)",
                   f"assert total == {BUG + 1}", "class TestLookup:", "def test_lower_key",
                   'big.lookup({"a": 1}, "a") == 1'):
        assert _numbered(tests, needle) in test_file
    lookup_line = _numbered(module, "def lookup(table, key):").split()[0]
    assert f"[lines {int(lookup_line):,}–" in big
    # windows in file order: the module's top, then the step, then lookup
    assert big.index("import math") < big.index(f"def step_{BUG}") < big.index("def lookup")


def test_a_named_definition_is_shown_and_a_file_with_nothing_to_show_keeps_head_and_tail(
        tmp_path):
    module = _module()
    repo = committed_repo(tmp_path / "repo", {"calc/__init__.py": "", "calc/big.py": module})
    no_failures = asyncio.run(run_tests("true", repo, 30, lambda _: None))
    named = prompt.opening_messages(repo, "Fix step_640 in calc/big.py: it is off by one.",
                                    no_failures, False, [])[2]["content"]
    assert _numbered(module, "def step_640(x):") in _block(named, "calc/big.py")
    assert _numbered(module, "return x + 640") in named

    plain = prompt.opening_messages(repo, "Tidy calc/big.py.", no_failures, False, [])
    assert "characters elided" in _block(plain[2]["content"], "calc/big.py")
