"""Running test commands: pytest results, exit codes, timeouts, bounded output, hidden env."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from codeloop.core.bounded import HEAD_CHARS, TAIL_CHARS, BoundedText, bound
from codeloop.testrunner import run as testrun
from codeloop.testrunner.run import run_tests

PYTEST = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider"
ELIDED = re.compile(r"\[\.\.\. (\d+) characters elided \.\.\.\]")


def run(command: str, cwd: Path, timeout_s: float = 60.0, hidden_env: tuple[str, ...] = (),
        ) -> tuple[testrun.TestResult, list[str]]:
    """Run the command through run_tests; also returns what on_output was handed."""
    seen: list[str] = []

    async def go() -> testrun.TestResult:
        # a guard only: a run that never returns fails here instead of hanging the suite
        return await asyncio.wait_for(
            run_tests(command, cwd, timeout_s, seen.append, hidden_env), 45)

    return asyncio.run(go()), seen


def python_command(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(textwrap.dedent(code))}"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small pytest project: 2 passing, 1 failing, 1 skipped, and 1 failing test in a class."""
    write(tmp_path / "pyproject.toml", "[tool.pytest.ini_options]\n")
    write(tmp_path / "calc.py", """\
        def add(a, b):
            return a + b


        def divide(a, b):
            return a / b
        """)
    write(tmp_path / "tests" / "test_x.py", """\
        import pytest

        from calc import add, divide


        def test_add():
            assert add(1, 2) == 3


        def test_add_zero():
            assert add(0, 0) == 0


        def test_name():
            assert add(1, 2) == 4


        @pytest.mark.skip(reason="not today")
        def test_skipped():
            pass


        class TestK:
            def test_m(self):
                assert divide(1, 0) == 0
        """)
    return tmp_path


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if needle in line)


# ---------------------------------------------------------------- pytest results


def test_pytest_run_counts_every_outcome(project: Path) -> None:
    result, _ = run(PYTEST, project)
    assert result.exit_code == 1
    assert not result.passed
    assert not result.timed_out
    assert result.counts == {"passed": 2, "failed": 2, "errors": 0, "skipped": 1}


def test_pytest_summary_is_pytests_own_line(project: Path) -> None:
    result, _ = run(PYTEST, project)
    assert re.fullmatch(r"2 failed, 2 passed, 1 skipped in [\d.]+s", result.summary), (
        result.summary)


def test_codeloops_own_junit_file_is_not_in_the_output(project: Path) -> None:
    # pytest 8 ends with "--- generated xml file: /tmp/codeloop-junit-.../report.xml ---"
    result, seen = run(PYTEST, project)
    assert result.counts and "generated xml file" not in result.output
    assert "generated xml file" not in "".join(seen) and "codeloop-junit" not in "".join(seen)
    assert "".join(seen).rstrip().endswith(result.summary)


def test_pytest_9s_summary_with_subtests_keeps_its_time() -> None:
    # a summary as pytest 9 writes it with unittest subtests (the counts of more-itertools
    # 10.5.0's suite with one bug); on pytest 8 there is no such line to run for
    output = ("FAILED tests/test_more.py::ChunkedEvenTests::test_evenness - AssertionError\n"
              "= 1 failed, 662 passed, 1 skipped, 8 warnings, 161 subtests passed in 3.92s =\n")
    assert testrun._summary_line(output) == (
        "1 failed, 662 passed, 1 skipped, 8 warnings, 161 subtests passed in 3.92s")


@pytest.mark.skipif(pytest.version_tuple < (9,), reason="pytest counts unittest subtests from "
                    "9.0 on (pytest-textual-snapshot's syrupy keeps the test set-up on 8.x)")
def test_a_summary_with_subtests_is_pytests_whole_line(tmp_path: Path) -> None:
    # (it used to stop at "1 passed," : the subtests' count was not a known word)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_s.py").write_text(
        "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_s(self):\n"
        "        for i in range(2):\n            with self.subTest(i=i):\n"
        "                self.assertTrue(True)\n")
    result, _ = run(PYTEST, tmp_path)
    last = result.output.strip().splitlines()[-1].strip("= ")
    assert result.summary == last and "subtests passed" in last, (result.summary, last)


def test_failing_tests_are_identified_by_pytest_node_ids(project: Path) -> None:
    result, _ = run(PYTEST, project)
    ids = [failure.id for failure in result.failures]
    assert ids == ["tests/test_x.py::test_name", "tests/test_x.py::TestK::test_m"]
    assert all(failure.kind == "failed" for failure in result.failures)


