"""How a session runs its tests: cold, or warm once proven safe, in stages by impact.

Owns the choice between the cold command and the warm runner (`warm_tests` auto/on/off), the
self-check that trusts the warm runner only when its run of the baseline matches the cold one
test by test, restarting the runner when dependencies change, falling back to cold (with the
reason, as an event) on any doubt; a pytest run goes in stages (`stages.py`: the tests that
failed last time, those the change can affect, the rest), each stage warm or cold. Also
the runner's learned warm set across sessions (its memo, per interpreter and project), and what
is dropped from it: each drop is an event, and a self-check that differs with learned modules
is made again without them before warm runs are given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from codeloop.core.dirs import cache_dir
from codeloop.core.events import TestRunnerChange
from codeloop.core.kinds import TestMode
from codeloop.testrunner.impact import Selection
from codeloop.testrunner.run import TestResult, is_pytest, run_tests, warm_wanted
from codeloop.testrunner.stages import Stages
from codeloop.testrunner.warm import IMPORT_FAILED, Report, WarmRunner, WarmUnavailable
from codeloop.workspace.errors import SandboxError
from codeloop.workspace.git import tree_id

if TYPE_CHECKING:
    from codeloop.workspace.sandbox import Sandbox


def spawn_runner(mode: str, command: str, root: Path, hidden_env: tuple[str, ...]
                 ) -> WarmRunner | None:
    """Start the warm runner's process right away, where the session will want one; the
    session's `prepare` then only waits for it (and says why, if it cannot be used)."""
    if not warm_wanted(mode, command):
        return None
    try:
        runner = recalling(command, root, hidden_env, root)
        runner.spawn()
    except WarmUnavailable:
        return None  # `prepare` tries again and reports the reason
    return runner


def _learned_memo(runner: WarmRunner, project: Path) -> Path:
    """Where the modules learned for this interpreter and project (the user's repo) are
    remembered, beside the self-check memos: not per tree or dependency stamp, as what is
    learned outlives both; a module gone since fails to import and is dropped, saying so."""
    key = hashlib.sha1(json.dumps([runner.python, str(project.resolve())]).encode())
    return cache_dir() / "repomap" / "warm-learned" / key.hexdigest()


def recalling(command: str, root: Path, hidden_env: tuple[str, ...], project: Path
              ) -> WarmRunner:
    """A runner (not started) that starts with what earlier sessions learned (and refused) in
    `project`."""
    runner = WarmRunner(command, root, hidden_env)
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        data = json.loads(_learned_memo(runner, project).read_text(encoding="utf-8"))
        runner.learned = [str(name) for name in data["modules"]]
        runner.refused = {str(name): str(why) for name, why in data["refused"].items()}
    return runner


def remember_learned(runner: WarmRunner, project: Path) -> None:
    """Best effort, as the self-check memos. Import failures are not kept: the package may be
    installed again."""
    refused = {name: why for name, why in runner.refused.items()
               if not why.startswith(IMPORT_FAILED)}
    memo = _learned_memo(runner, project)
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({"modules": runner.learned, "refused": refused}) + "\n")


def reporter(runner: WarmRunner, project: Path, emit: Callable[[TestRunnerChange], object]
             ) -> Report:
    """What the session does with the runner's learning reports: remember the learned set, and
    say what is dropped and why."""
    def report(learned: list[str], dropped: list[tuple[str, str]]) -> None:
        remember_learned(runner, project)
        if dropped:
            emit(TestRunnerChange(mode=TestMode.WARM, message=(
                f"warm runner: learned module{'s' if len(dropped) > 1 else ''} dropped, not "
                f"pre-imported any more: {_named(dropped)}")))
    return report


async def without_learned(runner: WarmRunner, project: Path, baseline: TestResult,
                          warm: TestResult, emit: Callable[[TestRunnerChange], object]) -> bool:
    """The self-check differed with learned modules pre-imported: the runner starts again
    without them, to check again, and the memo forgets them. False when it could not start
    (it is closed)."""
    why = (f"the warm self-check differed with it pre-imported (cold: {baseline.summary}; "
           f"warm: {warm.summary})")
    try:
        forgotten = await runner.unlearn(why)
    except WarmUnavailable:
        return False
    remember_learned(runner, project)
    tops = sorted({name.partition(".")[0] for name in forgotten})
    emit(TestRunnerChange(mode=TestMode.WARM, message=(
        f"warm runner: the self-check differed with {len(forgotten)} learned modules "
        f"pre-imported (of {', '.join(tops[:12])}{', ...' if len(tops) > 12 else ''}): "
        "checking again without them, which are forgotten")))
    return True


