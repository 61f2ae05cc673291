"""The git sandbox: a worktree of the user's repo on its own branch, outside the repo directory.

Owns every git operation: the snapshot of HEAD plus uncommitted work (through a temporary index,
so the user's index and working tree are never touched), the worktree and copies of the repo's
submodules in it, one commit per applied reply, the final diff, `--apply` onto the user's working
tree, the record of every worktree codeloop made, and `codeloop clean`, which removes only those.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import git

    from codeloop.edits.patch import FileEdit

T = TypeVar("T")
BRANCH_PREFIX = "codeloop/"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "codeloop", "GIT_AUTHOR_EMAIL": "codeloop@localhost",
    "GIT_COMMITTER_NAME": "codeloop", "GIT_COMMITTER_EMAIL": "codeloop@localhost",
}


# The variables that tell git which repository, index or object store to use instead of the one
# found from the directory it runs in. Set by git for its hooks (and by some users' shells), they
# would turn a command meant for the sandbox onto the user's repository: codeloop always finds
# the repository from the directory, so every git it runs, and the tests, run without them.
REPO_LOCATING = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_IMPLICIT_WORK_TREE", "GIT_PREFIX",
})


def git_environment(**extra: str) -> dict[str, str]:
    """The environment for a git codeloop runs: its own, without `REPO_LOCATING`, plus `extra`
    (such as a GIT_INDEX_FILE of codeloop's own)."""
    return {**{k: v for k, v in os.environ.items() if k not in REPO_LOCATING}, **extra}


class SandboxError(Exception):
    """A git or sandbox problem, phrased for the user."""


class SandboxDamaged(SandboxError):
    """The sandbox could not be put back after a failed commit: its session cannot go on."""


class GitError(SandboxError):
    """A git command that failed; `reason` is what git said."""

    def __init__(self, args: tuple[str, ...], reason: str) -> None:
        super().__init__(f"git {' '.join(args)} failed: {reason}")
        self.reason = reason


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run git with the sandbox's fixed identity; returns stdout. In a session of its own: a
    Ctrl-C at the terminal is codeloop's to act on, not a kill of git halfway through."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, errors="replace",
            env=git_environment(**_IDENTITY, **(env or {})), start_new_session=True,
        )
    except OSError as exc:  # git missing, or `cwd` gone (a sandbox removed under a session)
        raise SandboxError(f"cannot run git in {cwd}: {exc.strerror or exc}") from None
    if check and result.returncode != 0:
        raise GitError(args, result.stderr.strip())
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
    """The top of the git repository containing `start`, or a SandboxError saying what to do.
    Found from the directory alone, as every git codeloop runs finds it: a GIT_DIR or
    GIT_WORK_TREE in the environment (inside a git hook) does not choose another."""
    if not start.exists():
        raise SandboxError(f"no such directory: {start}")
    if not start.is_dir():
        raise SandboxError(f"not a directory: {start}")
    try:  # (each answer on a line of its own; --show-toplevel fails without a working tree)
        result = subprocess.run(["git", "rev-parse", "--is-bare-repository",
                                 "--is-inside-git-dir", "--absolute-git-dir", "--show-toplevel"],
                                cwd=start, capture_output=True, text=True,
                                env=git_environment(),  # (found from `start`, as `_git` finds)
                                start_new_session=True)  # (as `_git`: not a Ctrl-C's to kill)
    except OSError as exc:  # git missing, or the directory not readable
        raise SandboxError(f"cannot run git in {start}: {exc.strerror or exc}") from None
    if result.returncode == 0:
        return Path(result.stdout.splitlines()[-1])
    answers = result.stdout.splitlines()
    if answers[:1] == ["true"]:
        git_dir = answers[2] if len(answers) > 2 else str(start)
        raise SandboxError(
            f"{git_dir} is a bare repository: it has no working tree, and codeloop needs one "
            f"to run your tests in. Clone it (`git clone {git_dir} <dir>`) and run codeloop in "
            "the clone.")
    if answers[1:2] == ["true"]:
        raise SandboxError(
            f"{start} is inside the .git directory of a repository: run codeloop from its "
            "working tree instead.")
    raise SandboxError(
        f"{start} is not inside a git repository. codeloop works on a git sandbox of your "
        "project: cd into the project, or run `git init && git add -A && git commit -m "
        "initial` there first."
    )


