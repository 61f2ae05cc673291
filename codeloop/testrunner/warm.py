"""The warm test runner, codeloop's side: one runner process per session for pytest projects.

Owns starting the runner under the project's interpreter (the one its test command uses), its
safety checks (fork available, no threads in the runner, every warm import succeeded), the
dependency watch that restarts it (pyproject/requirements/lock files, site-packages), one run:
a child forked by the runner, its output read from a FIFO, killed as a whole process group at a
timeout (the runner, a child subreaper, then ends whatever else the child started), and the
learned warm set: what each run's child imported that is not the project's, which the runner
imports after reporting the run's exit (a runner that a learned import leaves with a thread is
replaced by one without it). Whether a warm run is trusted is decided by the session's
self-check; what is learned is remembered by the session (`on_report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from codeloop.core.errors import CodeloopError
from codeloop.testrunner.impact import PLUGIN, PLUGIN_DIR
from codeloop.testrunner.run import environment_without

RUNNER = Path(__file__).with_name("warm_child.py")
SELECT_PLUGIN = PLUGIN_DIR / f"{PLUGIN}.py"
DEPENDENCY_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "requirements.txt",
                    "requirements-dev.txt", "requirements-test.txt", "poetry.lock", "uv.lock",
                    "Pipfile.lock")
WARM_ONLY_ARGS = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]  # plugins pre-imported
_PYTHON_M_PYTEST = re.compile(r"^(\S*python[\d.]*)\s+-m\s+pytest$")
LEARNED_MAX = 4000  # modules on the runner's command line (~30 chars each: far below 128 KiB)
IMPORT_FAILED = "import failed: "  # how warm_child.py words a learned import that raised
Report = Callable[[list[str], list[tuple[str, str]]], object]  # (learned, dropped with why)


class WarmUnavailable(CodeloopError):
    """Warm running cannot be used here; the message says why (tests then run cold)."""


def interpreter(command: str) -> tuple[str, list[str], bool]:
    """(python, pytest arguments, whether the cwd goes first on sys.path) for a pytest command.

    `python -m pytest ARGS` puts the cwd on sys.path; the `pytest ARGS` script does not.
    """
    words = shlex.split(command)
    for end in (3, 1):
        head = " ".join(words[:end])
        if end == 3 and (match := _PYTHON_M_PYTEST.match(head)):
            found = shutil.which(match.group(1))
            if found:
                return found, words[3:], True
        if end == 1 and Path(head).name == "pytest" and (script := shutil.which(head)):
            first = Path(script).read_bytes()[:200].split(b"\n")[0]
            if first.startswith(b"#!") and b"python" in first:
                return first[2:].decode().strip().split()[0], words[1:], False
    raise WarmUnavailable(f"{command!r} is not a `python -m pytest` or `pytest` command")


def dependencies(root: Path) -> list[str]:
    """Distribution names the project depends on (pyproject.toml and requirements files)."""
    names: list[str] = []
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        with contextlib.suppress(tomllib.TOMLDecodeError, OSError):
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            project = data.get("project", {})
            names += project.get("dependencies", [])
            for extra in project.get("optional-dependencies", {}).values():
                names += extra
    for requirements in root.glob("requirements*.txt"):
        names += [line for line in requirements.read_text(errors="replace").splitlines()
                  if line.strip() and not line.lstrip().startswith(("#", "-"))]
    return sorted({re.split(r"[\s<>=!~;\[(]", name.strip(), maxsplit=1)[0] for name in names})


def _stamp(paths: list[Path]) -> list[float]:
    return [path.stat().st_mtime if path.exists() else 0.0 for path in paths]


class _WarmRun:
    """One run in a child of the runner: output through a FIFO, exit code from the runner."""

    def __init__(self, runner: WarmRunner, fifo: Path, fd: int) -> None:
        self.runner, self.fifo = runner, fifo
        self._output = os.fdopen(fd, "rb", buffering=0)  # closed by `close` in every case
        self._reader: asyncio.StreamReader | None = None
        self._pipe: asyncio.BaseTransport | None = None
        self._exit: int | None = None

    async def read(self) -> bytes:
        if self._reader is None:
            loop = asyncio.get_running_loop()
            self._reader = asyncio.StreamReader()
            self._pipe, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(self._reader), self._output)
        return await self._reader.read(65536)

    async def wait(self) -> int:
        if self._exit is None:
            try:
                self._exit = int((await self.runner.receive())["exit"])
            except BaseException:
                self.runner.busy.release()
                raise
            finally:
                self.fifo.unlink(missing_ok=True)
            self.runner.after_run()  # learning: the next run waits for it (`busy`), not this
        return self._exit

    def kill(self) -> None:
        """Ask the runner to kill the child with its process group (it then ends the rest).
        Not the child itself: the runner reaps it, and its pid may be another's by the time
        its exit is read here. The runner is our child until `WarmRunner.close` reaps it."""
        process = self.runner.process
        if self._exit is None and process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        else:  # never connected (or its connecting failed): close the FIFO ourselves
            self._output.close()


class WarmRunner:
    """The session's warm runner process (see warm_child.py for the other side)."""

    def __init__(self, command: str, root: Path, hidden_env: tuple[str, ...] = ()) -> None:
        self.python, _, self.path0 = interpreter(command)
        self.root = root
        self.hidden_env = hidden_env  # API keys: not in the runner either, as not in a cold run
        self.process: subprocess.Popen[bytes] | None = None
        self.warmed: list[str] = []
        self.learned: list[str] = []  # pre-imported because earlier runs imported them
        self.refused: dict[str, str] = {}  # never to be learned: module -> why
        self.on_report: Report | None = None
        self._learning: asyncio.Task[None] | None = None
        self._broken = ""  # why a runner could not be started again
        self._watched: list[Path] = []
        self._stamps: list[float] = []
        # the interpreter's site-packages, known before launching (a venv's, or the install's)
        self._site = sorted({*Path(self.python).parent.parent.glob("lib/python*/site-packages"),
                             *Path(self.python).resolve().parent.parent.glob(
                                 "lib/python*/site-packages")})
        self.watch(root)
        self.busy = asyncio.Lock()  # one run at a time: the runner answers in order
        self._fifos: Path | None = None  # made by `launch`
        self._count = 0
        self._replies: asyncio.StreamReader | None = None
        self._pipe: asyncio.ReadTransport | None = None

    def spawn(self) -> None:
        """Start the runner process now, without an event loop: the CLI does this before its
        own heavy imports, so the runner warms on the other core meanwhile. It exits by itself
        when codeloop goes away (its stdin closes)."""
        if self.process is None or self.process.returncode is not None:  # none, or ended
            try:
                known = {"modules": self.learned[:LEARNED_MAX], "refused": sorted(self.refused)}
                self.process = subprocess.Popen(
                    [self.python, str(RUNNER), json.dumps(dependencies(self.root)),
                     json.dumps(known)],
                    cwd=self.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, start_new_session=True,
                    env=environment_without(self.hidden_env))
            except OSError as exc:
                raise WarmUnavailable(f"the runner could not start: {exc}") from None

    async def launch(self) -> None:
        """Start (unless `spawn` did) and warm the runner; raises WarmUnavailable with the
        reason it cannot be used."""
        self._fifos = self._fifos or Path(tempfile.mkdtemp(prefix="codeloop-warm-"))
        for _ in range(2):  # a learned module that leaves a thread: once more, without it
            self.spawn()
            if await self._handshake():
                return
            await self._stop()
        await self.close()
        raise WarmUnavailable("learned modules keep leaving threads in the runner")

    async def _handshake(self) -> bool:
        """Wait for the runner's ready line; False when a learned module tainted it (it has
        exited: start another)."""
        assert self.process is not None and self.process.stdout is not None
        self._replies = asyncio.StreamReader()
        reader = self._replies
        self._pipe, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self.process.stdout)
        try:
            ready = await asyncio.wait_for(self.receive(), 60)
        except (TimeoutError, ValueError, KeyError, ConnectionError) as exc:
            await self.close()
            raise WarmUnavailable(f"the runner did not start ({type(exc).__name__})") from None
        reason = ("the interpreter cannot fork" if not ready["fork"]
                  else f"{ready['threads']} threads run in the runner after warming"
                  if ready["threads"] > 1
                  else "import error while warming: " + "; ".join(ready["failed"])
                  if ready["failed"] else "")
        if reason:
            await self.close()
            raise WarmUnavailable(reason)
        self.warmed = ready["warmed"]
        self._site = sorted({*self._site, *(Path(p) for p in ready["site"])})
        self.watch(self._watch_root)
        # the runs' folder: where the learned modules are imported (some keep the cwd)
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"home": str(self._watch_root)}) + "\n").encode())
        self.process.stdin.flush()
        try:
            report = await asyncio.wait_for(self.receive(), 60)
        except (TimeoutError, ValueError, ConnectionError) as exc:
            await self.close()
            raise WarmUnavailable(f"the runner did not start ({type(exc).__name__})") from None
        self._absorb(report, from_start=True)
        return not report["tainted"]

    def _absorb(self, report: dict, from_start: bool = False) -> None:
        """Take in a learning report (of the known modules, at start, or after a run)."""
        dropped = [(name, why) for name, why in report["dropped"]]
        self.refused.update(dropped)
        gone = {name for name, _ in dropped}
        if from_start:  # what it imported of the known ones; all of them, unless tainted
            self.learned = (list(report["learned"]) if report["tainted"]
                            else [name for name in self.learned if name not in gone])
        else:
            self.learned += report["learned"]
        if self.on_report is not None and (report["learned"] or dropped):
            self.on_report(list(report["learned"]), dropped)

    def after_run(self) -> None:
        """The run's exit is read: the runner now imports what the child learned, and the next
        run waits (`busy`) until it has reported."""
        self._learning = asyncio.create_task(self._learn())

    async def _learn(self) -> None:
        try:
            report = await self.receive()
            self._absorb(report)
            if report["tainted"]:  # it has exited: the next one starts without that module
                await self._stop()
                try:
                    await self.launch()
                except WarmUnavailable as exc:
                    self._broken = str(exc)
        except (ConnectionError, ValueError, KeyError):  # gone: the next start says so
            pass
        finally:
            self.busy.release()

    async def unlearn(self, why: str) -> list[str]:
        """A runner without the learned modules (they are refused from now on, `why`), for a
        self-check that differed with them; returns them. Raises WarmUnavailable."""
        async with self.busy:
            forgotten, self.learned = self.learned, []
            self.refused.update((name, why) for name in forgotten)
            await self._stop()
            await self.launch()
        return forgotten

    def watch(self, root: Path) -> None:
        """Restart-worthy changes are watched from here on in `root` (the sandbox)."""
        self._watch_root = root
        self._watched = [root / name for name in DEPENDENCY_FILES] + self._site
        self._stamps = _stamp(self._watched)

    def fingerprint(self) -> str:
        """The dependency files' contents and site-packages' mtimes, as one string."""
        parts = [p.read_bytes().hex() if p.is_file() else "-" for p in self._watched
                 if p.name in DEPENDENCY_FILES]
        return hashlib.sha1("".join(parts).encode() + str(_stamp(self._site)).encode()
                            ).hexdigest()

    def stale(self) -> bool:
        """Dependencies changed since warming (a lock file, pyproject, site-packages)."""
        return _stamp(self._watched) != self._stamps

    async def receive(self) -> dict:
        assert self._replies is not None
        line = await self._replies.readline()
        if not line:
            raise ConnectionError("the warm runner exited")
        return json.loads(line)

    async def start(self, command: str, extras: list[str], cwd: Path, env: dict[str, str]
                    ) -> _WarmRun:
        """Fork a child running pytest with the cold command's arguments plus `extras` (and
        codeloop's selection plugin when `env` names a selection)."""
        await self.busy.acquire()  # released once the run's learning is reported
        try:
            if self._broken or self.process is None or self.process.stdin is None:
                raise ConnectionError(f"the warm runner is gone {self._broken}".strip())
            self._count += 1
            assert self._fifos is not None
            fifo = self._fifos / f"run-{self._count}"
            os.mkfifo(fifo)
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open before the child writes
            _, args, _ = interpreter(command)
            request = {"args": [*args, *WARM_ONLY_ARGS, *extras], "cwd": str(cwd), "env": env,
                       "output": str(fifo), "path0": self.path0,
                       "plugin": str(SELECT_PLUGIN) if "CODELOOP_SELECT" in env else "",
                       "learn": str(self._fifos / f"learn-{self._count}")}
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()  # the runner is reading: this never waits long
            await self.receive()  # {"pid": ...}: the child runs (only the runner signals it)
        except BaseException:
            self.busy.release()
            raise
        return _WarmRun(self, fifo, fd)

    async def _stop(self) -> None:
        """End the runner process (a new one may follow: the FIFOs' folder stays)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
        if self.process is not None:
            self.process.wait()  # killed, or exited by itself (tainted): reaped at once
        if self._pipe is not None:
            self._pipe.close()
        if self.process is not None:
            self.process.stdin.close()  # type: ignore[union-attr]
            if self._pipe is None:
                self.process.stdout.close()  # type: ignore[union-attr]
        self._pipe = None

    async def close(self) -> None:
        if self._learning is not None and self._learning is not asyncio.current_task():
            self._learning.cancel()
            await asyncio.gather(self._learning, return_exceptions=True)
        await self._stop()
        if self._fifos is not None:
            shutil.rmtree(self._fifos, ignore_errors=True)
            self._fifos = None
