"""The user's repository as codeloop finds and copies it: its top, its `.git/info/exclude`, a
snapshot of HEAD plus uncommitted work, and its submodules.

Owns reading the user's repo without changing what they see: the snapshot goes through a
temporary copy of the index, so their index and working tree are never touched.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from codeloop.workspace.errors import SandboxError
from codeloop.workspace.git import completed, entries, run_git


def find_repo(start: Path) -> Path:
    """The top of the git repository containing `start`, or a SandboxError saying what to do.
    Found from the directory alone, as every git codeloop runs finds it: a GIT_DIR or
    GIT_WORK_TREE in the environment (inside a git hook) does not choose another."""
    if not start.exists():
        raise SandboxError(f"no such directory: {start}")
    if not start.is_dir():
        raise SandboxError(f"not a directory: {start}")
    # (each answer on a line of its own; --show-toplevel fails without a working tree)
    result = completed(start, "rev-parse", "--is-bare-repository", "--is-inside-git-dir",
                       "--absolute-git-dir", "--show-toplevel")
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


def exclude_from_git(repo_root: Path, pattern: str) -> None:
    """Add `pattern` to the repo's `.git/info/exclude` once (keeps recordings out of git)."""
    common = Path(run_git(repo_root, "rev-parse", "--git-common-dir").strip())
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
    head = run_git(repo_root, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()
    git_dir = Path(run_git(repo_root, "rev-parse", "--absolute-git-dir").strip())
    with tempfile.TemporaryDirectory(prefix="codeloop-index-") as tmp:
        index = Path(tmp) / "index"
        if (git_dir / "index").exists():
            shutil.copyfile(git_dir / "index", index)
        env = {"GIT_INDEX_FILE": str(index)}
        run_git(repo_root, "add", "-A", env=env)
        for path in _initialized_submodules(repo_root, env):
            run_git(repo_root, "update-index", "--cacheinfo",
                    f"160000,{snapshot(repo_root / path)},{path}", env=env)
        tree = run_git(repo_root, "write-tree", env=env).strip()
    if head and run_git(repo_root, "rev-parse", f"{head}^{{tree}}").strip() == tree:
        return head
    parents = ["-p", head] if head else []
    return run_git(repo_root, "commit-tree", "--no-gpg-sign", tree, *parents,
                   "-m", "codeloop: snapshot of uncommitted work").strip()


def _initialized_submodules(checkout: Path, env: dict[str, str]) -> list[str]:
    """The submodules of the user's `checkout` that they have initialized (checked out): those
    `.gitmodules` names that are submodules in the index `env` points to and hold a `.git`."""
    if not (checkout / ".gitmodules").is_file():
        return []
    paths = _listed_submodules(checkout, "-f", ".gitmodules")
    staged = run_git(checkout, "ls-files", "-s", "-z", "--", *paths, env=env) if paths else ""
    return [path for path, _ in _gitlinks(staged, 1) if (checkout / path / ".git").exists()]


def submodules_at(repo: Path, commit: str) -> list[tuple[str, str]]:
    """(path, commit) of each submodule that `commit` records, initialized or not."""
    paths = _listed_submodules(repo, "--blob", f"{commit}:.gitmodules")
    return _gitlinks(run_git(repo, "ls-tree", "-z", commit, "--", *paths), 2) if paths else []


def _listed_submodules(cwd: Path, *source: str) -> list[str]:
    """The submodule paths a `.gitmodules` names (`source`: its file or its blob)."""
    listed = run_git(cwd, "config", "-z", *source, "--get-regexp", r"^submodule\..*\.path$",
                     check=False)  # (fails when there is no such file: no submodules)
    return [entry.split("\n", 1)[1] for entry in listed.split("\0") if "\n" in entry]


def _gitlinks(listing: str, commit_field: int) -> list[tuple[str, str]]:
    """(path, commit) of the submodule entries (mode 160000) in `git ls-files -s -z` or
    `git ls-tree -z` output (the commit is field 1 of the one, 2 of the other)."""
    return [(path, fields[commit_field]) for fields, path in entries(listing)
            if fields[0] == "160000"]


def bring_submodules(theirs: Path, ours: Path, submodules: list[tuple[str, str]]) -> None:
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
        source = run_git(theirs / path, "rev-parse", "--absolute-git-dir").strip()
        if not run_git(theirs / path, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}",
                       check=False).strip():
            raise SandboxError(f"submodule {path}: commit {commit[:12]} is not in your clone "
                               f"of it ({source}); fetch it there first")
        run_git(ours, "clone", "--quiet", "--local", "--no-checkout", source, path)
        run_git(ours / path, "checkout", "--quiet", "--detach", commit)
        bring_submodules(theirs / path, ours / path, submodules_at(ours / path, commit))
