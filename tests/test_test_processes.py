"""Processes a test run leaves behind: every process a run started is gone when it ends (cold
and warm, in its process group or in a session of its own), and a run ends when the test
command exits, even while something it started still holds its output open."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from codeloop import reaper
from codeloop.testrun import TestResult, run_tests
from codeloop.warm import WarmRunner
from tests.conftest import PYTEST_CMD, fix_diff, git, make_repo, run_codeloop, write_files
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

# Runs `time.sleep(120)` after writing its own pid to argv[1] (written whole, then renamed: a
# reader never sees half a pid). argv[2] is a marker unique to the test: a pid that is reused
# after the sleeper is gone is never taken for it.
SLEEPER = ("import os, sys, time\n"
           "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
           "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
           "time.sleep(120)\n")

# A pytest file whose tests leave a sleeper behind; `{dir}` and `{marker}` are filled in. Each
# run's sleepers write `<pid of pytest>-<name>`. `test_child` leaves a plain child (still in the
# run's process group); `test_daemon` leaves a daemon made the classic way, fork + setsid +
# fork, in a session of its own that no kill of the run's group reaches; `test_hang` (added
# where wanted) leaves a daemon and then never ends.
PROJECT = '''\
import os, subprocess, sys, time
from pathlib import Path

DIR = Path({dir!r})
SLEEPER = {sleeper!r}
RUN = os.getpid()


def sleeper(name):
    return [sys.executable, "-c", SLEEPER, str(DIR / f"{{RUN}}-{{name}}"), {marker!r}]


def wait_for(name):
    while not (DIR / f"{{RUN}}-{{name}}").exists():
        time.sleep(0.01)


def daemon(name):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, sleeper(name))
        os._exit(0)
    os.waitpid(pid, 0)
    wait_for(name)


def test_child():
    subprocess.Popen(sleeper("child.pid"))
    wait_for("child.pid")


def test_daemon():
    daemon("daemon.pid")
'''

HANG = '''

def test_hang():
    daemon("hanging.pid")
    time.sleep(120)
'''


def alive(pid: int, marker: str) -> bool:
    """Whether the process with this pid is still the sleeper carrying `marker`, and running
    (a zombie has ended; it only waits to be reaped by whoever inherited it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return marker.encode() in cmdline and state != "Z"


@pytest.fixture
def marker() -> str:
    return f"codeloop-leftover-{uuid.uuid4().hex}"


@pytest.fixture
def pids(tmp_path: Path, marker: str) -> Iterator[Path]:
    """Where the sleepers write their pids; any sleeper still alive at the end is killed, so a
    failing test leaves nothing behind either."""
    where = tmp_path / "pids"
    where.mkdir()
    yield where
    for pid_file in where.glob("*.pid"):
        pid = int(pid_file.read_text())
        if alive(pid, marker):
            os.kill(pid, 9)


def leaving(pids: Path, marker: str, extra: str = "") -> dict[str, str]:
    return {"tests/test_leave.py": PROJECT.format(dir=str(pids), sleeper=SLEEPER,
                                                  marker=marker) + extra}


def project(tmp_path: Path, pids: Path, marker: str, extra: str = "") -> Path:
    return write_files(tmp_path / "project", leaving(pids, marker, extra))


def left(pids: Path) -> list[str]:
    """What the sleepers wrote, without the pid of the run: ["child.pid", ...]."""
    return sorted(p.name.split("-", 1)[1] for p in pids.glob("*.pid"))


def run(command: str, root: Path, mode: str, timeout_s: float = 60,
        cancel_when: Callable[[], bool] | None = None) -> TestResult | None:
    """One run through run_tests, cold or warm (a runner of its own); with `cancel_when`, the
    run is cancelled (as by Ctrl-C) once that is true, and None is returned."""

    async def scenario() -> TestResult | None:
        runner = WarmRunner(command, root) if mode == "warm" else None
        if runner is not None:
            await runner.launch()
        try:
            running = asyncio.ensure_future(
                run_tests(command, root, timeout_s, lambda _: None, warm=runner))
            if cancel_when is None:
                # a guard only: a run that never returns fails here instead of hanging
                return await asyncio.wait_for(running, timeout_s + 60)
            while not cancel_when() and not running.done():
                await asyncio.sleep(0.05)
            running.cancel()
            await asyncio.wait({running}, timeout=30)
            assert running.cancelled()
            return None
        finally:
            if runner is not None:
                await runner.close()

    return asyncio.run(scenario())


def survivors(pids: Path, marker: str) -> list[str]:
    return [f"{pid_file.name}: {pid_file.read_text()}" for pid_file in sorted(pids.glob("*.pid"))
            if alive(int(pid_file.read_text()), marker)]


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_no_process_a_passing_run_started_survives_it(tmp_path, pids, marker, mode):
    root = project(tmp_path, pids, marker)

    result = run(PYTEST_CMD, root, mode)

    assert result is not None and result.passed, result.output
    assert result.counts["passed"] == 2
    assert left(pids) == ["child.pid", "daemon.pid"]
    assert survivors(pids, marker) == []


def test_a_session_leaves_no_process_its_test_runs_started(tmp_path, pids, marker,
                                                          isolated_env):
    # the baseline (cold), the warm self-check beside it, the verifying run (warm, trusted)
    repo = make_repo(tmp_path, "offbyone")
    write_files(repo, leaving(pids, marker))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tests that leave processes behind")
    reply = Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff(
        "offbyone")}))])
    with ScriptedModelServer([reply]) as server:
        done = run_codeloop(repo, isolated_env, "--task", "fix the pager", "--base-url",
                            server.base_url, "--test-cmd", PYTEST_CMD, "--warm-tests", "auto",
                            "--json", timeout=180)

    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    runs = [e for e in events if e["type"] == "test.done"]
    assert [r["mode"] for r in runs] == ["cold", "warm"], done.stdout
    assert left(pids) == ["child.pid"] * 3 + ["daemon.pid"] * 3  # baseline, check, verifying
    assert survivors(pids, marker) == []


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_a_run_ends_when_pytest_exits_though_a_child_holds_its_output(tmp_path, pids, marker,
                                                                        mode):
    # with -s the sleepers write to the run's own output: they hold it open for 120 s
    root = project(tmp_path, pids, marker)

    result = run(PYTEST_CMD + " -s", root, mode, timeout_s=30)

    assert result is not None and not result.timed_out, result.summary
    assert result.passed and result.counts["passed"] == 2, result.output
    assert survivors(pids, marker) == []


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_a_command_whose_background_child_holds_the_output_keeps_its_exit_code(
        tmp_path, pids, monkeypatch, platform):
    # elsewhere than on Linux there is no subreaper: the shell's process group is killed when
    # it exits (a daemon in a session of its own is out of reach there)
    if platform != sys.platform:
        monkeypatch.setattr(sys, "platform", platform)
    pid_file = pids / "background.pid"
    command = f"sleep 40 & echo $! > {shlex.quote(str(pid_file))}; echo done; exit 1"

    result = run(command, tmp_path, "cold", timeout_s=30)

    assert result is not None
    assert not result.timed_out, result.summary
    assert result.exit_code == 1
    assert result.output == "done\n"
    assert result.duration_ms < 20_000  # the sleep holding the output is not waited for
    assert not alive(int(pid_file.read_text()), "sleep")


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_a_timeout_ends_a_daemon_the_run_started(tmp_path, pids, marker, mode):
    root = project(tmp_path, pids, marker, HANG)

    result = run(PYTEST_CMD, root, mode, timeout_s=10)

    assert result is not None and result.timed_out
    assert "hanging.pid" in left(pids)
    assert survivors(pids, marker) == []


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_a_cancel_ends_a_daemon_the_run_started(tmp_path, pids, marker, mode):
    root = project(tmp_path, pids, marker, HANG)

    run(PYTEST_CMD, root, mode, cancel_when=lambda: "hanging.pid" in left(pids))

    assert "hanging.pid" in left(pids)
    assert survivors(pids, marker) == []