def worktrees_home(repo_root: Path) -> Path:
    """Where this repo's sandboxes live: under the user cache dir, never inside the repo; one
    place for the repository, whichever of its worktrees codeloop runs in."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = _repository_key(repo_root.resolve())
    digest = hashlib.sha1(str(key).encode()).hexdigest()[:10]
    return base / "codeloop" / "worktrees" / f"{key.name}-{digest}"


@lru_cache(maxsize=64)  # (asked for each record and worktree made: one git run)
def _repository_key(repo_root: Path) -> Path:
    """The main worktree of the repository that `repo_root` is a worktree of (`repo_root`
    itself unless it is a linked one), or its git directory when that lies elsewhere."""
    common = (repo_root / _git(repo_root, "rev-parse", "--git-common-dir").strip()).resolve()
    return common.parent if common.name == ".git" else common


def records_home(repo_root: Path) -> Path:
    """Where codeloop writes down each worktree it makes for this repo: `clean` removes only
    what is recorded here."""
    return worktrees_home(repo_root) / ".records"


def _hold_lock(path: Path, wait: bool) -> int | None:
    """A descriptor holding an exclusive flock on `path` (made if missing), or None when
    another process holds it and `wait` is false. The kernel lets go of the lock when the
    process ends, however it ends; the descriptor is not inherited by test processes."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # (`clean` removed the folder, empty, just now: make it again)
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # `clean` removed that file meanwhile: lock the one there now


class _Record:
    """What codeloop made for one worktree (`<name>.json`), and the lock (`<name>.lock`) that
    its session holds while it runs. The lock is taken before the record is first written,
    so `clean` never finds a record whose session could still be starting."""

    def __init__(self, home: Path, name: str, fd: int | None) -> None:
        self.path = home / f"{name}.json"
        self.lock_path = home / f"{name}.lock"
        self.fd: int | None = fd

    @classmethod
    def claim(cls, repo_root: Path, name: str, **fields: Any) -> _Record:
        """Written before the worktree exists: whatever happens next, `clean` knows of it."""
        home = records_home(repo_root)
        fd = _hold_lock(home / f"{name}.lock", wait=True)
        assert fd is not None  # (waiting, it always gets the lock)
        record = cls(home, name, fd)
        record.write({**fields, "pid": os.getpid(),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return record

    @classmethod
    def open(cls, path: Path) -> _Record:
        """The record at `path`, its lock held by us; `fd` is None while its session runs."""
        return cls(path.parent, path.stem, _hold_lock(path.with_suffix(".lock"), wait=False))

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, data: dict[str, Any]) -> None:
        """Replace the record whole (a reader never sees half of it)."""
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(data, indent=1))
        partial.replace(self.path)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def drop(self) -> None:
        """Forget it: everything it recorded is gone (the lock file last, while still held)."""
        self.path.unlink(missing_ok=True)
        self.lock_path.unlink(missing_ok=True)
        self.release()


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
    """A commit of HEAD plus all uncommitted work (tracked and untracked-not-ignored), the
    uncommitted work inside initialized submodules included: each submodule is snapshotted
    the same way and the commit records that snapshot.

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
        for path in _initialized_submodules(repo_root, env):
            _git(repo_root, "update-index", "--cacheinfo",
                 f"160000,{snapshot(repo_root / path)},{path}", env=env)
        tree = _git(repo_root, "write-tree", env=env).strip()
    if head and _git(repo_root, "rev-parse", f"{head}^{{tree}}").strip() == tree:
        return head
    parents = ["-p", head] if head else []
    return _git(repo_root, "commit-tree", "--no-gpg-sign", tree, *parents,
                "-m", "codeloop: snapshot of uncommitted work").strip()


def _initialized_submodules(checkout: Path, env: dict[str, str]) -> list[str]:
    """The submodules of the user's `checkout` that they have initialized (checked out): those
    `.gitmodules` names that are submodules in the index `env` points to and hold a `.git`."""
    if not (checkout / ".gitmodules").is_file():
        return []
    paths = _listed_submodules(checkout, "-f", ".gitmodules")
    staged = _git(checkout, "ls-files", "-s", "-z", "--", *paths, env=env) if paths else ""
    return [path for path, _ in _gitlinks(staged, 1) if (checkout / path / ".git").exists()]


def _submodules_at(repo: Path, commit: str) -> list[tuple[str, str]]:
    """(path, commit) of each submodule that `commit` records, initialized or not."""
    paths = _listed_submodules(repo, "--blob", f"{commit}:.gitmodules")
    return _gitlinks(_git(repo, "ls-tree", "-z", commit, "--", *paths), 2) if paths else []


def _listed_submodules(cwd: Path, *source: str) -> list[str]:
    """The submodule paths a `.gitmodules` names (`source`: its file or its blob)."""
    listed = _git(cwd, "config", "-z", *source, "--get-regexp", r"^submodule\..*\.path$",
                  check=False)  # (fails when there is no such file: no submodules)
    return [entry.split("\n", 1)[1] for entry in listed.split("\0") if "\n" in entry]


def _entries(listing: str) -> list[tuple[list[str], str]]:
    """(fields, path) of each entry of `git ls-files -s -z` or `git ls-tree -z` output: the
    mode, object id (and stage or type) before the tab, the literal path after it."""
    return [(meta.split(), path) for meta, tab, path in
            (entry.partition("\t") for entry in listing.split("\0")) if tab]


def _gitlinks(listing: str, commit_field: int) -> list[tuple[str, str]]:
    """(path, commit) of the submodule entries (mode 160000) in `git ls-files -s -z` or
    `git ls-tree -z` output (the commit is field 1 of the one, 2 of the other)."""
    return [(path, fields[commit_field]) for fields, path in _entries(listing)
            if fields[0] == "160000"]


def index_modes(root: Path, names: list[str]) -> dict[str, str]:
    """The mode git's index at `root` holds for each of `names` it tracks."""
    listed = _git(root, "ls-files", "-s", "-z", "--", *names,
                  env={"GIT_LITERAL_PATHSPECS": "1"}, check=False)
    return {path: fields[0] for fields, path in _entries(listed)}