def test_failures_carry_message_and_location(project: Path) -> None:
    result, _ = run(PYTEST, project)
    by_id = {failure.id: failure for failure in result.failures}

    plain = by_id["tests/test_x.py::test_name"]
    assert "assert 3 == 4" in plain.message
    test_line = line_of(project / "tests" / "test_x.py", "assert add(1, 2) == 4")
    assert plain.location == f"tests/test_x.py:{test_line}"
    assert "assert add(1, 2) == 4" in plain.details

    in_class = by_id["tests/test_x.py::TestK::test_m"]
    assert "ZeroDivisionError" in in_class.message
    # the deepest frame: where the exception was raised
    calc_line = line_of(project / "calc.py", "return a / b")
    assert in_class.location == f"calc.py:{calc_line}"


def test_small_output_is_kept_whole_and_streamed(project: Path) -> None:
    result, seen = run(PYTEST, project)
    assert "".join(seen) == result.output
    assert "FAILED tests/test_x.py::test_name" in result.output
    assert not ELIDED.search(result.output)


def test_all_passing_pytest_run_passes(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.pytest.ini_options]\n")
    write(tmp_path / "tests" / "test_ok.py", "def test_ok():\n    assert True\n")
    result, _ = run(PYTEST, tmp_path)
    assert result.passed
    assert result.exit_code == 0
    assert result.failures == []
    assert result.counts["passed"] == 1
    assert re.fullmatch(r"1 passed in [\d.]+s", result.summary), result.summary


@pytest.fixture
def broken_project(tmp_path: Path) -> Path:
    write(tmp_path / "pyproject.toml", "[tool.pytest.ini_options]\n")
    write(tmp_path / "tests" / "test_ok.py", "def test_ok():\n    assert True\n")
    write(tmp_path / "tests" / "test_bad.py", "def oops(:\n    pass\n")
    return tmp_path


def test_collection_error_is_a_failing_result_showing_the_syntax_error(
    broken_project: Path
) -> None:
    result, _ = run(PYTEST, broken_project)
    assert not result.passed
    assert result.exit_code != 0
    assert "error" in result.summary
    assert result.counts["errors"] == 1
    [failure] = result.failures
    assert failure.kind == "errors"
    assert "SyntaxError" in failure.details
    assert "test_bad.py" in failure.details


def test_collection_error_is_identified_by_the_broken_files_node_id(
    broken_project: Path
) -> None:
    result, _ = run(PYTEST, broken_project)
    [failure] = result.failures
    # pytest's own node id for a module that failed to collect is its path
    assert failure.id == "tests/test_bad.py"


def test_collection_error_location_points_at_the_broken_file(broken_project: Path) -> None:
    result, _ = run(PYTEST, broken_project)
    [failure] = result.failures
    assert failure.location.endswith("tests/test_bad.py:1"), failure.location


# ---------------------------------------------------------------- other commands


def test_non_pytest_command_reports_its_exit_code(tmp_path: Path) -> None:
    result, _ = run("sh -c 'echo hi; exit 3'", tmp_path)
    assert result.exit_code == 3
    assert not result.passed
    assert result.summary == "exit code 3"
    assert "hi" in result.output
    assert result.counts == {}
    assert result.failures == []


def test_successful_non_pytest_command_passes(tmp_path: Path) -> None:
    result, _ = run("true", tmp_path)
    assert result.passed
    assert result.summary == "exit code 0"


