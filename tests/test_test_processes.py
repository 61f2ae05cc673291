"""Processes a test run leaves behind: every process a run started is gone when it ends (cold
and warm, in its process group or in a session of its own), and a run ends when the test
command exits, even while something it started still holds its output open."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from codeloop.testrunner import reaper
from codeloop.testrunner.run import TestResult, run_tests
from codeloop.testrunner.warm import WarmRunner
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
    assert result.exit_code == -9, result.output  # killed by SIGKILL, as the timeout does
    assert "Traceback" not in result.output
    assert "hanging.pid" in left(pids)
    assert survivors(pids, marker) == []


@pytest.mark.parametrize("command", ["kill -9 $$", "echo started; kill -KILL $$"])
def test_a_shell_killed_by_sigkill_reports_that_signal(tmp_path, command):
    # SIGKILL has no handler to reset: what runs the shell dies of it all the same
    result = run(command, tmp_path, "cold")

    assert result is not None and not result.timed_out
    assert result.exit_code == -9, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_a_cancel_ends_a_daemon_the_run_started(tmp_path, pids, marker, mode):
    root = project(tmp_path, pids, marker, HANG)

    run(PYTEST_CMD, root, mode, cancel_when=lambda: "hanging.pid" in left(pids))

    assert "hanging.pid" in left(pids)
    assert survivors(pids, marker) == []


def test_a_warm_run_cancelled_as_it_starts_is_ended_and_the_next_one_runs(tmp_path, pids,
                                                                          marker):
    # the kill reaches the child through the runner, maybe before the child has a process
    # group of its own; it does not reach the next run's child
    root = project(tmp_path, pids, marker)

    async def scenario() -> TestResult:
        runner = WarmRunner(PYTEST_CMD, root)
        await runner.launch()
        try:
            first = asyncio.ensure_future(
                run_tests(PYTEST_CMD, root, 60, lambda _: None, warm=runner))
            await asyncio.sleep(0)
            first.cancel()
            await asyncio.wait({first}, timeout=30)
            assert first.cancelled()
            return await asyncio.wait_for(
                run_tests(PYTEST_CMD, root, 60, lambda _: None, warm=runner), 120)
        finally:
            await runner.close()

    second = asyncio.run(scenario())

    assert second.passed and second.counts["passed"] == 2, second.output
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


def test_a_cancel_after_the_output_reader_failed_leaves_no_unretrieved_error(tmp_path):
    # the output callback fails at the first output; the run is cancelled while it goes on:
    # that failure is dealt with by the cancel, not reported later as never retrieved
    failed: list[str] = []

    def on_output(text: str) -> None:
        failed.append(text)
        raise RuntimeError("the screen is gone")

    async def scenario() -> list[str]:
        reported: list[str] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reported.append(context["message"]))
        running = asyncio.ensure_future(
            run_tests("echo hi; sleep 60", tmp_path, 60, on_output))
        while not failed and not running.done():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # the reader has ended with the callback's error
        running.cancel()
        await asyncio.wait({running}, timeout=30)
        assert running.cancelled()
        del running
        gc.collect()
        await asyncio.sleep(0)
        return reported

    assert asyncio.run(scenario()) == []
    assert failed == ["hi\n"]


# Run in a pid namespace of its own (as its root, through a user namespace), where the next pid
# can be chosen: once the run's process is reaped, a stranger in a process group of its own
# takes its pid while codeloop still reads the run's output (held open by this script). Prints
# whether the stranger took that pid, and whether it outlived the run.
REUSE = '''
import asyncio, json, os, subprocess, sys, threading, time
from pathlib import Path
from codeloop.testrunner.run import run_tests
from codeloop.testrunner.warm import WarmRunner

mode, command, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
taken = {}


def wait_for(done):
    while not done():
        time.sleep(0.01)


def hold_and_take():
    pid_file = root / "run.pid"
    wait_for(pid_file.exists)
    pid = int(pid_file.read_text())
    taken["output"] = os.open(f"/proc/{pid}/fd/1", os.O_WRONLY)  # the run's output
    (root / "held").touch()  # the run exits now
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"))  # exited and reaped
    time.sleep(0.2)  # its exit is reported meanwhile; the output is read for 1 s more
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
    taken["stranger"] = subprocess.Popen(["sleep", "60"], start_new_session=True)
    taken["took"] = taken["stranger"].pid == pid


async def main():
    if mode == "unsupervised":
        sys.platform = "darwin"
    runner = WarmRunner(command, root) if mode == "warm" else None
    if runner is not None:
        await runner.launch()
    threading.Thread(target=hold_and_take, daemon=True).start()
    result = await run_tests(command, root, 60, lambda _: None, warm=runner)
    if runner is not None:
        await runner.close()
    print(json.dumps({"took": taken.get("took"), "exit": result.exit_code,
                      "stranger_alive": taken["stranger"].poll() is None}))


asyncio.run(main())
'''

HOLDER = '''\
import os, time
from pathlib import Path


def test_hold():
    Path("run.pid.tmp").write_text(str(os.getpid()))
    os.rename("run.pid.tmp", "run.pid")
    while not Path("held").exists():
        time.sleep(0.01)
'''


@pytest.mark.parametrize("mode", ["warm", "unsupervised"])
def test_no_signal_reaches_a_process_that_took_the_pid_of_an_ended_run(tmp_path, mode):
    # the run has exited (its exit reported) while its output is still open: nothing of the run
    # is left to kill, and its pid, no longer codeloop's, may already be a stranger's
    probe = subprocess.run(["unshare", "-Urpf", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user and pid namespaces here: {probe.stderr.decode().strip()}")
    if mode == "warm":
        root = write_files(tmp_path / "project", {"tests/test_hold.py": HOLDER})
        command = PYTEST_CMD + " -s"
    else:
        root = tmp_path
        command = "echo $$ > run.pid; while [ ! -e held ]; do sleep 0.01; done"

    done = subprocess.run(["unshare", "-Urpf", "--mount-proc", sys.executable, "-c", REUSE,
                           mode, command, str(root)], capture_output=True, text=True,
                          timeout=180)

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["took"], "the stranger did not get the run's pid: nothing was tested"
    assert seen["exit"] == 0
    assert seen["stranger_alive"]


# A supervisor as reaper.py's: the command starts daemons that go on forking while they are
# being ended; prints whether any child at all is left to the supervisor afterwards.
CHURN = '''
import os, sys
from codeloop.testrunner import reaper

reaper.become_subreaper()
reaper.hold_signals()
shell = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", sys.argv[1]], dict(os.environ),
                       setpgroup=0)
reaper.wait_exited(shell)
status = reaper.end_all(shell)
try:
    left = os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    left = None
print(os.waitstatus_to_exitcode(status), left)
'''


def test_a_cold_run_is_ended_until_no_process_of_it_is_left():
    # the children are changing all the time while they are listed: the supervisor goes on
    # until the kernel says it has no child left, not until a listing finds none
    forking = "i=0; while [ $i -lt 150 ]; do sleep 60 & i=$((i + 1)); done"  # (bounded)
    command = f"for i in 1 2 3; do (setsid sh -c {shlex.quote(forking)} &); done; sleep 0.1"

    done = subprocess.run([sys.executable, "-c", CHURN, command], capture_output=True,
                          text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "None"]


def test_a_warm_run_cancelled_while_its_output_is_being_connected_closes_it(tmp_path):
    root = write_files(tmp_path / "project", {"tests/test_hold.py": HOLDER})

    def open_on(fifo: Path) -> list[str]:
        found = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                if os.readlink(f"/proc/self/fd/{fd}").startswith(str(fifo)):  # or "(deleted)"
                    found.append(fd)
        return found

    async def scenario() -> list[list[str]]:
        runner = WarmRunner(PYTEST_CMD, root)
        await runner.launch()
        still_open = []
        try:
            for turns in range(3):  # cancelled before, while and just after connecting
                started = await runner.start(PYTEST_CMD, [], root, dict(os.environ))
                reading = asyncio.ensure_future(started.read())
                for _ in range(turns):
                    await asyncio.sleep(0)
                reading.cancel()
                await asyncio.wait({reading})
                started.kill()
                await started.wait()
                started.close()
                for _ in range(3):  # a transport closes its pipe one turn later
                    await asyncio.sleep(0)
                still_open.append(open_on(started.fifo))
        finally:
            await runner.close()
        return still_open

    assert asyncio.run(scenario()) == [[], [], []]


def test_a_session_started_with_sigchld_ignored_still_reads_every_exit_code(tmp_path,
                                                                            isolated_env):
    # inherited as ignored, SIGCHLD made the kernel reap the runs' shells itself: the cold
    # supervisor waited for an exit it was never told of, until the test timeout
    repo = make_repo(tmp_path, "offbyone")
    reply = Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff(
        "offbyone")}))])
    with ScriptedModelServer([reply]) as server:
        done = subprocess.run(
            [sys.executable, "-m", "codeloop", "--task", "fix the pager", "--base-url",
             server.base_url, "--test-cmd", PYTEST_CMD, "--test-timeout", "60", "--warm-tests",
             "auto", "--json"], cwd=repo, env=isolated_env, capture_output=True, text=True,
            timeout=180, preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))

    assert done.returncode == 0, done.stderr
    runs = [e for e in map(json.loads, done.stdout.splitlines()) if e["type"] == "test.done"]
    assert [(r["mode"], r["exit_code"], r["timed_out"]) for r in runs] == [
        ("cold", 1, False), ("warm", 0, False)], runs
