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
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import git

    from codeloop.patch import FileEdit

T = TypeVar("T")
BRANCH_PREFIX = "codeloop/"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "codeloop", "GIT_AUTHOR_EMAIL": "codeloop@localhost",
    "GIT_COMMITTER_NAME": "codeloop", "GIT_COMMITTER_EMAIL": "codeloop@localhost",
}


class SandboxError(Exception):
    """A git or sandbox problem, phrased for the user."""


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run git with the sandbox's fixed identity; returns stdout. In a session of its own: a
    Ctrl-C at the terminal is codeloop's to act on, not a kill of git halfway through."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, errors="replace",
            env={**os.environ, **_IDENTITY, **(env or {})}, start_new_session=True,
        )
    except OSError as exc:  # git missing, or `cwd` gone (a sandbox removed under a session)
        raise SandboxError(f"cannot run git in {cwd}: {exc.strerror or exc}") from None
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
    if not start.exists():
        raise SandboxError(f"no such directory: {start}")
    if not start.is_dir():
        raise SandboxError(f"not a directory: {start}")
    try:  # (each answer on a line of its own; --show-toplevel fails without a working tree)
        result = subprocess.run(["git", "rev-parse", "--is-bare-repository",
                                 "--is-inside-git-dir", "--absolute-git-dir", "--show-toplevel"],
                                cwd=start, capture_output=True, text=True,
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
    """Where this repo's sandboxes live: under the user cache dir, never inside the repo."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(repo_root.resolve()).encode()).hexdigest()[:10]
    return base / "codeloop" / "worktrees" / f"{repo_root.name}-{digest}"


def records_home(repo_root: Path) -> Path:
    """Where codeloop writes down each worktree it makes for this repo: `clean` removes only
    what is recorded here."""
    return worktrees_home(repo_root) / ".records"


def _hold_lock(path: Path, wait: bool) -> int | None:
    """A descriptor holding an exclusive flock on `path` (made if missing), or None when
    another process holds it and `wait` is false. The kernel lets go of the lock when the
    process ends, however it ends; the descriptor is not inherited by test processes."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
        home.mkdir(parents=True, exist_ok=True)
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


def _gitlinks(listing: str, commit_field: int) -> list[tuple[str, str]]:
    """(path, commit) of the submodule entries (mode 160000) in `git ls-files -s -z` or
    `git ls-tree -z` output (the commit is field 1 of the one, 2 of the other)."""
    found = []
    for entry in listing.split("\0"):
        meta, _, path = entry.partition("\t")
        if meta.startswith("160000 "):
            found.append((path, meta.split()[commit_field]))
    return found


def _bring_submodules(theirs: Path, ours: Path, submodules: list[tuple[str, str]]) -> None:
    """Fill the submodule paths of the worktree `ours` from the user's checkout `theirs`: for
    each submodule they initialized, a clone of their local submodule repository sharing its
    objects (`--shared`: no network, nothing copied, nothing written into their repo, and it
    goes with the worktree), checked out at the commit the worktree records; then its own."""
    for path, commit in submodules:
        if not (theirs / path / ".git").exists():
            continue  # not initialized in their checkout either
        source = _git(theirs / path, "rev-parse", "--absolute-git-dir").strip()
        if not _git(theirs / path, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}",
                    check=False).strip():
            raise SandboxError(f"submodule {path}: commit {commit[:12]} is not in your clone "
                               f"of it ({source}); fetch it there first")
        _git(ours, "clone", "--quiet", "--shared", "--no-checkout", source, path)
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

        return DetachedRepo(self.path)

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

    def close(self) -> None:
        """The session is over: let go of the git handle and of the sandbox's lock, noting
        when, so that `clean` can tell what changed in it later (someone's work) from the
        files the session's test runs left (its own)."""
        if "repo" in self.__dict__:
            self.repo.close()
        if self._record is not None and self._record.fd is not None:
            with contextlib.suppress(OSError):  # (its folder removed by hand: nothing to note)
                self._record.write({**self._record.read(), "closed": time.time()})
            self._record.release()

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def commit_patch(self, edits: list[FileEdit], message: str) -> str:
        """Commit the planned edits, all files or none: write each file's new content into the
        worktree, stage it through git's own clean filters and eol rules, commit,
        then check the files out again, so the worktree holds exactly what git's checkout of
        the commit writes (a CRLF checkout stays CRLF, new files included). On any failure the
        files and index entries it touched are put back."""
        touched = [name for edit in edits for name in (edit.renamed_from, edit.path) if name]
        saved = {name: _saved(self.path / name) for name in touched}
        env = {**_IDENTITY, "GIT_LITERAL_PATHSPECS": "1"}
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
            flips: dict[str, list[str]] = {"+x": [], "-x": []}
            for edit in edits:
                if edit.after is not None and edit.mode_after != edit.mode_before:
                    flips["+x" if edit.mode_after == "100755" else "-x"].append(edit.path)
            for flip, names in flips.items():  # (for a repo with core.fileMode off)
                if names:
                    _git(self.path, "update-index", f"--chmod={flip}", "--", *names, env=env)
            _git(self.path, "commit", "-q", "--no-verify", "--no-gpg-sign", "-m", message,
                 env=env)
        except (OSError, SandboxError) as exc:
            _git(self.path, "reset", "-q", "--", *touched, env=env, check=False)
            for name, (data, mode) in saved.items():
                _write(self.path / name, data, mode)
            raise SandboxError(f"the patch could not be committed, nothing was changed: "
                               f"{exc}") from None
        written = [edit.path for edit in edits if edit.after is not None]
        for name in written:  # (checkout-index leaves a file alone while its stat is current)
            (self.path / name).unlink()
        if written:
            _git(self.path, "checkout-index", "-f", "-u", "--", *written, env=env)
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
        at_base = {}
        listed = _git(self.repo_root, "ls-tree", "-z", self.base_commit, "--", *files,
                      env={"GIT_LITERAL_PATHSPECS": "1"}) if files else ""
        for entry in filter(None, listed.split("\0")):
            meta, name = entry.split("\t", 1)
            at_base[name] = meta.split()[2]
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
                                  start_new_session=True).stdout
            # in a session of its own: a Ctrl-C at the terminal never kills it halfway through
            # the user's files (codeloop notes the press and lets it finish)
            applied = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"],
                                     cwd=self.repo_root, input=diff, capture_output=True,
                                     start_new_session=True)
            if applied.returncode != 0:
                raise SandboxError("git apply failed on your working tree: "
                                   + applied.stderr.decode("utf-8", "replace").strip())
        return files