def test_an_orphan_that_ends_during_a_run_is_reaped_at_once(tmp_path):
    # `(sleep 0.2 &)` orphans the sleep at once; it ends while the run goes on, and is not left
    # a zombie of whoever inherited it until the run ends. $PPID: what runs the shell.
    command = ("(sleep 0.2 &); sleep 2; "
               "for p in $(cat /proc/$PPID/task/*/children); do cut -d' ' -f3 /proc/$p/stat; done")

    result = run(command, tmp_path, "cold")

    assert result is not None and result.exit_code == 0, result.output
    states = result.output.split()
    assert states and "Z" not in states  # the shell itself is listed; no zombie beside it


def test_a_cold_command_keeps_its_own_exit_code_and_environment(tmp_path, monkeypatch):
    # under the C locale a Python process adds LC_CTYPE to its environment (PEP 538): nothing
    # codeloop puts around the command may do that to the command's environment
    monkeypatch.setenv("LANG", "C")
    for name in ("LC_ALL", "LC_CTYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CODELOOP_PROBE", "a b\tc")
    command = "tr '\\0' '\\n' < /proc/self/environ; kill -TERM $$"

    result = run(command, tmp_path, "cold")

    assert result is not None
    assert result.exit_code == -15  # killed by SIGTERM, as the shell was
    seen = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
    assert seen["CODELOOP_PROBE"] == "a b\tc"
    assert seen["LANG"] == "C"
    assert "LC_CTYPE" not in seen
    assert seen["PYTHONUNBUFFERED"] == "1"


def test_both_ways_of_finding_children_agree():
    # the kernel's lists of children, and the scan of every process's parent (for kernels
    # that keep no such list) find the same processes
    started = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        found = set(reaper.children())
        assert {child.pid for child in started} <= found
        assert set(reaper._children_by_parent()) == found
    finally:
        for child in started:
            child.kill()
            child.wait()
