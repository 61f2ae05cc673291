"""The warm test runner: identical results to cold runs (sandbox projects and two real
third-party suites from PyPI), fresh project code per run, no leaked state, capture and -x,
timeouts, and the fall-back to cold runs with the reason."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from codeloop.agent.session import Session, SessionSettings
from codeloop.config import Config
from codeloop.core.events import TestDone, TestRunnerChange
from codeloop.core.stream import EventStream
from codeloop.testrunner.run import TestResult, run_tests
from codeloop.testrunner.service import TestService, spawn_runner, verdicts
from codeloop.testrunner.warm import WarmRunner
from codeloop.transport.chat import ChatCompletionsClient
from codeloop.workspace.records import worktrees_home
from tests.conftest import PYTEST_CMD, fix_diff, make_repo, write_files
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

PYPI_SUITES = ("six==1.16.0", "more-itertools==10.5.0")


def both(root: Path, command: str = PYTEST_CMD, timeout: float = 120
         ) -> tuple[TestResult, TestResult]:
    async def scenario() -> tuple[TestResult, TestResult]:
        cold = await run_tests(command, root, timeout, lambda _: None)
        runner = WarmRunner(command, root)
        await runner.launch()
        try:
            warm = await run_tests(command, root, timeout, lambda _: None, warm=runner)
        finally:
            await runner.close()
        return cold, warm

    return asyncio.run(scenario())


@pytest.mark.parametrize("project", ["offbyone", "twomodules", "newfile"])
def test_warm_and_cold_agree_on_the_sandbox_projects(tmp_path, project):
    cold, warm = both(make_repo(tmp_path, project))
    assert verdicts(warm) == verdicts(cold) and cold.failures


@pytest.fixture(scope="module")
def pypi_suites(tmp_path_factory) -> list[Path]:
    """Two pure-Python packages whose sdists ship their tests, fetched from PyPI."""
    where = tmp_path_factory.mktemp("sdists")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                           "--no-binary", ":all:", *PYPI_SUITES, "-d", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"could not download {PYPI_SUITES} from the package index:\n{done.stderr}")
    roots = []
    for archive in sorted(where.glob("*.tar.gz")):
        with tarfile.open(archive) as tar:
            tar.extractall(where, filter="data")
        roots.append(where / archive.name.removesuffix(".tar.gz"))
    return roots


@pytest.mark.parametrize("index", [0, 1], ids=["more-itertools", "six"])
def test_warm_and_cold_agree_on_real_third_party_suites(pypi_suites, index):
    root = pypi_suites[index]
    cold, warm = both(root)
    assert verdicts(warm) == verdicts(cold)
    assert cold.counts["passed"] > 20 and warm.counts == cold.counts


def test_edits_are_seen_state_does_not_leak_capture_and_x_work(tmp_path):
    root = write_files(tmp_path / "p", {
        "mod.py": "VALUE = 1\nCALLS = []\n",
        "tests/test_a.py": "import mod\n\ndef test_value():\n    mod.CALLS.append(1)\n"
                           "    print('captured out')\n    assert mod.VALUE == 2\n\n"
                           "def test_state():\n    assert mod.CALLS == [1]\n\n"
                           "def test_later():\n    assert True\n",
    })

    async def scenario() -> None:
        runner = WarmRunner(PYTEST_CMD, root)
        await runner.launch()
        try:
            first = await run_tests(PYTEST_CMD, root, 60, lambda _: None, warm=runner)
            assert first.counts == {"passed": 2, "failed": 1, "errors": 0, "skipped": 0}
            assert "captured out" in first.output  # captured, shown for the failing test
            (root / "mod.py").write_text("VALUE = 2\nCALLS = []\n")  # the patch
            second = await run_tests(PYTEST_CMD, root, 60, lambda _: None, warm=runner)
            # the edit is seen, and CALLS starts empty again in the new child
            assert second.counts["passed"] == 3 and second.exit_code == 0
            (root / "mod.py").write_text("VALUE = 3\nCALLS = []\n")
            stopped = await run_tests(PYTEST_CMD + " -x", root, 60, lambda _: None,
                                      warm=runner)
            assert stopped.counts == {"passed": 0, "failed": 1, "errors": 0, "skipped": 0}
        finally:
            await runner.close()

    asyncio.run(scenario())


def test_a_hanging_warm_test_is_killed_with_its_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    root = write_files(tmp_path / "p", {"tests/test_hang.py": (
        "import os, subprocess, time\n\ndef test_hang():\n"
        f"    child = subprocess.Popen(['sleep', '60'])\n"
        f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n    time.sleep(60)\n")})

    async def scenario() -> TestResult:
        runner = WarmRunner(PYTEST_CMD, root)
        await runner.launch()
        try:
            return await run_tests(PYTEST_CMD, root, 2, lambda _: None, warm=runner)
        finally:
            await runner.close()

    result = asyncio.run(scenario())
    assert result.timed_out
    grandchild = int(pid_file.read_text())
    try:
        os.kill(grandchild, 0)
        state = Path(f"/proc/{grandchild}/stat").read_text().split()[2]
    except (ProcessLookupError, FileNotFoundError):
        state = "gone"
    assert state in ("gone", "Z")


def test_a_warm_run_that_differs_from_cold_falls_back_with_the_reason(tmp_path):
    # this test can tell who started it: it fails only when forked from the warm runner
    root = write_files(tmp_path / "p", {"tests/test_parent.py": (
        "import os\n\ndef test_started_by_a_shell():\n"
        "    parent = open(f'/proc/{os.getppid()}/cmdline').read()\n"
        "    assert 'warm_child' not in parent\n")})
    changes: list[TestRunnerChange] = []

    async def scenario() -> tuple[TestResult, TestResult]:
        service = TestService(PYTEST_CMD, 60, (), "auto", False, changes.append)
        await service.prepare(root)
        baseline = await service.run(root, lambda _: None)
        await service.self_check(baseline, root)
        after = await service.run(root, lambda _: None)
        await service.close()
        return baseline, after

    baseline, after = asyncio.run(scenario())
    assert baseline.passed and after.passed  # never a wrong result
    assert [c.mode for c in changes] == ["cold"]
    assert "self-check differed" in changes[0].message


def test_failing_tests_run_first_and_fail_fast_stops_at_them(tmp_path):
    root = write_files(tmp_path / "p", {"tests/test_order.py": (
        "import time\n\ndef test_a_slow():\n    time.sleep(0.01)\n\n"
        "def test_b_broken():\n    assert False\n\ndef test_c_fine():\n    pass\n")})

    async def scenario() -> tuple[TestResult, TestResult]:
        service = TestService(PYTEST_CMD, 60, (), "on", True, lambda _: None)
        await service.prepare(root)
        baseline = await service.run(root, lambda _: None)
        await service.self_check(baseline, root)
        quick = await service.run(root, lambda _: None)  # only the failing one, with -x
        await service.close()
        return baseline, quick

    baseline, quick = asyncio.run(scenario())
    assert [f.id for f in baseline.failures] == ["tests/test_order.py::test_b_broken"]
    assert quick.counts == {"passed": 0, "failed": 1, "errors": 0, "skipped": 0}


def test_a_passed_self_check_is_remembered_for_the_same_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = make_repo(tmp_path, "offbyone")
    changes: list[TestRunnerChange] = []

    async def session() -> bool:
        service = TestService(PYTEST_CMD, 60, (), "auto", False, changes.append)
        await service.prepare(root)
        trusted = service.trusted_before(root)
        if not trusted:
            baseline = await service.run(root, lambda _: None)
            await service.self_check(baseline, root)
        await service.close()
        return trusted

    assert asyncio.run(session()) is False  # first: cold baseline and a self-check
    assert asyncio.run(session()) is True  # then: trusted, the baseline can run warm
    (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text() + "\n# dep\n")
    assert asyncio.run(session()) is False  # a dependency file changed: check again
    assert [c.mode for c in changes] == ["warm", "warm", "warm"]


def test_the_runner_started_before_the_session_is_the_one_used_and_holds_no_api_key(
        tmp_path, monkeypatch):
    monkeypatch.setenv("EXAMPLE_API_KEY", "sk-never-in-the-runner-1234")
    root = make_repo(tmp_path, "offbyone")
    assert spawn_runner("off", PYTEST_CMD, root, ()) is None
    assert spawn_runner("auto", "make test", root, ()) is None
    runner = spawn_runner("auto", PYTEST_CMD, root, ("EXAMPLE_API_KEY",))
    assert runner is not None and runner.process is not None
    environ = Path(f"/proc/{runner.process.pid}/environ").read_bytes().split(b"\0")
    assert any(item.startswith(b"PATH=") for item in environ)
    assert not any(b"sk-never-in-the-runner" in item for item in environ)

    async def scenario() -> tuple[bool, TestResult]:
        service = TestService(PYTEST_CMD, 60, ("EXAMPLE_API_KEY",), "auto", False,
                              lambda _: None, runner)
        await service.prepare(root)
        await service.self_check(await service.run(root, lambda _: None), root)
        same = service.runner is runner and service.trusted
        result = await service.run(root, lambda _: None)
        await service.close()
        return same, result

    same, result = asyncio.run(scenario())
    assert same and result.counts["failed"] == 2
    assert runner.process.poll() is not None  # closed with the service


def test_no_copy_for_the_self_check_means_cold_runs_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "offbyone")
    # something already sits where the session's copy would go: git refuses to make it there
    blocker = worktrees_home(repo) / "blocked-check" / "not-ours.txt"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("left here by someone else\n")
    events = EventStream()
    seen: list[object] = []
    events.subscribe(seen.append)
    reply = Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff(
        "offbyone")}))])

    async def scenario() -> int:
        with ScriptedModelServer([reply]) as server:
            config = Config(model="scripted", base_url=server.base_url, test_command=PYTEST_CMD)
            client = ChatCompletionsClient(server.base_url, "scripted", None, 1024, 30.0)
            settings = SessionSettings(session_id="blocked", task="fix the pager",
                                       test_command=PYTEST_CMD)
            return await Session(repo, config, settings, client, events).run()

    assert asyncio.run(scenario()) == 0
    changes = [e for e in seen if isinstance(e, TestRunnerChange)]
    assert [c.mode for c in changes] == ["cold"]
    assert "no copy of the sandbox for the self-check" in changes[0].message
    runs = [e for e in seen if isinstance(e, TestDone)]
    assert [(r.mode, r.counts["failed"]) for r in runs] == [("cold", 2), ("cold", 0)]
    assert blocker.read_text() == "left here by someone else\n"


@pytest.mark.parametrize("mode", ["on", "auto", "off"])
def test_on_says_why_a_command_that_is_not_pytest_runs_cold(tmp_path, mode):
    root = write_files(tmp_path / "p", {"check.sh": "exit 0\n"})
    changes: list[TestRunnerChange] = []

    async def scenario() -> TestResult:
        service = TestService("sh check.sh", 60, (), mode, False, changes.append)
        await service.prepare(root)
        result = await service.run(root, lambda _: None)
        await service.close()
        return result

    assert asyncio.run(scenario()).passed
    if mode == "on":
        assert [c.mode for c in changes] == ["cold"]
        assert "'sh check.sh' is not a pytest command" in changes[0].message
    else:
        assert changes == []


def test_a_self_check_whose_runs_time_out_is_never_trusted(tmp_path):
    # two timed-out runs look alike (killed, no results): that proves nothing about the runner
    root = write_files(tmp_path / "p", {"tests/test_slow.py": (
        "import time\n\ndef test_slow():\n    time.sleep(30)\n")})
    changes: list[TestRunnerChange] = []

    async def scenario() -> bool:
        service = TestService(PYTEST_CMD, 1.5, (), "auto", False, changes.append)
        await service.prepare(root)
        baseline = await service.run(root, lambda _: None)
        assert baseline.timed_out
        await service.self_check(baseline, root)
        trusted = service.trusted
        await service.close()
        return trusted

    assert asyncio.run(scenario()) is False
    assert [c.mode for c in changes] == ["cold"]
    assert "cannot be compared" in changes[0].message