def _saved(path: Path) -> tuple[str | None, str | None]:
    """A file's content and git mode, to put it back (None, None: absent)."""
    if not path.is_file():
        return None, None
    data = path.read_bytes().decode("utf-8", "surrogateescape")
    return data, "100755" if path.stat().st_mode & 0o111 else "100644"


def _write(path: Path, content: str | None, mode: str | None) -> None:
    """Make `path` hold `content` with git `mode`, or be absent when `content` is None."""
    if content is None:
        path.unlink(missing_ok=True)
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
    keep: those of a session still running; a worktree holding changes made after its session
    ended, or by a session that was killed (unless `force`); a branch holding commits codeloop
    did not make, or checked out elsewhere. Worktrees and branches under `codeloop/` that
    codeloop did not make are listed as kept. `dry_run` changes nothing."""
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
    for real, (shown, branch) in listed.items():
        if branch.startswith(BRANCH_PREFIX) and real not in made:
            report.kept.append((shown, "not made by codeloop"))
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


def _remove_recorded(repo_root: Path, data: dict[str, Any], listed: dict[str, tuple[str, str]],
                     force: bool, dry_run: bool, report: CleanReport) -> bool:
    """Remove one record's worktree, then its branch; True when nothing of it is left."""
    path, branch = data.get("path", ""), data.get("branch", "")
    if _real(path) in listed:
        changes = _changes(Path(path), data.get("closed")) if Path(path).is_dir() else []
        if changes and not force:
            shown = ", ".join(changes[:5]) + (f" and {len(changes) - 5} more"
                                              if len(changes) > 5 else "")
            _keep(report, data, f"uncommitted changes: {shown} (--force removes it anyway)")
            return False
        if not dry_run:
            _git(repo_root, "worktree", "remove", "--force", path)
        report.removed.append(path)
        del listed[_real(path)]
    elif path and Path(path).exists():  # (git forgot it: `git worktree prune`, by hand)
        _keep(report, data, "no longer a worktree of this repo: remove the folder yourself")
        return False
    if not branch or not _git(repo_root, "for-each-ref", f"refs/heads/{branch}").strip():
        return True
    elsewhere = [shown for shown, ref in listed.values() if ref == branch]
    if elsewhere:
        report.kept.append((branch, f"checked out in {elsewhere[0]}"))
        return False
    if not _only_codeloop_commits(repo_root, data.get("base_commit", ""), branch):
        report.kept.append((branch, "it holds commits not made by codeloop"))
        return False
    if not dry_run:
        _git(repo_root, "branch", "-q", "-D", branch)  # (-D: its commits are merged nowhere)
    report.removed.append(branch)
    return True


def _worktrees(repo_root: Path) -> dict[str, tuple[str, str]]:
    """The repo's worktrees: real path -> (path as git shows it, branch name or "")."""
    found = {}
    for block in _git(repo_root, "worktree", "list", "--porcelain").strip().split("\n\n"):
        fields = dict(line.split(" ", 1) for line in block.splitlines() if " " in line)
        if "worktree" in fields:
            found[_real(fields["worktree"])] = (
                fields["worktree"], fields.get("branch", "").removeprefix("refs/heads/"))
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


def _changes(worktree: Path, since: float | None) -> list[str]:
    """The paths of `worktree` (inside its submodules too) that differ from its last commit,
    untracked ones included, ignored ones not; with `since` (when its session ended) only
    those changed after it: the session's test runs leave files, and they are codeloop's."""
    status = _git(worktree, "status", "--porcelain", "-z", "--untracked-files=all",
                  "--ignore-submodules=none")
    found: list[str] = []
    entries = iter(status.split("\0"))
    for entry in entries:
        if not entry:
            continue
        code, rel = entry[:2], entry[3:]
        if code[0] in "RC":
            next(entries, None)  # (a rename's source path comes next)
        target = worktree / rel
        if code != "??" and (target / ".git").exists():  # a submodule: what changed in it
            found += [f"{rel}/{inner}" for inner in _changes(target, since)]
        elif since is None or _changed_after(target, since):
            found.append(rel)
    return found


def _changed_after(path: Path, since: float) -> bool:
    try:
        return path.lstat().st_mtime > since
    except FileNotFoundError:  # deleted
        return True


def _drop_orphan_locks(records: Path) -> None:
    """Lock files whose record was never written (the process died in between)."""
    for lock in records.glob("*.lock"):
        record = _Record.open(lock.with_suffix(".json"))
        if record.fd is not None and not record.path.exists():
            record.drop()
        record.release()