def _bring_submodules(theirs: Path, ours: Path, submodules: list[tuple[str, str]]) -> None:
    """Fill the submodule paths of the worktree `ours` from the user's checkout `theirs`: for
    each submodule they initialized, a clone of their local submodule repository (`--local`:
    no network, nothing written into their repo, and it goes with the worktree), checked out at
    the commit the worktree records; then its own. `--local` hard-links their object files
    (a copy when the cache is on another filesystem), so a sandbox stays whole when their git
    prunes what nothing of theirs names, such as the snapshot of their uncommitted work there;
    `--shared` would borrow the objects, and lose those."""
    for path, commit in submodules:
        if not (theirs / path / ".git").exists():
            continue  # not initialized in their checkout either
        source = _git(theirs / path, "rev-parse", "--absolute-git-dir").strip()
        if not _git(theirs / path, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}",
                    check=False).strip():
            raise SandboxError(f"submodule {path}: commit {commit[:12]} is not in your clone "
                               f"of it ({source}); fetch it there first")
        _git(ours, "clone", "--quiet", "--local", "--no-checkout", source, path)
        _git(ours / path, "checkout", "--quiet", "--detach", commit)
        _bring_submodules(theirs / path, ours / path, _submodules_at(ours / path, commit))


@dataclass
class Sandbox:
    """One session's worktree. Created once; every applied reply is a commit on `branch`."""

    repo_root: Path
    path: Path
    branch: str
    base_commit: str
    submodules: tuple[tuple[str, str], ...] = ()  # (path, commit) as `base_commit` records them
    _record: _Record | None = field(default=None, repr=False, compare=False)
    _scratch: dict[Path, _Record] = field(default_factory=dict, repr=False, compare=False)
    _test_runs: list[tuple[float, float]] = field(default_factory=list, repr=False,
                                                  compare=False)  # (start, end), epoch seconds

    @classmethod
    def create(cls, repo_root: Path, session_id: str, at: str = "") -> Sandbox:
        """A worktree at `at` (a revision), or by default at HEAD plus uncommitted work, with
        the submodules the user initialized; recorded (and locked while the session runs)
        before it is made."""
        if at:
            found = _git(repo_root, "rev-parse", "--verify", "-q", f"{at}^{{commit}}",
                         check=False).strip()
            if not found:
                raise SandboxError(f"{at!r} is not a commit in {repo_root}")
            base = found
        else:
            base = snapshot(repo_root)
        path = worktrees_home(repo_root) / session_id
        branch = BRANCH_PREFIX + session_id
        record = _Record.claim(repo_root, session_id, kind="sandbox", path=str(path),
                               branch=branch, base_commit=base)
        try:
            _git(repo_root, "worktree", "add", "--quiet", "-b", branch, str(path), base)
        except SandboxError:  # nothing was made
            record.drop()
            raise
        submodules = tuple(_submodules_at(repo_root, base))
        try:
            _bring_submodules(repo_root, path, list(submodules))
        except SandboxError:  # a sandbox without them would fail the user's tests: none at all
            _git(repo_root, "worktree", "remove", "--force", str(path), check=False)
            _git(repo_root, "branch", "-q", "-D", branch, check=False)
            record.drop()
            raise
        return cls(repo_root, path, branch, base, submodules, record)

    @cached_property
    def repo(self) -> git.Repo:
        """One GitPython handle for the session (its cat-file helpers are reused, then closed).
        GitPython is imported only here (see `preload_gitpython`).

        Its git processes run in a session of their own, away from the terminal: a Ctrl-C
        typed there signals the whole foreground process group, and must cancel codeloop's turn,
        not kill the long-lived cat-file helpers that the next `/undo` or commit writes to."""
        import git

        class DetachedGit(git.Git):
            def execute(self, command: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                return super().execute(command, **{"start_new_session": True, **kwargs})

        class DetachedRepo(git.Repo):
            GitCommandWrapperType = DetachedGit

        handle = DetachedRepo(self.path)
        # its commands find the sandbox whatever GIT_DIR says (see REPO_LOCATING): GitPython
        # can only add to the environment, so it is told the sandbox's own
        handle.git.update_environment(GIT_DIR=handle.git_dir, GIT_WORK_TREE=str(self.path))
        return handle

    def start_scratch_copy(self) -> Future[Path]:
        """A second worktree, detached at the session's starting commit, beside the sandbox,
        made on its own thread: a test run there shares no files with the sandbox (the warm
        runner's self-check runs there while the baseline runs in the sandbox).
        `discard_scratch` removes it."""
        path = self.path.with_name(self.path.name + "-check")

        def make() -> Path:
            self._scratch[path] = _Record.claim(self.repo_root, path.name, kind="scratch",
                                                path=str(path), base_commit=self.base_commit)
            _git(self.repo_root, "worktree", "add", "--quiet", "--detach", str(path),
                 self.base_commit)
            _bring_submodules(self.repo_root, path, list(self.submodules))
            return path

        return _on_thread("scratch-copy", make)

    def discard_scratch(self, path: Path) -> None:
        """Remove a scratch copy on a thread of its own (it finishes even when the session is
        ending), so no one waits for it."""
        record = self._scratch.pop(path, None)

        def discard() -> None:
            _git(self.repo_root, "worktree", "remove", "--force", str(path), check=False)
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
                                    "left": _untracked_left(self.path, self._test_runs)})
            self._record.release()

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def commit_patch(self, edits: list[FileEdit], message: str) -> str:
        """Commit the planned edits, all files or none: write each file's new content into the
        worktree, stage it through git's own clean filters and eol rules, commit (without the
        user's hooks: a sandbox commit is codeloop's, not theirs), then check the files out
        again, so the worktree holds exactly what git's checkout of the commit writes (a CRLF
        checkout stays CRLF, new files included). On any failure, the commit's too, the steps
        taken are undone: the branch, the files and the index entries it touched are as they
        were, or the sandbox is damaged."""
        touched = [name for edit in edits for name in (edit.renamed_from, edit.path) if name]
        saved = {name: _saved(self.path / name) for name in touched}
        previous = self.head()
        env = {"GIT_LITERAL_PATHSPECS": "1"}
        staged = False
        try:
            for edit in edits:
                if edit.renamed_from:
                    (self.path / edit.renamed_from).unlink()
                _write(self.path / edit.path, edit.after, edit.mode_after)
            # (plumbing: no pathspecs, no .gitignore, but the clean filters and eol rules; a
            # new file is written with LF and gets the checkout's line endings below, which
            # core.safecrlf would call irreversible)
            _git(self.path, "-c", "core.safecrlf=false", "update-index", "--add", "--remove",
                 "--", *touched, env=env)
            staged = True  # (a failed update-index writes no index: git replaces it whole)
            flips: dict[str, list[str]] = {"+x": [], "-x": []}
            for edit in edits:
                if edit.after is not None and edit.mode_after != edit.mode_before:
                    flips["+x" if edit.mode_after == "100755" else "-x"].append(edit.path)
            for flip, names in flips.items():  # (for a repo with core.fileMode off)
                if names:
                    _git(self.path, "update-index", f"--chmod={flip}", "--", *names, env=env)
            # (--no-verify alone still runs prepare-commit-msg and post-commit)
            _git(self.path, "-c", "core.hooksPath=/dev/null", "commit", "-q", "--no-verify",
                 "--no-gpg-sign", "-m", message, env=env)
            _check_out(self.path, [edit for edit in edits if edit.after is not None], env)
        except (OSError, SandboxError) as exc:
            left = _put_back(self.path, previous, saved, staged, env)
            if left:
                raise SandboxDamaged(f"the patch could not be committed ({exc}), and the "
                                     "sandbox could not be put back as it was: "
                                     + "; ".join(left)) from None
            raise SandboxError(f"the patch could not be committed, nothing was changed: "
                               f"{exc}") from None
        return self.head()

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

        A file counts as untouched when git's clean form of it (their filters and eol rules:
        a CRLF checkout of an LF blob is untouched) is the blob it was at the session's start.
        `git apply` writes through the same rules, so files keep the checkout's line endings.
        Returns the files changed. The user's index is left alone.
        """
        files = [f for f in _git(self.path, "diff", "--name-only", "--no-renames", "-z",
                                 self.base_commit, "HEAD").split("\0") if f]
        listed = _git(self.repo_root, "ls-tree", "-z", self.base_commit, "--", *files,
                      env={"GIT_LITERAL_PATHSPECS": "1"}) if files else ""
        at_base = {name: fields[2] for fields, name in _entries(listed)}
        present = [name for name in files if (self.repo_root / name).is_file()]
        hashed = _git(self.repo_root, "hash-object", "--", *present).split() if present else []
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
            # (whatever the user's diff settings: prefixes, colour, external and textconv tools)
            diff = subprocess.run(["git", "diff", "--binary", "--no-color", "--no-ext-diff",
                                   "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/",
                                   self.base_commit, "HEAD"],
                                  cwd=self.path, capture_output=True, check=True,
                                  env=git_environment(), start_new_session=True).stdout
            # in a session of its own: a Ctrl-C at the terminal never kills it halfway through
            # the user's files (codeloop notes the press and lets it finish)
            applied = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"],
                                     cwd=self.repo_root, input=diff, capture_output=True,
                                     env=git_environment(), start_new_session=True)
            if applied.returncode != 0:
                raise SandboxError("git apply failed on your working tree: "
                                   + applied.stderr.decode("utf-8", "replace").strip())
        return files


def _check_out(root: Path, written: list[FileEdit], env: dict[str, str]) -> None:
    """Write the files just committed as git's checkout of them does. Should git fail at it (a
    smudge filter, an index.lock someone holds), they are written back as they were staged:
    what the commit holds in git's eyes, only not in the checkout's line endings."""
    try:
        for edit in written:  # (checkout-index leaves a file alone while its stat is current)
            (root / edit.path).unlink()
        if written:
            _git(root, "checkout-index", "-f", "-u", "--", *(e.path for e in written), env=env)
    except (OSError, SandboxError):
        for edit in written:
            _write(root / edit.path, edit.after, edit.mode_after)


def _put_back(root: Path, previous: str, saved: dict[str, tuple[bytes, int] | None],
              staged: bool, env: dict[str, str]) -> list[str]:
    """Undo a commit_patch that failed midway, only the steps it took: the branch back at
    `previous` (had it committed), the index entries of the files it touched (had it `staged`
    them) and the files as `saved`. Never raises: returns what is not as it was (nothing,
    normally), each with the reason an undo failed, if one did; an undo that fails where
    nothing needed undoing (a lock someone holds) is no damage."""
    failed: list[str] = []
    try:
        if _git(root, "rev-parse", "HEAD").strip() != previous:
            _git(root, "reset", "-q", "--soft", previous, env=env)
        if staged:
            _git(root, "reset", "-q", "--", *saved, env=env)
    except SandboxError as exc:
        failed.append(str(exc))
    for name, data in saved.items():
        try:
            _restore(root / name, data)
        except OSError as exc:
            failed.append(f"{name}: {exc.strerror or exc}")
    left = _not_as_before(root, previous, saved, env)
    return left + failed if left else []


def _not_as_before(root: Path, previous: str, saved: dict[str, tuple[bytes, int] | None],
                   env: dict[str, str]) -> list[str]:
    """What differs from before a commit_patch: the branch, the files as `saved`, the index
    entries of those files (from HEAD's). Reading the index needs no lock."""
    left: list[str] = []
    try:
        if _git(root, "rev-parse", "HEAD").strip() != previous:
            left.append(f"the branch is no longer at {previous}")
        staged = _git(root, "diff-index", "--cached", "--name-only", "-z", "HEAD", "--",
                      *saved, env=env)
        left += [f"{name}: staged" for name in staged.split("\0") if name]
    except SandboxError as exc:
        left.append(str(exc))
    for name, data in saved.items():
        try:
            if _saved(root / name) != data:
                left.append(f"{name}: not as it was")
        except OSError as exc:
            left.append(f"{name}: {exc.strerror or exc}")
    return left


def _saved(path: Path) -> tuple[bytes, int] | None:
    """A regular file's bytes and permission bits, to put it back exactly (None: none there)."""
    if path.is_symlink() or not path.is_file():
        return None
    return path.read_bytes(), path.stat().st_mode & 0o7777


def _restore(path: Path, saved: tuple[bytes, int] | None) -> None:
    """Put back what `_saved` found; a file codeloop wrote where there was none is removed."""
    if saved is None:  # (no regular file there before: one there now is codeloop's)
        if path.is_file() and not path.is_symlink():
            path.unlink()
        return
    path.write_bytes(saved[0])
    path.chmod(saved[1])


def _write(path: Path, content: str | None, mode: str | None) -> None:
    """Make `path` hold `content` with git `mode`, or be absent when `content` is None (only a
    file or a link is removed: a directory there is not the file's, and none of codeloop's)."""
    if content is None:
        if path.is_symlink() or path.is_file():
            path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    bits = path.stat().st_mode & 0o777  # (the user's umask decides the rest)
    wanted = bits | (bits & 0o444) >> 2 if mode == "100755" else bits & ~0o111
    if wanted != bits:
        path.chmod(wanted)


def copy_project(source: Path, dest: Path) -> Path:
    """A new git repository at `dest` holding a copy of `source`, committed (for the demo, the
    benchmarks and the tests, which all work on copies of the sample projects)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "--no-gpg-sign", "-m", f"{source.name}: sample project")
    return dest


@dataclass
class CleanReport:
    """What `clean` removed (dry-running: would remove), and what it kept and why."""

    removed: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)


def clean(repo_root: Path, force: bool = False, dry_run: bool = False) -> CleanReport:
    """Remove the worktrees and branches that codeloop recorded making for this repo, and
    keep: those of a session still running; a worktree holding someone's changes (see
    `_changes`; unless `force`), or locked; a branch holding commits codeloop did not make, or
    checked out elsewhere; whatever git refuses to remove, with its reason. Worktrees and
    branches under `codeloop/` that codeloop did not make are listed as kept, and so are
    unrecorded worktrees in codeloop's own folder (an older codeloop's). `dry_run` changes
    nothing."""
    report = CleanReport()
    listed = _worktrees(repo_root)
    made: set[str] = set()
    records = records_home(repo_root)
    for path in sorted(records.glob("*.json")):
        record = _Record.open(path)
        data = record.read()
        made |= {_real(data.get("path", "")), data.get("branch", "")}
        if record.fd is None:
            _keep(report, data, f"in use by a running session (pid {data.get('pid', '?')})")
            continue
        if _remove_recorded(repo_root, data, listed, force, dry_run, report) and not dry_run:
            record.drop()
        record.release()
    home = _real(str(worktrees_home(repo_root)))
    for real, tree in listed.items():
        if real in made:
            continue
        if Path(real).parent == Path(home):
            report.kept.append((tree.shown, "no record of it (made by an older codeloop?): "
                                f"remove it with `git worktree remove {tree.shown}`"))
            if tree.branch:
                made.add(tree.branch)
                report.kept.append((tree.branch, "its sandbox is kept"))
        elif tree.branch.startswith(BRANCH_PREFIX):
            report.kept.append((tree.shown, "not made by codeloop"))
    for branch in _git(repo_root, "for-each-ref", "--format=%(refname:short)",
                       "refs/heads/" + BRANCH_PREFIX).split():
        if branch not in made:
            report.kept.append((branch, "not made by codeloop"))
    if not dry_run:
        _drop_orphan_locks(records)
        for folder in (records, worktrees_home(repo_root)):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return report


def _keep(report: CleanReport, data: dict[str, Any], why: str) -> None:
    report.kept.append((data.get("path", "?"), why))
    if data.get("branch"):
        report.kept.append((data["branch"], "its sandbox is kept"))


def _remove_recorded(repo_root: Path, data: dict[str, Any], listed: dict[str, _Worktree],
                     force: bool, dry_run: bool, report: CleanReport) -> bool:
    """Remove one record's worktree, then its branch; True when nothing of it is left."""
    path, branch = data.get("path", ""), data.get("branch", "")
    tree = listed.get(_real(path))
    if tree is not None:
        if tree.locked is not None:  # (`git worktree lock`: someone wants it kept)
            _keep(report, data, f"locked: {tree.locked}" if tree.locked else "locked")
            return False
        try:
            changes = _changes(Path(path), data.get("left")) if Path(path).is_dir() else []
        except GitError as exc:  # (what is in it cannot be known: it is kept)
            _keep(report, data, f"git could not read its status: {_first_line(exc.reason)}")
            return False
        if changes and not force:
            shown = ", ".join(changes[:5]) + (f" and {len(changes) - 5} more"
                                              if len(changes) > 5 else "")
            _keep(report, data, f"uncommitted changes: {shown} (--force removes it anyway)")
            return False
        try:
            if not dry_run:
                _git(repo_root, "worktree", "remove", "--force", path)
        except GitError as exc:
            _keep(report, data, f"git could not remove it: {_first_line(exc.reason)}")
            return False
        report.removed.append(path)
        del listed[_real(path)]
    elif path and Path(path).exists():  # (git forgot it: `git worktree prune`, by hand)
        _keep(report, data, "no longer a worktree of this repo: remove the folder yourself")
        return False
    if not branch or not _git(repo_root, "for-each-ref", f"refs/heads/{branch}").strip():
        return True
    elsewhere = [tree.shown for tree in listed.values() if tree.branch == branch]
    if elsewhere:
        report.kept.append((branch, f"checked out in {elsewhere[0]}"))
        return False
    if not _only_codeloop_commits(repo_root, data.get("base_commit", ""), branch):
        report.kept.append((branch, "it holds commits not made by codeloop"))
        return False
    try:
        if not dry_run:
            _git(repo_root, "branch", "-q", "-D", branch)  # (-D: its commits are merged nowhere)
    except GitError as exc:
        report.kept.append((branch, f"git could not delete it: {_first_line(exc.reason)}"))
        return False
    report.removed.append(branch)
    return True


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no reason given)"


