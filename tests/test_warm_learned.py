"""The warm runner's learned set: what a run's tests import lazily from installed packages is
pre-imported before the next run and remembered for the next session; the project's own modules
never are; a learned module that fails to import, leaves a thread or makes the self-check differ
is dropped with an event, and warm runs go on. Real venvs with packages from PyPI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from codeloop.core.events import TestRunnerChange
from codeloop.testrunner.run import TestResult, run_tests
from codeloop.testrunner.service import TestService, spawn_runner
from codeloop.testrunner.warm import WarmRunner
from tests.conftest import write_files

# in each, a module is in sys.modules before the test imports it only if the runner has it
# (the failures' messages name the module alone: pytest 8 would show sys.modules' repr, which
# differs warm and cold by design, so no self-check could ever match)
LAZY_TESTS = {"tests/test_lazy.py": (
    "import sys\n\n"
    "def test_a_six_is_there_already():\n    if 'six' not in sys.modules:\n"
    "        raise AssertionError('six is not imported yet')\n\n"
    "def test_b_printdep_is_there_already():\n    if 'printdep' not in sys.modules:\n"
    "        raise AssertionError('printdep is not imported yet')\n\n"
    "def test_c_uses_them():\n    import printdep, six\n    assert six.PY3 and printdep.LOUD\n")}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[str, Path]:
    """(python, site-packages) of a venv with pytest and six from PyPI."""
    where = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = str(where / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "-q", f"pytest=={pytest.__version__}",
                           "six==1.16.0"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"could not install pytest and six from the package index:\n{done.stderr}")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    purelib = Path(site.stdout.strip())
    # prints when imported: the runner's replies must not meet it
    (purelib / "printdep.py").write_text("print('{\"exit\": 99}')\nLOUD = True\n")
    return python, purelib


def command(python: str) -> str:
    return f"{python} -m pytest -q -p no:cacheprovider"


async def warm_runs(cmd: str, root: Path, count: int) -> tuple[list[TestResult], WarmRunner]:
    """`count` warm runs from one runner (closed after)."""
    runner = WarmRunner(cmd, root)
    await runner.launch()
    try:
        return [await run_tests(cmd, root, 60, lambda _: None, warm=runner)
                for _ in range(count)], runner
    finally:
        await runner.close()


def failed(result: TestResult) -> list[str]:
    return sorted(f.id.rpartition("::")[2] for f in result.failures)


def test_a_package_a_test_imports_lazily_is_pre_imported_in_the_next_run(tmp_path, venv):
    python, _ = venv
    root = write_files(tmp_path / "p", LAZY_TESTS)
    (first, second), runner = asyncio.run(warm_runs(command(python), root, 2))
    assert failed(first) == ["test_a_six_is_there_already", "test_b_printdep_is_there_already"]
    assert second.passed, second.output
    assert {"six", "printdep"} <= set(runner.learned)


def test_the_next_session_starts_with_what_was_learned(tmp_path, venv, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    python, _ = venv
    root = write_files(tmp_path / "p", LAZY_TESTS)
    changes: list[TestRunnerChange] = []

    async def session(runner: WarmRunner | None = None) -> tuple[list[str], TestResult]:
        service = TestService(command(python), 60, (), "auto", False, changes.append, runner)
        await service.prepare(root)
        assert service.runner is not None and service.runner.process is not None
        started_with = list(service.runner.learned)
        command_line = Path(f"/proc/{service.runner.process.pid}/cmdline").read_bytes()
        assert started_with == json.loads(command_line.split(b"\0")[3])["modules"]
        result = await run_tests(command(python), root, 60, lambda _: None,
                                 warm=service.runner)
        # a second run waits for what the first one learned (a session's end does not)
        await run_tests(command(python), root, 60, lambda _: None, warm=service.runner)
        await service.close()
        return started_with, result

    started_with, first = asyncio.run(session())
    assert started_with == [] and not first.passed
    started_with, second = asyncio.run(session())
    assert {"six", "printdep"} <= set(started_with)
    assert second.passed, second.output  # its very first run had them
    # as the CLI starts it, before the session: with them on its command line
    early = spawn_runner("auto", command(python), root, ())
    assert early is not None and early.process is not None
    started_with, third = asyncio.run(session(early))
    assert "six" in started_with and third.passed, third.output
    assert changes == []


def test_a_self_check_that_differs_with_learned_modules_is_made_again_without_them(
        tmp_path, venv, monkeypatch):
    # warm runs that learned six differ from cold ones here, by design of the test
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    python, _ = venv
    root = write_files(tmp_path / "p", LAZY_TESTS)
    changes: list[TestRunnerChange] = []

    async def session(check: bool) -> tuple[list[str], bool]:
        service = TestService(command(python), 60, (), "auto", False, changes.append)
        await service.prepare(root)
        assert service.runner is not None
        started_with = list(service.runner.learned)
        baseline = await run_tests(command(python), root, 60, lambda _: None)
        if check:
            await service.self_check(baseline, root)
        else:  # learn, as warm runs do (the second waits for what the first learned)
            for _ in range(2):
                await run_tests(command(python), root, 60, lambda _: None, warm=service.runner)
        trusted = service.trusted
        await service.close()
        return started_with, trusted

    asyncio.run(session(check=False))
    started_with, trusted = asyncio.run(session(check=True))
    assert "six" in started_with and trusted  # trusted without them
    assert [c.mode for c in changes][:1] == ["warm"]
    assert "self-check differed with" in changes[0].message and "six" in changes[0].message
    assert "self-check matched" in changes[-1].message
    started_with, _ = asyncio.run(session(check=True))
    assert "six" not in started_with  # forgotten by the memo


def test_project_modules_are_never_learned(tmp_path, venv):
    # the project's module, package and namespace package: each must be imported fresh, from
    # the file as it is now; installed in development mode (a .pth file naming its folders),
    # the runner itself could import them
    python, purelib = venv
    root = write_files(tmp_path / "p", {
        "mod.py": "VALUE = 1\n",
        "pkg/__init__.py": "", "pkg/inner.py": "VALUE = 1\n",
        "nspkg/part.py": "VALUE = 1\n",
        "src/srcmod.py": "VALUE = 1\n",
        "tests/helper_mod.py": "VALUE = 1\n",
        "tests/conftest.py": "import sys\nsys.path.insert(0, 'src')\n",
        "tests/test_fresh.py": (
            "import pathlib, sys\n\n"
            "def test_fresh():\n"
            "    names = ['mod', 'pkg', 'pkg.inner', 'nspkg', 'nspkg.part', 'srcmod',\n"
            "             'helper_mod']\n"
            "    assert [name for name in names if name in sys.modules] == []\n"
            "    import mod, pkg.inner, nspkg.part, srcmod, helper_mod\n"
            "    want = int(pathlib.Path('want').read_text())\n"
            "    assert (mod.VALUE, pkg.inner.VALUE, nspkg.part.VALUE, srcmod.VALUE,\n"
            "            helper_mod.VALUE) == (want,) * 5\n"),
        "want": "1\n",
    })

    cmd = command(python)

    async def scenario() -> tuple[TestResult, TestResult, list[str]]:
        runner = WarmRunner(cmd, root)
        await runner.launch()
        try:
            first = await run_tests(cmd, root, 60, lambda _: None, warm=runner)
            for rel in ("mod.py", "pkg/inner.py", "nspkg/part.py", "src/srcmod.py",
                        "tests/helper_mod.py", "want"):
                (root / rel).write_text((root / rel).read_text().replace("1", "2"))
            second = await run_tests(cmd, root, 60, lambda _: None, warm=runner)
            return first, second, runner.learned
        finally:
            await runner.close()

    editable = purelib / "__editable__.project.pth"
    editable.write_text(f"{root}\n{root / 'src'}\n{root / 'tests'}\n")
    try:
        first, second, learned = asyncio.run(scenario())
    finally:
        editable.unlink()
    assert first.passed, first.output
    assert second.passed, second.output
    assert not {"mod", "pkg", "nspkg", "srcmod", "helper_mod", "conftest",
                "test_fresh"} & {name.partition(".")[0] for name in learned}


async def a_session(python: str, root: Path, changes: list[TestRunnerChange]
                    ) -> tuple[list[str], TestResult]:
    """A session's runner: what it started with (the memo), and its first of two runs."""
    service = TestService(command(python), 60, (), "auto", False, changes.append)
    await service.prepare(root)
    assert service.runner is not None
    started_with = list(service.runner.learned)
    result = await run_tests(command(python), root, 60, lambda _: None, warm=service.runner)
    await run_tests(command(python), root, 60, lambda _: None, warm=service.runner)
    await service.close()
    return started_with, result