def test_command_runs_in_the_given_directory(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("found-me\n")
    result, _ = run("cat marker.txt", tmp_path)
    assert result.exit_code == 0
    assert "found-me" in result.output


def test_stderr_is_captured_with_stdout(tmp_path: Path) -> None:
    result, _ = run("sh -c 'echo to-err >&2; exit 1'", tmp_path)
    assert "to-err" in result.output


# ---------------------------------------------------------------- timeouts


def _is_gone(pid: int) -> bool:
    """True once the process no longer exists, or is only a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    command = f"sh -c 'sleep 60 & echo $! > {pid_file}; sleep 60; wait'"
    result, _ = run(command, tmp_path, timeout_s=1)
    assert result.timed_out
    assert not result.passed
    assert "timed out" in result.summary
    grandchild = int(pid_file.read_text())
    for _ in range(100):
        if _is_gone(grandchild):
            break
        time.sleep(0.05)
    assert _is_gone(grandchild), f"process {grandchild} survived the timeout"


def test_a_cancel_at_any_point_of_the_start_kills_the_whole_group(tmp_path: Path) -> None:
    # the shell's child outlives a kill of the shell alone: only a kill of the group gets it
    command = "sh -c 'sleep 987; true'"

    async def cancel_after(steps: int, twice: bool) -> bool:
        task = asyncio.ensure_future(run_tests(command, tmp_path, 60, lambda _: None))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        if twice:  # a second Ctrl-C while the first is being handled
            await asyncio.sleep(0)
            task.cancel()
        await asyncio.wait({task}, timeout=10)  # a survivor holding the pipe would hang it
        return task.cancelled()

    try:
        # from before the process exists to well after it started, cancelled once and twice
        for steps, twice in [(n, twice) for n in range(8) for twice in (False, True)]:
            assert asyncio.run(cancel_after(steps, twice)), f"cancelled after {steps}: hangs"
            survivors = subprocess.run(["pgrep", "-f", "sleep 987"], capture_output=True,
                                       text=True)
            assert survivors.returncode == 1, f"cancelled after {steps}: {survivors.stdout}"
    finally:
        subprocess.run(["pkill", "-f", "sleep 987"])


# ---------------------------------------------------------------- bounded output


def test_huge_output_is_bounded_keeping_head_and_tail(tmp_path: Path) -> None:
    lines = 40_000
    command = python_command(f"""
        for i in range({lines}):
            print(f"line {{i:06d}} " + "x" * 40)
        """)
    total = lines * len("line 000000 " + "x" * 40 + "\n")
    assert total > 2_000_000

    result, seen = run(command, tmp_path)

    assert result.exit_code == 0
    assert len(result.output) < 30_000
    match = ELIDED.search(result.output)
    assert match, result.output[HEAD_CHARS - 100:HEAD_CHARS + 100]
    assert int(match.group(1)) == total - HEAD_CHARS - TAIL_CHARS
    assert result.output.startswith("line 000000 ")
    assert result.output.endswith(f"line {lines - 1:06d} " + "x" * 40 + "\n")
    streamed = "".join(seen)
    assert len(streamed) <= HEAD_CHARS
    assert result.output.startswith(streamed)


def test_multibyte_characters_split_between_reads_survive(tmp_path: Path) -> None:
    # "€" is three bytes in UTF-8; the writer pauses between its first two bytes and the last
    command = python_command("""
        import sys, time
        out = sys.stdout.buffer
        out.write(b"price: \\xe2\\x82")
        out.flush()
        time.sleep(0.3)
        out.write(b"\\xac 5\\n")
        out.flush()
        """)
    result, _ = run(command, tmp_path)
    assert result.exit_code == 0
    assert "\ufffd" not in result.output
    assert "price: € 5" in result.output


# ---------------------------------------------------------------- environment


def test_hidden_environment_variable_is_not_visible_to_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODELOOP_TEST_SECRET", "s3cr3t-value")
    monkeypatch.setenv("CODELOOP_TEST_VISIBLE", "plain-value")
    command = ("sh -c 'echo secret=${CODELOOP_TEST_SECRET-unset}; "
               "echo visible=${CODELOOP_TEST_VISIBLE-unset}'")
    result, _ = run(command, tmp_path, hidden_env=("CODELOOP_TEST_SECRET",))
    assert "secret=unset" in result.output
    assert "s3cr3t-value" not in result.output
    assert "visible=plain-value" in result.output


# ---------------------------------------------------------------- BoundedText and bound


def test_bound_leaves_short_text_alone() -> None:
    assert bound("abcdefghij", head=5, tail=5) == "abcdefghij"


def test_bound_elides_the_middle_with_a_count() -> None:
    text = "abcdefghijklmnopqrstuvwxyz"
    assert bound(text, head=5, tail=5) == "abcde\n[... 16 characters elided ...]\nvwxyz"


def test_bounded_text_add_returns_only_what_went_into_the_head() -> None:
    bounded = BoundedText(head=4, tail=3)
    assert bounded.add("ab") == "ab"
    assert bounded.add("cdef") == "cd"
    assert bounded.add("ghij") == ""
    assert bounded.head == "abcd"
    assert bounded.tail == "hij"
    assert bounded.elided == 3
    assert bounded.text() == "abcd\n[... 3 characters elided ...]\nhij"


def test_bounded_text_in_pieces_equals_bound_of_the_whole() -> None:
    text = "".join(f"<{i}>" for i in range(500))
    bounded = BoundedText(head=50, tail=70)
    for start in range(0, len(text), 7):
        bounded.add(text[start:start + 7])
    assert bounded.text() == bound(text, head=50, tail=70)
    assert bounded.elided == len(text) - 120