@dataclass(frozen=True)
class _Worktree:
    shown: str  # its path as git shows it
    branch: str  # the branch checked out there, "" when detached
    locked: str | None  # the reason it is locked ("" none given), None when it is not


def _worktrees(repo_root: Path) -> dict[str, _Worktree]:
    """The repo's worktrees, by real path."""
    found = {}
    for block in _git(repo_root, "worktree", "list", "--porcelain").strip().split("\n\n"):
        fields = dict((*line.split(" ", 1), "")[:2] for line in block.splitlines())
        if "worktree" in fields:
            found[_real(fields["worktree"])] = _Worktree(
                fields["worktree"], fields.get("branch", "").removeprefix("refs/heads/"),
                fields.get("locked"))
    return found


def _real(path: str) -> str:
    return os.path.realpath(path) if path else ""


def _only_codeloop_commits(repo_root: Path, base: str, branch: str) -> bool:
    """Whether every commit on `branch` after `base` (where codeloop started it) is one that
    codeloop committed."""
    try:
        committers = _git(repo_root, "log", "--format=%ce", f"{base}..refs/heads/{branch}")
    except SandboxError:  # no base recorded, or no longer in the repo
        return False
    return bool(base) and all(email == _IDENTITY["GIT_COMMITTER_EMAIL"]
                              for email in committers.split())