def test_a_learned_module_uninstalled_since_is_dropped_and_warm_runs_go_on(
        tmp_path, venv, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    python, purelib = venv
    installed = purelib / "gonedep.py"
    installed.write_text("VALUE = 1\n")
    root = write_files(tmp_path / "p", {"tests/test_gone.py": (
        "def test_uses_it():\n    import gonedep\n    assert gonedep.VALUE == 1\n")})
    changes: list[TestRunnerChange] = []

    try:
        assert asyncio.run(a_session(python, root, changes))[1].passed
        installed.unlink()  # uninstalled between the sessions
        started_with, result = asyncio.run(a_session(python, root, changes))
    finally:
        installed.unlink(missing_ok=True)
    assert "gonedep" not in started_with
    assert result.counts["failed"] == 1 and "ModuleNotFoundError" in result.output  # it ran
    assert [c.mode for c in changes] == ["warm"]
    assert "gonedep (import failed: ModuleNotFoundError" in changes[0].message


def test_a_learned_module_that_leaves_a_thread_is_dropped_and_the_runner_replaced(
        tmp_path, venv, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    python, purelib = venv
    (purelib / "threaddep.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n")
    root = write_files(tmp_path / "p", {"tests/test_thread.py": (
        "import sys\n\ndef test_not_pre_imported():\n"
        "    assert 'threaddep' not in sys.modules\n    import threaddep  # noqa: F401\n")})
    changes: list[TestRunnerChange] = []

    async def scenario() -> tuple[list[TestResult], int, int, dict[str, str]]:
        service = TestService(command(python), 60, (), "auto", False, changes.append)
        await service.prepare(root)
        runner = service.runner
        assert runner is not None and runner.process is not None
        first_pid = runner.process.pid
        results = [await run_tests(command(python), root, 60, lambda _: None, warm=runner)
                   for _ in range(3)]
        assert runner.process is not None
        pids = (first_pid, runner.process.pid)
        refused = dict(runner.refused)
        await service.close()
        return results, *pids, refused

    results, first_pid, last_pid, refused = asyncio.run(scenario())
    assert all(result.passed for result in results), [r.output for r in results]
    assert first_pid != last_pid  # the tainted runner was replaced, once
    assert "thread" in refused["threaddep"]
    assert [c.mode for c in changes] == ["warm"]
    assert "threaddep (importing it leaves a thread running" in changes[0].message


def test_a_learned_module_that_now_leaves_a_thread_at_start_up_is_dropped(
        tmp_path, venv, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    python, purelib = venv
    installed = purelib / "laterthread.py"
    installed.write_text("VALUE = 1\n")
    root = write_files(tmp_path / "p", {"tests/test_later.py": (
        "def test_uses_it():\n    import laterthread  # noqa: F401\n")})
    changes: list[TestRunnerChange] = []

    try:
        asyncio.run(a_session(python, root, changes))
        installed.write_text(  # a new version of it starts a thread when imported
            "import threading, time\n"
            "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n")
        learned, result = asyncio.run(a_session(python, root, changes))
    finally:
        installed.unlink(missing_ok=True)
    assert "laterthread" not in learned and result.passed, result.output
    assert [c.mode for c in changes] == ["warm"]
    assert "laterthread (importing it leaves a thread running" in changes[0].message


def test_learned_modules_are_imported_where_the_runs_run_not_in_the_users_repo(
        tmp_path, venv, monkeypatch):
    # hypothesis, for one, keeps the cwd it was imported in (its `.hypothesis` folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    python, purelib = venv
    installed = purelib / "cwddep.py"
    installed.write_text("import os\nWHERE = os.getcwd()\n")
    files = {"tests/test_where.py": (
        "import os\n\ndef test_where():\n    import cwddep\n"
        "    assert cwddep.WHERE == os.getcwd()\n")}
    repo = write_files(tmp_path / "repo", files)

    async def session(sandbox: Path) -> tuple[list[str], list[TestResult]]:
        runner = spawn_runner("auto", command(python), repo, ())  # as the CLI does
        service = TestService(command(python), 60, (), "auto", False, lambda _: None, runner)
        service.trusted_before(sandbox)  # (nothing to trust: no git tree)
        await service.prepare(repo)
        assert service.runner is not None
        learned = list(service.runner.learned)
        results = [await run_tests(command(python), sandbox, 60, lambda _: None,
                                   warm=service.runner) for _ in range(2)]
        await service.close()
        return learned, results

    try:
        _, first = asyncio.run(session(write_files(tmp_path / "sandbox-1", files)))
        learned, second = asyncio.run(session(write_files(tmp_path / "sandbox-2", files)))
    finally:
        installed.unlink(missing_ok=True)
    assert "cwddep" in learned
    assert all(result.passed for result in first + second), [r.output for r in first + second]
