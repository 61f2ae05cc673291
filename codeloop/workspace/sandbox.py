"""The git sandbox: a worktree of the user's repo on its own branch, outside the repo directory.

Owns one session's worktree from start to end: made at HEAD plus uncommitted work (or at a
revision) with copies of the repo's submodules, a scratch copy beside it, one commit per applied
reply, `/undo`, the final diff and `--apply` onto the user's working tree. It runs git only
through `workspace.git`, and never touches the user's index.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar

from codeloop.workspace.commit import commit_edits
from codeloop.workspace.errors import SandboxError
from codeloop.workspace.git import (
    apply_diff,
    entries,
    index_modes,
    open_repo,
    reword_head,
    run_git,
)
from codeloop.workspace.leftovers import untracked_left
from codeloop.workspace.records import BRANCH_PREFIX, Record, worktrees_home
from codeloop.workspace.repo import bring_submodules, snapshot, submodules_at

if TYPE_CHECKING:
    import git

    from codeloop.edits.patch import FileEdit


T = TypeVar("T")


def _on_thread(name: str, work: Callable[[], T]) -> Future[T]:
    """Run `work` on a thread of its own, started now. The future cannot be cancelled (a
    cancel waits for it instead) and the thread is not a daemon: an interrupted codeloop still
    lets git finish, so nothing is left half-made and whoever waits learns what was made."""
    future: Future[T] = Future()
    future.set_running_or_notify_cancel()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for it
            future.set_exception(exc)

    threading.Thread(target=run, name=name).start()
    return future


def start_sandbox(repo_root: Path, session_id: str, at: str = "") -> Future[Sandbox]:
    """`Sandbox.create`, started now on its own thread: the CLI calls this before its heavy
    imports so the git work overlaps them."""
    return _on_thread("create-sandbox", lambda: Sandbox.create(repo_root, session_id, at))


@dataclass
class Sandbox:
    """One session's worktree. Created once; every applied reply is a commit on `branch`."""

    repo_root: Path
    path: Path
    branch: str
    base_commit: str
    submodules: tuple[tuple[str, str], ...] = ()  # (path, commit) as `base_commit` records them
    _record: Record | None = field(default=None, repr=False, compare=False)
    _scratch: dict[Path, Record] = field(default_factory=dict, repr=False, compare=False)
    _test_runs: list[tuple[float, float]] = field(default_factory=list, repr=False,
                                                  compare=False)  # (start, end), epoch seconds

    @classmethod
    def create(cls, repo_root: Path, session_id: str, at: str = "") -> Sandbox:
        """A worktree at `at` (a revision), or by default at HEAD plus uncommitted work, with
        the submodules the user initialized; recorded (and locked while the session runs)
        before it is made."""
        if at:
            found = run_git(repo_root, "rev-parse", "--verify", "-q", f"{at}^{{commit}}",
                            check=False).strip()
            if not found:
                raise SandboxError(f"{at!r} is not a commit in {repo_root}")
            base = found
        else:
            base = snapshot(repo_root)
        path = worktrees_home(repo_root) / session_id
        branch = BRANCH_PREFIX + session_id
        record = Record.claim(repo_root, session_id, kind="sandbox", path=str(path),
                              branch=branch, base_commit=base)
        try:
            run_git(repo_root, "worktree", "add", "--quiet", "-b", branch, str(path), base)
        except SandboxError:  # nothing was made
            record.drop()
            raise
        submodules = tuple(submodules_at(repo_root, base))
        try:
            bring_submodules(repo_root, path, list(submodules))
        except SandboxError:  # a sandbox without them would fail the user's tests: none at all
            run_git(repo_root, "worktree", "remove", "--force", str(path), check=False)
            run_git(repo_root, "branch", "-q", "-D", branch, check=False)
            record.drop()
            raise
        return cls(repo_root, path, branch, base, submodules, record)

    @cached_property
    def repo(self) -> git.Repo:
        """One GitPython handle for the session (see `git.open_repo`), closed by `close`."""
        return open_repo(self.path)

    def start_scratch_copy(self) -> Future[Path]:
        """A second worktree, detached at the session's starting commit, beside the sandbox,
        made on its own thread: a test run there shares no files with the sandbox (the warm
        runner's self-check runs there while the baseline runs in the sandbox).
        `discard_scratch` removes it."""
        path = self.path.with_name(self.path.name + "-check")

        def make() -> Path:
            self._scratch[path] = Record.claim(self.repo_root, path.name, kind="scratch",
                                               path=str(path), base_commit=self.base_commit)
            run_git(self.repo_root, "worktree", "add", "--quiet", "--detach", str(path),
                    self.base_commit)
            bring_submodules(self.repo_root, path, list(self.submodules))
            return path

        return _on_thread("scratch-copy", make)

    def discard_scratch(self, path: Path) -> None:
        """Remove a scratch copy on a thread of its own (it finishes even when the session is
        ending), so no one waits for it."""
        record = self._scratch.pop(path, None)

        def discard() -> None:
            run_git(self.repo_root, "worktree", "remove", "--force", str(path), check=False)
            if record is None:
                return
            if path.exists():  # still there: `clean` removes it later
                record.release()
            else:
                record.drop()

        _on_thread("discard-scratch", discard)

    def submodule_of(self, rel: str) -> str | None:
        """The submodule holding the sandbox path `rel` (or being it), None when it is the
        repository's own file."""
        parts = PurePosixPath(rel).parts
        for path, _ in self.submodules:
            own = PurePosixPath(path).parts
            if parts[:len(own)] == own:
                return path
        return None

    def refuse_submodule_edits(self, paths: Iterable[str]) -> None:
        """A SandboxError naming the first path that lies inside a submodule: the sandbox
        commits only to the repository's own branch, so an edit there could never be kept."""
        for rel in paths:
            submodule = self.submodule_of(rel)
            if submodule is not None:
                raise SandboxError(
                    f"refused: {rel} is inside the submodule {submodule}, a repository of its "
                    f"own that codeloop does not edit; change only this repository's files "
                    f"(or make that change in {submodule} yourself)")

    def index_modes(self, names: list[str]) -> dict[str, str]:
        """The mode the sandbox's index holds for each of `names` it tracks (what the edits
        planner needs to keep a file's mode)."""
        return index_modes(self.path, names)

    @contextlib.contextmanager
    def test_run(self) -> Iterator[None]:
        """Around each test run in the sandbox: an untracked file written meanwhile is the
        run's own (`close` notes only those as the session's)."""
        started = time.time()
        try:
            yield
        finally:
            self._test_runs.append((started, time.time()))

    def close(self) -> None:
        """The session is over: let go of the git handle and of the sandbox's lock, noting
        the untracked files last written while one of its test runs ran, so that `clean` can
        tell them (the session's own, as long as they stay as they are) from someone's work.
        (A file someone saves in the sandbox during a test run, or within MTIME_SLACK_S of
        one, is taken for the run's: telling them apart would cost a listing of the sandbox
        before and after every run, on the path of every turn.)"""
        if "repo" in self.__dict__:
            self.repo.close()
        if self._record is not None and self._record.fd is not None:
            # (the sandbox or the records removed by hand: nothing to note)
            with contextlib.suppress(OSError, SandboxError):
                self._record.write({**self._record.read(),
                                    "left": untracked_left(self.path, self._test_runs)})
            self._record.release()

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def commit_patch(self, edits: list[FileEdit], message: str) -> str:
        """Commit the planned edits, all files or none (see `commit.commit_edits`): the
        worktree then holds exactly what git's checkout of the commit writes (a CRLF checkout
        stays CRLF, new files included). On any failure, the commit's too, the branch, the
        files and the index entries it touched are as they were, or the sandbox is damaged
        (SandboxDamaged). Returns the new head."""
        commit_edits(self.path, edits, message, self.head())
        return self.head()

    def reword_head(self, message: str) -> str:
        """Replace the last commit's message (the test result is known only after the commit)."""
        return reword_head(self.repo, message)

    def undo(self) -> str:
        """Move the branch back to the previous turn's commit; returns the new head."""
        if self.head() == self.base_commit:
            raise SandboxError("nothing to undo: the sandbox is at the session's starting point")
        run_git(self.path, "reset", "-q", "--hard", "HEAD~1")
        return self.head()

    def discard_uncommitted(self) -> None:
        """Bring files back to the last commit (after an interrupt mid-turn)."""
        run_git(self.path, "reset", "-q", "--hard", "HEAD")

    def diff(self) -> str:
        return run_git(self.path, "diff", "--binary", self.base_commit, "HEAD")

    def diffstat(self) -> str:
        return run_git(self.path, "diff", "--stat", self.base_commit, "HEAD").rstrip()

    def apply_to_worktree(self) -> list[str]:
        """Apply the session's diff to the user's working tree; refuse if they touched the files.

        A file counts as untouched when git's clean form of it (their filters and eol rules:
        a CRLF checkout of an LF blob is untouched) is the blob it was at the session's start.
        `git apply` writes through the same rules, so files keep the checkout's line endings.
        Returns the files changed. The user's index is left alone.
        """
        files = [f for f in run_git(self.path, "diff", "--name-only", "--no-renames", "-z",
                                    self.base_commit, "HEAD").split("\0") if f]
        listed = run_git(self.repo_root, "ls-tree", "-z", self.base_commit, "--", *files,
                         env={"GIT_LITERAL_PATHSPECS": "1"}) if files else ""
        at_base = {name: fields[2] for fields, name in entries(listed)}
        present = [name for name in files if (self.repo_root / name).is_file()]
        hashed = (run_git(self.repo_root, "hash-object", "--", *present).split()
                  if present else [])
        now = dict(zip(present, hashed, strict=True))
        changed_meanwhile = [name for name in files if now.get(name) != at_base.get(name)]
        if changed_meanwhile:
            raise SandboxError(
                "not applied: you changed these files while codeloop ran: "
                + ", ".join(changed_meanwhile)
                + f". The result stays on branch {self.branch}; merge it yourself with "
                f"`git diff {self.base_commit} {self.branch} | git apply`."
            )
        if files:
            apply_diff(self.path, self.base_commit, self.repo_root)
        return files