MAX_LEFT = 2000  # untracked files noted at a session's end; any more count as someone's
MTIME_SLACK_S = 1.0  # file systems that keep coarse modification times (FAT: 2 s steps, halved)


def _changes(worktree: Path, left: dict[str, str] | None) -> list[str]:
    """The paths of `worktree` (inside its submodules too) that someone changed: every tracked
    file that differs from the last commit (codeloop commits what it writes, or puts it back),
    and the untracked files, except those `left` (noted when its session ended: what the
    session's test runs left) that are still as they were then. Ignored files never count:
    the user's own rules say they are not work."""
    tracked, untracked = _status(worktree)
    noted = left or {}  # (none: its session was killed, and everything counts)
    return tracked + [rel for rel in untracked
                      if rel not in noted or _fingerprint(worktree / rel) != noted[rel]]


def _untracked_left(worktree: Path, runs: list[tuple[float, float]]) -> dict[str, str]:
    """The untracked files of `worktree` last written during one of the test `runs`, each
    with a digest of what it holds."""
    found = {}
    for rel in _status(worktree)[1][:MAX_LEFT]:
        try:
            written = (worktree / rel).lstat().st_mtime
        except OSError:
            continue
        if not any(start - MTIME_SLACK_S <= written <= end + MTIME_SLACK_S
                   for start, end in runs):
            continue
        digest = _fingerprint(worktree / rel)
        if digest is not None:
            found[rel] = digest
    return found


