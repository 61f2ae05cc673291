"""The registry of what codeloop made for a repository: where its worktrees live, one record and
one lock file for each, held while its session runs.

Owns the places (under the user cache dir, never inside the repo), the branch names, and the
records that `clean` trusts; it makes no worktree and removes none.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from codeloop.core.dirs import cache_dir
from codeloop.workspace.git import run_git

BRANCH_PREFIX = "codeloop/"


def worktrees_home(repo_root: Path) -> Path:
    """Where this repo's sandboxes live: under the user cache dir, never inside the repo; one
    place for the repository, whichever of its worktrees codeloop runs in."""
    key = _repository_key(repo_root.resolve())
    digest = hashlib.sha1(str(key).encode()).hexdigest()[:10]
    return cache_dir() / "worktrees" / f"{key.name}-{digest}"


@lru_cache(maxsize=64)  # (asked for each record and worktree made: one git run)
def _repository_key(repo_root: Path) -> Path:
    """The main worktree of the repository that `repo_root` is a worktree of (`repo_root`
    itself unless it is a linked one), or its git directory when that lies elsewhere."""
    common = (repo_root / run_git(repo_root, "rev-parse", "--git-common-dir").strip()).resolve()
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


class Record:
    """What codeloop made for one worktree (`<name>.json`), and the lock (`<name>.lock`) that
    its session holds while it runs. The lock is taken before the record is first written,
    so `clean` never finds a record whose session could still be starting."""

    def __init__(self, home: Path, name: str, fd: int | None) -> None:
        self.path = home / f"{name}.json"
        self.lock_path = home / f"{name}.lock"
        self.fd: int | None = fd

    @classmethod
    def claim(cls, repo_root: Path, name: str, **fields: Any) -> Record:
        """Written before the worktree exists: whatever happens next, `clean` knows of it."""
        home = records_home(repo_root)
        fd = _hold_lock(home / f"{name}.lock", wait=True)
        assert fd is not None  # (waiting, it always gets the lock)
        record = cls(home, name, fd)
        record.write({**fields, "pid": os.getpid(),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return record

    @classmethod
    def open(cls, path: Path) -> Record:
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


def drop_orphan_locks(records: Path) -> None:
    """Lock files whose record was never written (the process died in between)."""
    for lock in records.glob("*.lock"):
        record = Record.open(lock.with_suffix(".json"))
        if record.fd is not None and not record.path.exists():
            record.drop()
        record.release()
