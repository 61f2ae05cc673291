"""The git sandbox: a worktree of the user's repo on its own branch, outside the repo directory.

Owns every git operation: the snapshot of HEAD plus uncommitted work (through a temporary index,
so the user's index and working tree are never touched), the worktree, one commit per applied
reply, the final diff, `--apply` onto the user's working tree, and `codeloop clean`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import git

T = TypeVar("T")
BRANCH_PREFIX = "codeloop/"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "codeloop", "GIT_AUTHOR_EMAIL": "codeloop@localhost",
    "GIT_COMMITTER_NAME": "codeloop", "GIT_COMMITTER_EMAIL": "codeloop@localhost",
}


class SandboxError(Exception):
    """A git or sandbox problem, phrased for the user."""


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run git with the sandbox's fixed identity; returns stdout."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, errors="replace",
        env={**os.environ, **_IDENTITY, **(env or {})},
    )
    if check and result.returncode != 0:
        raise SandboxError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def preload_gitpython() -> None:
    """Import GitPython on a background thread: the first commit needs it, start-up does not
    (~50 ms of imports that overlap the sandbox's git commands and the baseline run)."""
    threading.Thread(target=importlib.import_module, args=("git",), name="import-gitpython",
                     daemon=True).start()


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


def find_repo(start: Path) -> Path:
    """The top of the git repository containing `start`, or a SandboxError saying what to do."""
    result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SandboxError(
            f"{start} is not inside a git repository. codeloop works on a git sandbox of your "
            "project: cd into the project, or run `git init && git add -A && git commit -m "
            "initial` there first."
        )
    return Path(result.stdout.strip())


def worktrees_home(repo_root: Path) -> Path:
    """Where this repo's sandboxes live: under the user cache dir, never inside the repo."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(repo_root.resolve()).encode()).hexdigest()[:10]
    return base / "codeloop" / "worktrees" / f"{repo_root.name}-{digest}"


def exclude_from_git(repo_root: Path, pattern: str) -> None:
    """Add `pattern` to the repo's `.git/info/exclude` once (keeps recordings out of git)."""
    common = Path(_git(repo_root, "rev-parse", "--git-common-dir").strip())
    exclude = (repo_root / common if not common.is_absolute() else common) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    existing = exclude.read_text() if exclude.exists() else ""
    if pattern not in existing.splitlines():
        with exclude.open("a") as handle:
            handle.write(("" if existing.endswith("\n") or not existing else "\n") + pattern + "\n")


def snapshot(repo_root: Path) -> str:
    """A commit of HEAD plus all uncommitted work (tracked and untracked-not-ignored).

    Built in a temporary copy of the index, so the user's index and files stay as they are.
    """
    head = _git(repo_root, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()
    git_dir = Path(_git(repo_root, "rev-parse", "--absolute-git-dir").strip())
    with tempfile.TemporaryDirectory(prefix="codeloop-index-") as tmp:
        index = Path(tmp) / "index"
        if (git_dir / "index").exists():
            shutil.copyfile(git_dir / "index", index)
        env = {"GIT_INDEX_FILE": str(index)}
        _git(repo_root, "add", "-A", env=env)
        tree = _git(repo_root, "write-tree", env=env).strip()
    if head and _git(repo_root, "rev-parse", f"{head}^{{tree}}").strip() == tree:
        return head
    parents = ["-p", head] if head else []
    return _git(repo_root, "commit-tree", "--no-gpg-sign", tree, *parents,
                "-m", "codeloop: snapshot of uncommitted work").strip()


@dataclass
class Sandbox:
    """One session's worktree. Created once; every applied reply is a commit on `branch`."""

    repo_root: Path
    path: Path
    branch: str
    base_commit: str

    @classmethod
    def create(cls, repo_root: Path, session_id: str, at: str = "") -> Sandbox:
        """A worktree at `at` (a revision), or by default at HEAD plus uncommitted work."""
        if at:
            found = _git(repo_root, "rev-parse", "--verify", "-q", f"{at}^{{commit}}",
                         check=False).strip()
            if not found:
                raise SandboxError(f"{at!r} is not a commit in {repo_root}")
            base = found
        else:
            base = snapshot(repo_root)
        path = worktrees_home(repo_root) / session_id
        path.parent.mkdir(parents=True, exist_ok=True)
        branch = BRANCH_PREFIX + session_id
        _git(repo_root, "worktree", "add", "--quiet", "-b", branch, str(path), base)
        return cls(repo_root, path, branch, base)

    @cached_property
    def repo(self) -> git.Repo:
        """One GitPython handle for the session (its cat-file helpers are reused, then closed).
        GitPython is imported only here (see `preload_gitpython`)."""
        import git

        return git.Repo(self.path)

    def start_scratch_copy(self) -> Future[Path]:
        """A second worktree, detached at the session's starting commit, beside the sandbox,
        made on its own thread: a test run there shares no files with the sandbox (the warm
        runner's self-check runs there while the baseline runs in the sandbox).
        `discard_scratch` removes it."""
        path = self.path.with_name(self.path.name + "-check")

        def make() -> Path:
            _git(self.repo_root, "worktree", "add", "--quiet", "--detach", str(path),
                 self.base_commit)
            return path

        return _on_thread("scratch-copy", make)

    def discard_scratch(self, path: Path) -> None:
        """Remove a scratch copy on a thread of its own (it finishes even when the session is
        ending), so no one waits for it."""
        _on_thread("discard-scratch", lambda: _git(self.repo_root, "worktree", "remove",
                                                  "--force", str(path), check=False))

    def close(self) -> None:
        if "repo" in self.__dict__:
            self.repo.close()

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def commit_patch(self, patch_text: str, message: str) -> str:
        """Apply a canonical diff with `git apply --index` (all files or none) and commit it."""
        from git import GitCommandError

        repo = self.repo
        patch_file = Path(repo.git_dir) / "codeloop-turn.patch"
        patch_file.write_text(patch_text, encoding="utf-8", errors="surrogateescape")
        with repo.git.custom_environment(**_IDENTITY):
            try:
                repo.git.apply("--index", "--whitespace=nowarn", str(patch_file))
            except GitCommandError as exc:
                raise SandboxError(f"git apply refused the patch: {exc.stderr.strip()}") from None
            try:
                repo.git.commit("-q", "--no-verify", "--no-gpg-sign", "-m", message)
            except GitCommandError as exc:
                self.discard_uncommitted()
                raise SandboxError(f"git commit failed: {exc.stderr.strip()}") from None
        return repo.head.commit.hexsha

    def reword_head(self, message: str) -> str:
        """Replace the last commit's message (the test result is known only after the commit)."""
        from git import Actor, Commit

        repo = self.repo
        head = repo.head.commit
        actor = Actor("codeloop", "codeloop@localhost")
        commit = Commit.create_from_tree(
            repo, head.tree, message, parent_commits=head.parents, head=True,
            author=actor, committer=actor,
        )
        return commit.hexsha

    def undo(self) -> str:
        """Move the branch back to the previous turn's commit; returns the new head."""
        if self.head() == self.base_commit:
            raise SandboxError("nothing to undo: the sandbox is at the session's starting point")
        _git(self.path, "reset", "-q", "--hard", "HEAD~1")
        return self.head()

    def discard_uncommitted(self) -> None:
        """Bring files back to the last commit (after an interrupt mid-turn)."""
        _git(self.path, "reset", "-q", "--hard", "HEAD")

    def diff(self) -> str:
        return _git(self.path, "diff", "--binary", self.base_commit, "HEAD")

    def diffstat(self) -> str:
        return _git(self.path, "diff", "--stat", self.base_commit, "HEAD").rstrip()

    def apply_to_worktree(self) -> list[str]:
        """Apply the session's diff to the user's working tree; refuse if they touched the files.

        Returns the files changed. The user's index is left alone.
        """
        files = [f for f in _git(self.path, "diff", "--name-only", "-z", self.base_commit,
                                 "HEAD").split("\0") if f]
        changed_meanwhile = []
        for name in files:
            at_base = subprocess.run(["git", "cat-file", "blob", f"{self.base_commit}:{name}"],
                                     cwd=self.repo_root, capture_output=True)
            before = at_base.stdout if at_base.returncode == 0 else None
            user_file = self.repo_root / name
            now = user_file.read_bytes() if user_file.is_file() else None
            if now != before:
                changed_meanwhile.append(name)
        if changed_meanwhile:
            raise SandboxError(
                "not applied: you changed these files while codeloop ran: "
                + ", ".join(changed_meanwhile)
                + f". The result stays on branch {self.branch}; merge it yourself with "
                f"`git diff {self.base_commit} {self.branch} | git apply`."
            )
        if files:
            diff = subprocess.run(["git", "diff", "--binary", self.base_commit, "HEAD"],
                                  cwd=self.path, capture_output=True, check=True).stdout
            applied = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"],
                                     cwd=self.repo_root, input=diff, capture_output=True)
            if applied.returncode != 0:
                raise SandboxError("git apply failed on your working tree: "
                                   + applied.stderr.decode("utf-8", "replace").strip())
        return files


def copy_project(source: Path, dest: Path) -> Path:
    """A new git repository at `dest` holding a copy of `source`, committed (for the demo, the
    benchmarks and the tests, which all work on copies of the sample projects)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "--no-gpg-sign", "-m", f"{source.name}: sample project")
    return dest


def clean(repo_root: Path) -> list[str]:
    """Remove every codeloop worktree and branch of this repo. Returns what was removed."""
    removed: list[str] = []
    home = worktrees_home(repo_root)
    listing = _git(repo_root, "worktree", "list", "--porcelain")
    for block in listing.strip().split("\n\n"):
        fields = dict(line.split(" ", 1) for line in block.splitlines() if " " in line)
        ours = fields.get("branch", "").startswith("refs/heads/" + BRANCH_PREFIX)
        scratch = Path(fields.get("worktree", "/")).resolve().parent == home.resolve()
        if ours or scratch:  # (scratch copies are detached, on no branch)
            _git(repo_root, "worktree", "remove", "--force", fields["worktree"])
            removed.append(fields["worktree"])
    _git(repo_root, "worktree", "prune")
    refs = _git(repo_root, "for-each-ref", "--format=%(refname:short)",
                "refs/heads/" + BRANCH_PREFIX)
    for branch in refs.split():
        _git(repo_root, "branch", "-q", "-D", branch)
        removed.append(branch)
    if home.is_dir() and not any(home.iterdir()):
        home.rmdir()
    return removed