def _status(worktree: Path, prefix: str = "") -> tuple[list[str], list[str]]:
    """(tracked paths that differ from the last commit, untracked paths) of `worktree` and,
    under their paths, of its submodules; ignored files are not listed."""
    status = _git(worktree, "status", "--porcelain", "-z", "--untracked-files=all",
                  "--ignore-submodules=none")
    tracked: list[str] = []
    untracked: list[str] = []
    entries = iter(status.split("\0"))
    for entry in entries:
        if not entry:
            continue
        code, rel = entry[:2], entry[3:]
        if code[0] in "RC":
            next(entries, None)  # (a rename's source path comes next)
        if code == "??":
            untracked.append(prefix + rel)
        elif (worktree / rel / ".git").exists():  # a submodule: what changed in it
            inner = _status(worktree / rel, f"{prefix}{rel}/")
            tracked += inner[0]
            untracked += inner[1]
        else:
            tracked.append(prefix + rel)
    return tracked, untracked


def _fingerprint(path: Path) -> str | None:
    """A digest of what the file `path` holds (a symlink: where it points), None when it is
    not a file."""
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha1").hexdigest()
    except OSError:  # a directory (an untracked repository), or gone
        return None


def _drop_orphan_locks(records: Path) -> None:
    """Lock files whose record was never written (the process died in between)."""
    for lock in records.glob("*.lock"):
        record = _Record.open(lock.with_suffix(".json"))
        if record.fd is not None and not record.path.exists():
            record.drop()
        record.release()
