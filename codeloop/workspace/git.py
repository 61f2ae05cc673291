"""Running git: the one module of codeloop that starts a git process or imports GitPython.

Owns how every git runs (codeloop's identity, never the repository that GIT_DIR & co. name, in a
session of its own) and the read-only questions the rest of codeloop asks of a tree: its files,
a search, its tree id, whether it has changes. What to run for a sandbox is decided elsewhere.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeloop.workspace.errors import GitError, SandboxError

if TYPE_CHECKING:
    import git

IDENTITY_NAME, IDENTITY_EMAIL = "codeloop", "codeloop@localhost"  # author of every commit
_IDENTITY = {
    "GIT_AUTHOR_NAME": IDENTITY_NAME, "GIT_AUTHOR_EMAIL": IDENTITY_EMAIL,
    "GIT_COMMITTER_NAME": IDENTITY_NAME, "GIT_COMMITTER_EMAIL": IDENTITY_EMAIL,
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


def _process(cwd: Path, args: tuple[str, ...], env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run git with codeloop's fixed identity, whatever its exit status. In a session of its
    own: a Ctrl-C at the terminal is codeloop's to act on, not a kill of git halfway through."""
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, errors="replace",
        env=git_environment(**_IDENTITY, **(env or {})), start_new_session=True,
    )


def completed(cwd: Path, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    """`_process`, and a SandboxError when git cannot run at all."""
    try:
        return _process(cwd, args, env)
    except OSError as exc:  # git missing, or `cwd` gone (a sandbox removed under a session)
        raise SandboxError(f"cannot run git in {cwd}: {exc.strerror or exc}") from None


def run_git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """`completed`'s stdout; a GitError when git fails, unless not `check`."""
    result = completed(cwd, *args, env=env)
    if check and result.returncode != 0:
        raise GitError(args, result.stderr.strip())
    return result.stdout


# The read-only questions below let an OSError (the tree removed under a session) go up as it
# is: their callers never had git's failures to start turned into a SandboxError, and a session
# whose sandbox is gone mid-turn ends as it always did (an internal error, exit 1).


def _looked_up(root: Path, *args: str) -> str:
    """The stdout of a git listing or search, for which exit status 1 means "nothing found"."""
    result = _process(root, args)
    if result.returncode not in (0, 1):
        raise GitError(args, result.stderr.strip())
    return result.stdout


def project_files(root: Path, where: Sequence[str] = ()) -> str:
    """The files of the tree at `root` (under the paths `where`), a line each: tracked, and
    untracked but not ignored."""
    return _looked_up(root, "ls-files", "--cached", "--others", "--exclude-standard", "--",
                      *where)


def grep(root: Path, pattern: str, where: Sequence[str] = ()) -> str:
    """`path:line:text` for each line of `project_files` (text files, under `where`) that the
    extended regular expression `pattern` matches."""
    return _looked_up(root, "grep", "-n", "-I", "-E", "--untracked", "-e", pattern, "--", *where)


def tree_id(root: Path) -> str:
    """The id of the tree HEAD holds at `root`; when there is none, what git printed instead
    ("" outside a repository)."""
    return _process(root, ("rev-parse", "HEAD^{tree}")).stdout.strip()


def has_changes(root: Path) -> bool:
    """Whether the tree at `root` differs from HEAD: a tracked file changed, or an untracked
    one that is not ignored (`git status`, which says nothing outside a repository)."""
    return bool(_process(root, ("status", "--porcelain", "--untracked-files=normal")
                         ).stdout.strip())


def entries(listing: str) -> list[tuple[list[str], str]]:
    """(fields, path) of each entry of `git ls-files -s -z` or `git ls-tree -z` output: the
    mode, object id (and stage or type) before the tab, the literal path after it."""
    return [(meta.split(), path) for meta, tab, path in
            (entry.partition("\t") for entry in listing.split("\0")) if tab]


def index_modes(root: Path, names: list[str]) -> dict[str, str]:
    """The mode git's index at `root` holds for each of `names` it tracks."""
    listed = run_git(root, "ls-files", "-s", "-z", "--", *names,
                     env={"GIT_LITERAL_PATHSPECS": "1"}, check=False)
    return {path: fields[0] for fields, path in entries(listed)}


def apply_diff(source: Path, base: str, target: Path) -> None:
    """Apply the changes of the worktree `source` from `base` to its HEAD onto the working tree
    `target` with `git apply` (its filters and eol rules, its index left alone)."""
    # (whatever the user's diff settings: prefixes, colour, external and textconv tools)
    diff = subprocess.run(["git", "diff", "--binary", "--no-color", "--no-ext-diff",
                           "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/", base, "HEAD"],
                          cwd=source, capture_output=True, check=True,
                          env=git_environment(), start_new_session=True).stdout
    # in a session of its own: a Ctrl-C at the terminal never kills it halfway through
    # the user's files (codeloop notes the press and lets it finish)
    applied = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"],
                             cwd=target, input=diff, capture_output=True,
                             env=git_environment(), start_new_session=True)
    if applied.returncode != 0:
        raise SandboxError("git apply failed on your working tree: "
                           + applied.stderr.decode("utf-8", "replace").strip())


def preload_gitpython() -> None:
    """Import GitPython on a background thread: the first commit needs it, start-up does not
    (~50 ms of imports that overlap the sandbox's git commands and the baseline run)."""
    threading.Thread(target=importlib.import_module, args=("git",), name="import-gitpython",
                     daemon=True).start()


def open_repo(worktree: Path) -> git.Repo:
    """A GitPython handle on `worktree` (its cat-file helpers are reused until it is closed).
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

    handle = DetachedRepo(worktree)
    # its commands find the sandbox whatever GIT_DIR says (see REPO_LOCATING): GitPython
    # can only add to the environment, so it is told the sandbox's own
    handle.git.update_environment(GIT_DIR=handle.git_dir, GIT_WORK_TREE=str(worktree))
    return handle


def reword_head(repo: git.Repo, message: str) -> str:
    """Replace the message of the commit at `repo`'s HEAD, moving HEAD to the new commit."""
    from git import Actor, Commit

    head = repo.head.commit
    actor = Actor(IDENTITY_NAME, IDENTITY_EMAIL)
    commit = Commit.create_from_tree(
        repo, head.tree, message, parent_commits=head.parents, head=True,
        author=actor, committer=actor,
    )
    return commit.hexsha
