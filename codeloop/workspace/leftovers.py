"""What a worktree holds beyond its last commit, and whose it is: the files a session's test runs
left (noted when it ends), or someone's work (which `clean` keeps).

Owns reading `git status` of a worktree and its submodules and fingerprinting files; it changes
nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from codeloop.workspace.git import run_git

MAX_LEFT = 2000  # untracked files noted at a session's end; any more count as someone's
MTIME_SLACK_S = 1.0  # file systems that keep coarse modification times (FAT: 2 s steps, halved)


def changes(worktree: Path, left: dict[str, str] | None) -> list[str]:
    """The paths of `worktree` (inside its submodules too) that someone changed: every tracked
    file that differs from the last commit (codeloop commits what it writes, or puts it back),
    and the untracked files, except those `left` (noted when its session ended: what the
    session's test runs left) that are still as they were then. Ignored files never count:
    the user's own rules say they are not work."""
    tracked, untracked = _status(worktree)
    noted = left or {}  # (none: its session was killed, and everything counts)
    return tracked + [rel for rel in untracked
                      if rel not in noted or _fingerprint(worktree / rel) != noted[rel]]


def untracked_left(worktree: Path, runs: list[tuple[float, float]]) -> dict[str, str]:
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
    status = run_git(worktree, "status", "--porcelain", "-z", "--untracked-files=all",
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
