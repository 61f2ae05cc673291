"""Tests selected by impact give the results of a full run.

A warm `TestService` (trusted by its self-check, as in a session) runs a project's suite in
stages after each change: the tests that failed last time, those the change can affect, the
rest. Each case compares that staged run with a cold full run of the same files, on the sandbox
projects and on two real suites downloaded from PyPI (six 1.16.0, more-itertools 10.5.0): the
same tests fail, and when the stages reach the end of the suite, the same tests ran with the
same counts.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from codeloop.testrunner.run import TestResult, run_tests
from codeloop.testrunner.service import TestService
from codeloop.workspace.projects import copy_project
from tests.conftest import PYTEST_CMD, fix_diff, make_repo, run_codeloop, write_files

Change = tuple[str, str, str]  # (file, old text, new text)


def _noop(_: str) -> None:
    return None


def _failing(result: TestResult) -> list[str]:
    return sorted(f.id for f in result.failures)


def _edit(root: Path, change: Change) -> None:
    path = root / change[0]
    text = path.read_text()
    assert text.count(change[1]) == 1, change
    path.write_text(text.replace(change[1], change[2]))


def staged_and_full(root: Path, changes: list[Change], verify: str = "full"
                    ) -> list[tuple[TestResult, TestResult]]:
    """Per change, in order: (the staged run after it, a cold full run of the same files)."""
    async def scenario() -> list[tuple[TestResult, TestResult]]:
        service = TestService(PYTEST_CMD, 300, (), "on", False, lambda _: None, verify=verify)
        await service.prepare(root)
        baseline = await service.run(root, _noop, baseline=True)
        await service.self_check(baseline, root)
        assert service.trusted
        pairs = []
        try:
            for change in changes:
                _edit(root, change)
                staged = await service.run(root, _noop)
                pairs.append((staged, await run_tests(PYTEST_CMD, root, 300, _noop)))
        finally:
            await service.close()
        return pairs

    return asyncio.run(scenario())


def assert_same_as_full(staged: TestResult, full: TestResult) -> None:
    """The tests the staged run ran had the full run's outcomes; a run whose stages went to the
    end of the suite is the full run."""
    ran = set(staged.ran)
    assert ran <= set(full.ran)
    assert _failing(staged) == [test for test in _failing(full) if test in ran]
    if staged.scope == "full":
        assert sorted(staged.ran) == sorted(full.ran)
        assert {k: v for k, v in staged.counts.items() if v} == \
            {k: v for k, v in full.counts.items() if v}
        assert staged.passed == full.passed


LEDGER_FIX = [("ledger/parse.py", 'int(frac or "0")', 'int(frac.ljust(2, "0"))'),
              ("ledger/report.py", "    dollars, rest = divmod(cents, 100)\n"
               "    return f\"{dollars}", "    sign = \"-\" if cents < 0 else \"\"\n"
               "    dollars, rest = divmod(abs(cents), 100)\n    return f\"{sign}{dollars}")]


def test_the_stages_of_a_fix_then_a_break_give_a_full_runs_results(tmp_path):
    root = make_repo(tmp_path, "twomodules")
    fix, fix_report = LEDGER_FIX
    # a wrong fix (still failing), the fixes, then a change that breaks a function the failing
    # tests never ran: only the map can point at the tests that now fail
    wrong = ("ledger/parse.py", 'int(frac or "0")', 'int(frac or "00")')
    undo_wrong = ("ledger/parse.py", 'int(frac or "00")', 'int(frac or "0")')
    pairs = staged_and_full(root, [wrong, undo_wrong, fix, fix_report,
                                   ("ledger/parse.py", "def parse_ledger", "def _unused():\n"
                                    "    pass\n\n\ndef parse_ledger")])
    for staged, full in pairs:
        assert_same_as_full(staged, full)
    scopes = [staged.scope for staged, _ in pairs]
    assert scopes[0] == "failing" and pairs[0][0].ran and len(pairs[0][0].ran) < len(
        pairs[0][1].ran)  # the verdict came from the failing tests alone
    assert pairs[3][0].passed and scopes[3] == "full"


CALC = {  # test_broken fails until its expectation is fixed
    "calc/__init__.py": "", "calc/add.py": "def add(a, b):\n    return a + b\n",
    "calc/mul.py": "def mul(a, b):\n    return a * b\n",
    "tests/test_add.py": "from calc.add import add\n\n\ndef test_add():\n"
                         "    assert add(1, 2) == 3\n",
    "tests/test_mul.py": "from calc.mul import mul\n\n\ndef test_mul():\n"
                         "    assert mul(2, 3) == 6\n\n\ndef test_mul_zero():\n"
                         "    assert mul(0, 3) == 0\n\n\ndef test_broken():\n"
                         "    assert mul(1, 1) == 2\n"}


def test_a_change_that_breaks_other_tests_is_caught_by_the_affected_stage(tmp_path):
    root = write_files(tmp_path / "p", CALC)
    pairs = staged_and_full(root, [
        ("tests/test_mul.py", "mul(1, 1) == 2", "mul(1, 1) == 1"),  # fixed: the map is whole
        ("calc/add.py", "a + b", "a - b"),  # breaks test_add only
    ])
    (staged1, full1), (staged2, full2) = pairs
    assert staged1.passed and staged1.scope == "full"
    assert_same_as_full(staged2, full2)
    assert staged2.scope == "affected" and staged2.ran == ["tests/test_add.py::test_add"]


def test_with_verify_affected_a_passing_change_runs_only_its_tests(tmp_path):
    root = write_files(tmp_path / "p", CALC)
    pairs = staged_and_full(root, [
        ("tests/test_mul.py", "mul(1, 1) == 2", "mul(1, 1) == 1"),
        ("calc/add.py", "return a + b", "return b + a"),
    ], verify="affected")
    (first, _), (staged, full) = pairs
    assert first.scope == "full"  # no whole map yet: the suite ran
    assert staged.passed and full.passed and staged.scope == "affected"
    assert staged.ran == ["tests/test_add.py::test_add"]


@pytest.fixture
def six(tmp_path: Path, pypi_sources) -> Path:
    return copy_project(shutil.copytree(pypi_sources("six", "1.16.0"), tmp_path / "src"),
                        tmp_path / "six")


@pytest.fixture
def more_itertools(tmp_path: Path, pypi_sources) -> Path:
    source = shutil.copytree(pypi_sources("more-itertools", "10.5.0"), tmp_path / "src")
    _edit(source, ("more_itertools/more.py", "    partial_size = full_size - 1\n",
                   "    partial_size = full_size - 2\n"))
    return copy_project(source, tmp_path / "more-itertools")


def test_six_staged_runs_match_full_runs(six):
    break_b = ("six.py", 'return s.encode("latin-1")', 'return s.encode("ascii")')
    unbreak = ("six.py", 'return s.encode("ascii")', 'return s.encode("latin-1")')
    for staged, full in staged_and_full(six, [break_b, unbreak, break_b]):
        assert_same_as_full(staged, full)


def test_more_itertools_staged_runs_match_full_runs(more_itertools):
    fix = ("more_itertools/more.py", "    partial_size = full_size - 2\n",
           "    partial_size = full_size - 1\n")
    break_chunked = ("more_itertools/more.py",
                     "    iterator = iter(partial(take, n, iter(iterable)), [])",
                     "    iterator = iter(partial(take, n + 1, iter(iterable)), [])")
    pairs = staged_and_full(more_itertools, [fix, break_chunked])
    for staged, full in pairs:
        assert_same_as_full(staged, full)
    assert pairs[0][0].passed and pairs[0][0].scope == "full"
    assert not pairs[1][0].passed


def test_a_session_tells_the_model_only_the_failing_tests_ran(tmp_path, isolated_env):
    import json

    from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

    repo = make_repo(tmp_path, "offbyone")
    # a first patch that leaves the failing tests failing (it only rewords a docstring)
    wrong = ("--- a/pager/__init__.py\n+++ b/pager/__init__.py\n@@ -1 +1 @@\n"
             '-"""Pagination helpers for slicing sequences into fixed-size pages."""\n'
             '+"""Pagination helpers: fixed-size pages of a sequence."""\n')
    replies = [Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": wrong}))]),
               Reply(tool_calls=[ToolCall("apply_patch",
                                          json.dumps({"patch": fix_diff("offbyone")}))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, "--task", "fix it", "--base-url",
                            server.base_url, "--model", "scripted", "--test-cmd", PYTEST_CMD,
                            "--warm-tests", "on", "--json")
        told = server.chat_requests[1].body["messages"][-1]["content"]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    runs = [e for e in events if e["type"] == "test.done"]
    assert [r["scope"] for r in runs] == ["full", "failing", "full"], done.stderr
    assert "Only the tests that failed last time ran" in told
    assert done.returncode == 0
