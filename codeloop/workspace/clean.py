"""`codeloop clean`: remove the worktrees and branches codeloop recorded making, and only those.

Owns deciding what is safe to remove (not a running session's, not holding someone's work, not
locked, no commits codeloop did not make) and saying why anything is kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeloop.workspace.errors import GitError, SandboxError
from codeloop.workspace.git import IDENTITY_EMAIL, run_git
from codeloop.workspace.leftovers import changes
from codeloop.workspace.records import (
    BRANCH_PREFIX,
    Record,
    drop_orphan_locks,
    records_home,
    worktrees_home,
)


@dataclass
class CleanReport:
    """What `clean` removed (dry-running: would remove), and what it kept and why."""

    removed: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)


def clean(repo_root: Path, force: bool = False, dry_run: bool = False) -> CleanReport:
    """Remove the worktrees and branches that codeloop recorded making for this repo, and
    keep: those of a session still running; a worktree holding someone's changes (see
    `leftovers.changes`; unless `force`), or locked; a branch holding commits codeloop did not
    make, or checked out elsewhere; whatever git refuses to remove, with its reason. Worktrees
    and branches under `codeloop/` that codeloop did not make are listed as kept, and so are
    unrecorded worktrees in codeloop's own folder (an older codeloop's). `dry_run` changes
    nothing."""
    report = CleanReport()
    listed = _worktrees(repo_root)
    made: set[str] = set()
    records = records_home(repo_root)
    for path in sorted(records.glob("*.json")):
        record = Record.open(path)
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
    for branch in run_git(repo_root, "for-each-ref", "--format=%(refname:short)",
                          "refs/heads/" + BRANCH_PREFIX).split():
        if branch not in made:
            report.kept.append((branch, "not made by codeloop"))
    if not dry_run:
        drop_orphan_locks(records)
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
            changed = changes(Path(path), data.get("left")) if Path(path).is_dir() else []
        except GitError as exc:  # (what is in it cannot be known: it is kept)
            _keep(report, data, f"git could not read its status: {_first_line(exc.reason)}")
            return False
        if changed and not force:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more"
                                              if len(changed) > 5 else "")
            _keep(report, data, f"uncommitted changes: {shown} (--force removes it anyway)")
            return False
        try:
            if not dry_run:
                run_git(repo_root, "worktree", "remove", "--force", path)
        except GitError as exc:
            _keep(report, data, f"git could not remove it: {_first_line(exc.reason)}")
            return False
        report.removed.append(path)
        del listed[_real(path)]
    elif path and Path(path).exists():  # (git forgot it: `git worktree prune`, by hand)
        _keep(report, data, "no longer a worktree of this repo: remove the folder yourself")
        return False
    if not branch or not run_git(repo_root, "for-each-ref", f"refs/heads/{branch}").strip():
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
            run_git(repo_root, "branch", "-q", "-D", branch)  # (-D: its commits are merged nowhere)
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
    for block in run_git(repo_root, "worktree", "list", "--porcelain").strip().split("\n\n"):
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
        committers = run_git(repo_root, "log", "--format=%ce", f"{base}..refs/heads/{branch}")
    except SandboxError:  # no base recorded, or no longer in the repo
        return False
    return bool(base) and all(email == IDENTITY_EMAIL for email in committers.split())
