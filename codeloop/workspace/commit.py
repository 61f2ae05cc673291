"""Committing planned edits in a sandbox, all files or none, and putting it back when that fails.

Owns writing the files, staging them through git's own filters, the commit, the checkout that
gives the files the checkout's line endings, and the undo of exactly the steps taken. It plans
no edit (the edits package does) and never touches the user's repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from codeloop.workspace.errors import SandboxDamaged, SandboxError
from codeloop.workspace.git import run_git

if TYPE_CHECKING:
    from codeloop.edits.patch import FileEdit

_Saved = tuple[bytes, int] | None  # a file's bytes and permission bits; None: none there


def commit_edits(root: Path, edits: list[FileEdit], message: str, previous: str) -> None:
    """Commit `edits` on the branch of the worktree `root`, now at `previous`: write each
    file's new content, stage it through git's clean filters and eol rules, commit (without
    the user's hooks: a sandbox commit is codeloop's, not theirs), then check the files out
    again. On any failure, the commit's too, the steps taken are undone (SandboxError), or the
    worktree cannot be put back (SandboxDamaged)."""
    touched = [name for edit in edits for name in (edit.renamed_from, edit.path) if name]
    saved = {name: _saved(root / name) for name in touched}
    env = {"GIT_LITERAL_PATHSPECS": "1"}
    staged = False
    try:
        for edit in edits:
            if edit.renamed_from:
                (root / edit.renamed_from).unlink()
            _write(root / edit.path, edit.after, edit.mode_after)
        # (plumbing: no pathspecs, no .gitignore, but the clean filters and eol rules; a
        # new file is written with LF and gets the checkout's line endings below, which
        # core.safecrlf would call irreversible)
        run_git(root, "-c", "core.safecrlf=false", "update-index", "--add", "--remove",
                "--", *touched, env=env)
        staged = True  # (a failed update-index writes no index: git replaces it whole)
        flips: dict[str, list[str]] = {"+x": [], "-x": []}
        for edit in edits:
            if edit.after is not None and edit.mode_after != edit.mode_before:
                flips["+x" if edit.mode_after == "100755" else "-x"].append(edit.path)
        for flip, names in flips.items():  # (for a repo with core.fileMode off)
            if names:
                run_git(root, "update-index", f"--chmod={flip}", "--", *names, env=env)
        # (--no-verify alone still runs prepare-commit-msg and post-commit)
        run_git(root, "-c", "core.hooksPath=/dev/null", "commit", "-q", "--no-verify",
                "--no-gpg-sign", "-m", message, env=env)
        _check_out(root, [edit for edit in edits if edit.after is not None], env)
    except (OSError, SandboxError) as exc:
        left = _put_back(root, previous, saved, staged, env)
        if left:
            raise SandboxDamaged(f"the patch could not be committed ({exc}), and the "
                                 "sandbox could not be put back as it was: "
                                 + "; ".join(left)) from None
        raise SandboxError(f"the patch could not be committed, nothing was changed: "
                           f"{exc}") from None


def _check_out(root: Path, written: list[FileEdit], env: dict[str, str]) -> None:
    """Write the files just committed as git's checkout of them does. Should git fail at it (a
    smudge filter, an index.lock someone holds), they are written back as they were staged:
    what the commit holds in git's eyes, only not in the checkout's line endings."""
    try:
        for edit in written:  # (checkout-index leaves a file alone while its stat is current)
            (root / edit.path).unlink()
        if written:
            run_git(root, "checkout-index", "-f", "-u", "--", *(e.path for e in written),
                    env=env)
    except (OSError, SandboxError):
        for edit in written:
            _write(root / edit.path, edit.after, edit.mode_after)


def _put_back(root: Path, previous: str, saved: dict[str, _Saved], staged: bool,
              env: dict[str, str]) -> list[str]:
    """Undo a commit_edits that failed midway, only the steps it took: the branch back at
    `previous` (had it committed), the index entries of the files it touched (had it `staged`
    them) and the files as `saved`. Never raises: returns what is not as it was (nothing,
    normally), each with the reason an undo failed, if one did; an undo that fails where
    nothing needed undoing (a lock someone holds) is no damage."""
    failed: list[str] = []
    try:
        if run_git(root, "rev-parse", "HEAD").strip() != previous:
            run_git(root, "reset", "-q", "--soft", previous, env=env)
        if staged:
            run_git(root, "reset", "-q", "--", *saved, env=env)
    except SandboxError as exc:
        failed.append(str(exc))
    for name, data in saved.items():
        try:
            _restore(root / name, data)
        except OSError as exc:
            failed.append(f"{name}: {exc.strerror or exc}")
    left = _not_as_before(root, previous, saved, env)
    return left + failed if left else []


def _not_as_before(root: Path, previous: str, saved: dict[str, _Saved],
                   env: dict[str, str]) -> list[str]:
    """What differs from before a commit_edits: the branch, the files as `saved`, the index
    entries of those files (from HEAD's). Reading the index needs no lock."""
    left: list[str] = []
    try:
        if run_git(root, "rev-parse", "HEAD").strip() != previous:
            left.append(f"the branch is no longer at {previous}")
        staged = run_git(root, "diff-index", "--cached", "--name-only", "-z", "HEAD", "--",
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


def _saved(path: Path) -> _Saved:
    """A regular file's bytes and permission bits, to put it back exactly (None: none there)."""
    if path.is_symlink() or not path.is_file():
        return None
    return path.read_bytes(), path.stat().st_mode & 0o7777


def _restore(path: Path, saved: _Saved) -> None:
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