def _named(dropped: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{name} ({why})" for name, why in dropped[:3])
    return shown + (f"; and {len(dropped) - 3} more" if len(dropped) > 3 else "")


def verdicts(result: TestResult, ran_in: Path | None = None, sandbox: Path | None = None
             ) -> dict[str, tuple[str, str]]:
    """Per failing test: (kind, message); plus the counts — what must agree warm and cold. A run
    made in a copy of the sandbox (`ran_in`) has the copy's path in messages read as `sandbox`'s."""
    moved = [] if ran_in is None or sandbox is None else [
        (str(ran_in.resolve()), str(sandbox.resolve())), (str(ran_in), str(sandbox))]

    def seen_from_sandbox(message: str) -> str:
        for old, new in moved:
            message = message.replace(old, new)
        return message

    table = {f.id: (f.kind, seen_from_sandbox(f.message)) for f in result.failures}
    table["<counts>"] = (str(sorted(result.counts.items())), str(result.exit_code))
    return table


class TestService:
    """Runs the session's test command; one instance per session."""

    __test__ = False  # not a pytest test class

    def __init__(self, command: str, timeout_s: float, hidden_env: tuple[str, ...], mode: str,
                 fail_fast: bool, emit: Callable[[TestRunnerChange], object],
                 runner: WarmRunner | None = None, verify: str = "full") -> None:
        self.command = command
        self.timeout_s = timeout_s
        self.hidden_env = hidden_env
        self.mode = mode
        self.fail_fast = fail_fast
        self.emit = emit
        self.runner = runner  # started early by the CLI (`spawn_runner`), or by `prepare`
        self.trusted = False
        self.stages = Stages(fail_fast, verify, command)
        self._key: str | None = None  # of this set-up's remembered self-check outcomes
        self._checking: asyncio.Task[None] | None = None  # the self-check, once begun
        self._checked_with: list[str] = []  # learned modules the self-check's runner had
        self._launching: asyncio.Task | None = None  # the runner's start, while it goes on
        # the user's repo, which keys the learned memo (a restart's `root` is the sandbox)
        self._project = runner.root if runner is not None else None

    @property
    def label(self) -> TestMode:
        return TestMode.WARM if self.trusted else TestMode.COLD

    @property
    def wanted(self) -> bool:
        return warm_wanted(self.mode, self.command)

    def fall_back(self, reason: str) -> None:
        """Runs are cold from now on; the event says why."""
        self.trusted = False
        self.emit(TestRunnerChange(mode=TestMode.COLD, message=reason))

    async def prepare(self, root: Path) -> None:
        """Start and warm the runner. `root` only provides the dependency files: the user's
        repo has the same ones as the sandbox."""
        if not self.wanted:
            if self.mode == "on":  # asked for by name: say why not (auto stays quiet)
                self.fall_back(f"tests run cold: warm_tests is on, but {self.command!r} is not "
                               "a pytest command (warm runs need `pytest ...` or `python -m "
                               "pytest ...`, without shell operators)")
            return
        self._launching = asyncio.current_task()
        try:
            self._project = self._project or root
            if self.runner is None:
                self.runner = recalling(self.command, root, self.hidden_env, self._project)
            self.runner.on_report = reporter(self.runner, self._project, self.emit)
            await self.runner.launch()
        except WarmUnavailable as exc:
            self.runner = None
            self.fall_back(f"tests run cold: {exc}")

    def _memo(self, kind: str, tree: Path) -> Path | None:
        """Where a self-check's outcome for this interpreter, command, tree and dependencies is
        remembered: `trust` (it matched) or `apart` (run side by side with the cold baseline,
        it did not). None when there is nothing to key it on."""
        if self.runner is None:
            return None
        if self._key is None:
            tree_key = tree_id(tree)
            if not tree_key:
                return None
            self._key = hashlib.sha1(json.dumps([self.runner.python, self.command, tree_key,
                                                 self.runner.fingerprint()]).encode()
                                     ).hexdigest()
        return cache_dir() / "repomap" / f"warm-{kind}" / self._key

    def _remember(self, kind: str, tree: Path, text: str) -> None:
        """Best effort: a cache that cannot be written only means checking again next time."""
        if (memo := self._memo(kind, tree)) is not None:
            with contextlib.suppress(OSError):
                memo.parent.mkdir(parents=True, exist_ok=True)
                memo.write_text(text + "\n")

    def trusted_before(self, sandbox: Path) -> bool:
        """A self-check already passed for exactly this set-up: trust the runner now, so even
        the baseline runs warm."""
        if self.runner is None:
            return False
        self.runner.watch(sandbox)
        trust = self._memo("trust", sandbox)
        if trust is None or not trust.is_file():
            return False
        self.trusted = True
        self.emit(TestRunnerChange(mode=TestMode.WARM, message=(
            "warm test runner trusted from an earlier self-check on the same tree, command, "
            "interpreter and dependencies")))
        return True

    def check_alone(self, sandbox: Path) -> bool:
        """A self-check run side by side with the cold baseline disagreed before on this
        set-up (a suite that binds a fixed port or path can disagree with itself run twice at
        once): check after the baseline instead, alone, in the sandbox itself."""
        apart = self._memo("apart", sandbox)
        return apart is not None and apart.is_file()

    def begin_self_check(self, warming: asyncio.Task[None],
                         baseline: asyncio.Future[TestResult], sandbox: Sandbox) -> None:
        """Once the runner is warm (a slow warm-up never delays the first turn), its run of the
        baseline must match the cold one to be trusted: beside the cold baseline, in a copy of
        the sandbox, or (`check_alone`) after it, in the sandbox itself."""
        self._checking = asyncio.create_task(
            self._check(warming, baseline, sandbox, self.check_alone(sandbox.path)))

    @property
    def self_checking(self) -> bool:
        return self._checking is not None and not self._checking.done()

    async def self_checked(self) -> None:
        """Wait for the self-check still running: trust is decided before the next run."""
        if self._checking is not None:
            await asyncio.shield(self._checking)

    async def _check(self, warming: asyncio.Task[None], baseline: asyncio.Future[TestResult],
                     sandbox: Sandbox, alone: bool) -> None:
        """Never raises: a check that fails means cold runs."""
        try:
            if alone:
                cold = await asyncio.shield(baseline)
                await warming
                await self.self_check(cold, sandbox.path)
            else:
                await self._check_beside(warming, baseline, sandbox)
        except Exception as exc:  # noqa: BLE001 - the session goes on, cold
            self.fall_back(f"tests run cold: the self-check failed ({type(exc).__name__}: {exc})")
            await self.close()

    async def _check_beside(self, warming: asyncio.Task[None],
                            baseline: asyncio.Future[TestResult], sandbox: Sandbox) -> None:
        making = sandbox.start_scratch_copy()
        try:
            copy = await asyncio.wrap_future(making)
        except asyncio.CancelledError:  # once made, the copy is still removed
            making.add_done_callback(lambda done: done.exception() is None
                                     and sandbox.discard_scratch(done.result()))
            raise
        except SandboxError as exc:
            self.fall_back(f"tests run cold: no copy of the sandbox for the self-check ({exc})")
            return
        try:
            await warming
            warm = await self.check_run(copy)
            await self.judge(warm, await asyncio.shield(baseline), copy, sandbox.path)
        finally:
            sandbox.discard_scratch(copy)

    async def self_check(self, baseline: TestResult, root: Path) -> None:
        """Trust the runner only if its run of the baseline matches the cold run exactly (the
        session runs the two side by side instead: `check_run` in a copy, then `judge`)."""
        await self.judge(await self.check_run(root), baseline, root, root)

    async def check_run(self, tree: Path) -> TestResult | None:
        """The self-check's warm run of the baseline in `tree`: the sandbox, or a copy of it at
        the same commit. None when there is no runner (any more)."""
        if self.runner is None:
            return None
        self._checked_with = list(self.runner.learned)
        return await self._warm(tree, lambda _: None)

    async def judge(self, warm: TestResult | None, baseline: TestResult, tree: Path,
                    sandbox: Path) -> None:
        """Trust the runner when its self-check run (in `tree`) matches the cold baseline (in
        `sandbox`) test by test; else fall back to cold runs, saying why."""
        if warm is None or self.runner is None:
            return
        if warm.timed_out or baseline.timed_out or not baseline.counts:
            self.fall_back("tests run cold: the warm self-check cannot be compared with the "
                           f"cold run (cold: {baseline.summary}; warm: {warm.summary})")
            await self.close()
            return
        if verdicts(warm, tree, sandbox) != verdicts(baseline):
            if self._checked_with and await without_learned(
                    self.runner, self._project or tree, baseline, warm, self.emit):
                await self.judge(await self.check_run(tree), baseline, tree, sandbox)
                return
            beside = tree != sandbox
            if beside:
                self._remember("apart", tree, f"cold: {baseline.summary}; warm: {warm.summary}")
            self.fall_back(f"tests run cold: the warm self-check differed from the cold run "
                           f"(cold: {baseline.summary}; warm: {warm.summary})" + (
                               "; they ran side by side, so the next session checks again "
                               "after the baseline, alone" if beside else ""))
            await self.close()
            return
        self.trusted = True
        self._remember("trust", tree, warm.summary)
        self.emit(TestRunnerChange(mode=TestMode.WARM, message=(
            f"warm test runner ready ({len(self.runner.warmed)} modules pre-imported, "
            f"{len(self._checked_with)} learned in earlier runs); its "
            f"self-check matched the cold baseline: {warm.duration_ms:.0f} ms warm vs "
            f"{baseline.duration_ms:.0f} ms cold")))

    async def _warm(self, root: Path, on_output: Callable[[str], None],
                    selection: Selection | None = None) -> TestResult | None:
        assert self.runner is not None
        try:
            return await run_tests(self.command, root, self.timeout_s, on_output,
                                   self.hidden_env, warm=self.runner, selection=selection)
        except (ConnectionError, OSError, ValueError, KeyError) as exc:
            self.fall_back(f"tests run cold: the warm runner failed ({type(exc).__name__}: {exc})")
            await self.close()
            return None

    async def run(self, root: Path, on_output: Callable[[str], None],
                  baseline: bool = False) -> TestResult:
        """One test run: warm when trusted, else cold; a pytest run in stages (`stages.py`)."""
        if not is_pytest(self.command):
            return await self._one(root, on_output, None)
        self.stages.recall(self._project or root)
        return await self.stages.run(root, lambda s: self._one(root, on_output, s), baseline)

    async def _one(self, root: Path, on_output: Callable[[str], None],
                   selection: Selection | None) -> TestResult:
        launching = self._launching
        if launching not in (None, asyncio.current_task()) and not launching.done():
            # a run that comes while the runner starts (the baseline that waited for it was
            # stopped for a patch's run, say) waits for it as that baseline did
            await asyncio.shield(launching)
        if self.trusted and self.runner is not None and self.runner.stale():
            await self.runner.close()
            self.runner = None
            self.emit(TestRunnerChange(mode=TestMode.WARM, message="dependencies changed: "
                                       "restarting the warm runner"))
            await self.prepare(root)
            self.trusted = self.runner is not None
        if self.trusted and self.runner is not None:
            result = await self._warm(root, on_output, selection)
            if result is not None:
                return result
        return await run_tests(self.command, root, self.timeout_s, on_output, self.hidden_env,
                               selection=selection and selection.untraced())

    async def shut_down(self) -> None:
        """The session ends: a self-check still running stops (its copy is removed), then the
        runner."""
        if self._checking is not None:
            self._checking.cancel()
            await asyncio.gather(self._checking, return_exceptions=True)
        await self.close()

    async def close(self) -> None:
        self._key = None  # a new runner may see other dependencies
        if self.runner is not None:
            await self.runner.close()
            self.runner = None
