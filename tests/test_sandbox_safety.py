"""`codeloop clean` removes only what codeloop made, and sandboxes carry the repo's submodules.

Real git repos (with real submodules), the real `codeloop` as a subprocess, the scripted server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from codeloop.workspace.errors import SandboxError
from codeloop.workspace.leftovers import MTIME_SLACK_S
from codeloop.workspace.records import _hold_lock, records_home, worktrees_home
from codeloop.workspace.sandbox import Sandbox
from tests.conftest import (
    PYTEST_CMD,
    committed_repo,
    fix_diff,
    git,
    make_repo,
    run_codeloop,
    tree_state,
)
from tests.scripted_server import Reply, ScriptedModelServer


def session(repo: Path, env: dict[str, str], *replies: Reply, test_cmd: str = PYTEST_CMD
            ) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """One headless `--json` session; returns the finished process and its events."""
    with ScriptedModelServer(list(replies) or [Reply(text="Nothing to do.")]) as server:
        done = run_codeloop(repo, env, *session_args(server, test_cmd), timeout=120)
    return done, [json.loads(line) for line in done.stdout.splitlines()]


def session_args(server: ScriptedModelServer, test_cmd: str) -> list[str]:
    return ["--task", "make the tests pass", "--base-url", server.base_url, "--model", "scripted",
            "--test-cmd", test_cmd, "--warm-tests", "off", "--json"]


def ready(events: list[dict]) -> dict:
    return next(e for e in events if e["type"] == "sandbox.ready")


def worktrees(repo: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in git(repo, "worktree", "list", "--porcelain")
            .splitlines() if line.startswith("worktree ")]


def branches(repo: Path) -> list[str]:
    return git(repo, "branch", "--list", "--format=%(refname:short)", "codeloop/*").split()


def clean(repo: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    done = run_codeloop(repo, env, "clean", *flags)
    assert done.returncode == 0, done.stderr
    return done


def cache_files(env: dict[str, str]) -> list[str]:
    cache = Path(env["XDG_CACHE_HOME"])
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if "__pycache__" not in p.parts)


# ---------------------------------------------------------------- only what codeloop made


def test_clean_keeps_a_user_worktree_on_a_codeloop_branch_and_its_uncommitted_file(
        tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    done, events = session(repo, isolated_env)
    sandbox = ready(events)["path"]
    user_tree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "codeloop/wip", str(user_tree))
    (user_tree / "f").write_text("x\n")
    git(repo, "branch", "codeloop/mine")

    cleaned = clean(repo, isolated_env).stdout

    assert (user_tree / "f").read_text() == "x\n"
    assert sorted(branches(repo)) == ["codeloop/mine", "codeloop/wip"]
    assert worktrees(repo) == [str(repo), str(user_tree)]
    assert f"kept {user_tree}: not made by codeloop" in cleaned
    assert "kept codeloop/wip: not made by codeloop" in cleaned
    assert "kept codeloop/mine: not made by codeloop" in cleaned
    assert f"removed {sandbox}" in cleaned and f"removed {ready(events)['branch']}" in cleaned
    assert not Path(sandbox).exists()


def test_clean_dry_run_says_what_it_would_remove_and_changes_nothing(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    done, events = session(repo, isolated_env)
    sandbox, branch = ready(events)["path"], ready(events)["branch"]
    before = (worktrees(repo), branches(repo), cache_files(isolated_env))

    dry = clean(repo, isolated_env, "--dry-run").stdout

    assert f"would remove {sandbox}" in dry and f"would remove {branch}" in dry
    assert "removed" not in dry
    assert (worktrees(repo), branches(repo), cache_files(isolated_env)) == before
    assert f"removed {sandbox}" in clean(repo, isolated_env).stdout


def test_clean_keeps_a_sandbox_with_uncommitted_changes_until_forced(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    done, events = session(repo, isolated_env)
    sandbox = Path(ready(events)["path"])
    (sandbox / "pager" / "paginate.py").write_text("# mine\n")
    (sandbox / "notes.txt").write_text("mine\n")

    kept = clean(repo, isolated_env).stdout

    assert f"kept {sandbox}: uncommitted changes" in kept
    assert "pager/paginate.py" in kept and "notes.txt" in kept and "--force" in kept
    assert (sandbox / "notes.txt").read_text() == "mine\n"
    assert branches(repo) == [ready(events)["branch"]]  # its branch stays with it
    forced = clean(repo, isolated_env, "--force").stdout
    assert f"removed {sandbox}" in forced and not sandbox.exists()
    assert branches(repo) == [] and worktrees(repo) == [str(repo)]
    assert clean(repo, isolated_env).stdout.strip() == "nothing to clean"


def test_clean_keeps_a_sandbox_branch_holding_commits_not_made_by_codeloop(
        tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    done, events = session(repo, isolated_env)
    sandbox, branch = Path(ready(events)["path"]), ready(events)["branch"]
    (sandbox / "notes.txt").write_text("mine\n")
    git(sandbox, "add", "notes.txt")
    git(sandbox, "commit", "-q", "-m", "my own work")

    cleaned = clean(repo, isolated_env).stdout

    assert f"removed {sandbox}" in cleaned  # clean: the commit keeps the work
    assert f"kept {branch}: it holds commits not made by codeloop" in cleaned
    assert git(repo, "log", "-1", "--format=%s", branch).strip() == "my own work"


def test_a_running_session_keeps_its_sandbox_and_ends_normally(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    with blocked_session(tmp_path, repo, isolated_env) as (process, events, go):
        sandbox = Path(ready(events)["path"])
        during = clean(repo, isolated_env).stdout
        assert f"kept {sandbox}: in use by a running session (pid {process.pid})" in during
        assert "removed" not in during and sandbox.is_dir()
        assert ready(events)["branch"] in branches(repo)
        go.touch()
        rest, err = process.communicate(timeout=120)
    ended = [json.loads(line) for line in rest.splitlines()][-1]
    assert ended["type"] == "session.end" and ended["outcome"] == "no_edits", err
    assert "Traceback" not in err
    assert f"removed {sandbox}" in clean(repo, isolated_env).stdout


def test_a_sandbox_removed_under_a_running_session_still_ends_it(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    with blocked_session(tmp_path, repo, isolated_env) as (process, events, go):
        git(repo, "worktree", "remove", "--force", ready(events)["path"])
        go.touch()
        rest, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    events += [json.loads(line) for line in rest.splitlines()]
    ended = events[-1]
    assert ended["type"] == "session.end", err
    assert ended["branch"] == ready(events)["branch"]
    errors = [e for e in events if e["type"] == "error" and e["kind"] == "sandbox"]
    assert [e["message"] for e in errors] == [
        f"the sandbox {ready(events)['path']} is gone: cannot run git in "
        f"{ready(events)['path']}: No such file or directory"], events
    assert process.returncode == ended["exit_code"] == 1, err  # its tests could not pass


class blocked_session:  # noqa: N801 - used as a context manager, like a function
    """A `--json` session whose baseline test run waits until the test touches `go`."""

    def __init__(self, tmp_path: Path, repo: Path, env: dict[str, str]) -> None:
        self.started, self.go = tmp_path / "started", tmp_path / "go"
        self.command = (f"sh -c 'touch {self.started}; while [ ! -e {self.go} ]; "
                        f"do sleep 0.1; done; exec {PYTEST_CMD}'")
        self.repo, self.env = repo, env

    def __enter__(self) -> tuple[subprocess.Popen[str], list[dict], Path]:
        self.server = ScriptedModelServer([Reply(text="Nothing to do.")]).__enter__()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "codeloop", *session_args(self.server, self.command)],
            cwd=self.repo, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        assert self.process.stdout is not None
        events = [json.loads(self.process.stdout.readline()) for _ in range(2)]
        assert [e["type"] for e in events] == ["session.start", "sandbox.ready"]
        deadline = time.monotonic() + 60
        while not self.started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.started.exists()
        return self.process, events, self.go

    def __exit__(self, *exc: object) -> None:
        self.go.touch()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.server.__exit__(None, None, None)


def test_clean_removes_the_copies_a_killed_session_left_and_keeps_nothing_of_it(
        tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    made = subprocess.run([sys.executable, "-c", (
        "import os, sys\nfrom pathlib import Path\nfrom codeloop.workspace.sandbox import Sandbox\n"
        "making = Sandbox.create(Path(sys.argv[1]), 'killed').start_scratch_copy()\n"
        "assert not making.cancel()\n"  # a cancel waits for the copy: it is known, so removed
        "print(making.result(), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"), str(repo)],
        env=isolated_env, capture_output=True, text=True, timeout=60)
    assert made.returncode == -signal.SIGKILL, made.stderr
    copy = Path(made.stdout.strip())
    assert (copy / "pager" / "paginate.py").is_file()
    cleaned = clean(repo, isolated_env).stdout
    assert f"removed {copy}" in cleaned and "removed codeloop/killed" in cleaned
    assert worktrees(repo) == [str(repo)] and branches(repo) == []
    assert not worktrees_home(repo).exists()  # nothing of codeloop's is left in its cache


# ---------------------------------------------------------------- submodules


def repo_with_submodule(tmp_path: Path) -> Path:
    """An app whose tests import from its submodule `lib`, which holds an uncommitted change
    the tests need."""
    lib = committed_repo(tmp_path / "lib-origin", {"mylib.py": "VALUE = 1\n"})
    app = committed_repo(tmp_path / "app", {"tests/test_app.py": (
        "from lib.mylib import VALUE\n\n\ndef test_value():\n    assert VALUE == 2\n")})
    git(app, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "lib")
    git(app, "commit", "-q", "-m", "add lib")
    (app / "lib" / "mylib.py").write_text("VALUE = 2\n")
    return app


def submodule_state(repo: Path) -> tuple[dict[str, bytes], str, list[str]]:
    """The files of the user's submodule `lib`, its status, and what its git dir holds."""
    lib, modules = repo / "lib", repo / ".git" / "modules" / "lib"
    files = {str(p.relative_to(lib)): p.read_bytes() for p in sorted(lib.rglob("*"))
             if p.is_file() and p.name != ".git"}
    files["<index>"] = (modules / "index").read_bytes()
    return files, git(lib, "status", "--porcelain"), sorted(p.name for p in modules.iterdir())


def test_a_session_whose_tests_import_from_a_submodule_passes_its_baseline(
        tmp_path, isolated_env):
    repo = repo_with_submodule(tmp_path)
    before = (tree_state(repo), submodule_state(repo))
    done, events = session(repo, isolated_env)
    assert done.returncode == 0, done.stderr
    baseline = next(e for e in events if e["type"] == "test.done")
    assert baseline["passed"] and baseline["counts"]["passed"] == 1
    sandbox = Path(ready(events)["path"])
    assert (sandbox / "lib" / "mylib.py").read_text() == "VALUE = 2\n"
    # the user's repo and their submodule are as they were
    assert (tree_state(repo), submodule_state(repo)) == before

    cleaned = clean(repo, isolated_env).stdout
    assert f"removed {sandbox}" in cleaned and not sandbox.exists()
    assert worktrees(repo) == [str(repo)] and branches(repo) == []
    assert git(repo / "lib", "worktree", "list").count("\n") == 1


def test_a_path_inside_a_submodule_is_refused_naming_the_submodule(tmp_path, isolated_env,
                                                                   monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env["XDG_CACHE_HOME"])
    repo = repo_with_submodule(tmp_path)
    sandbox = Sandbox.create(repo, "sub")
    try:
        assert sandbox.submodule_of("lib/mylib.py") == "lib"
        assert sandbox.submodule_of("lib") == "lib"
        assert sandbox.submodule_of("tests/test_app.py") is None
        assert sandbox.submodule_of("libx/mylib.py") is None
        sandbox.refuse_submodule_edits(["tests/test_app.py"])
        with pytest.raises(SandboxError, match="lib/mylib.py is inside the submodule lib"):
            sandbox.refuse_submodule_edits(["tests/test_app.py", "lib/mylib.py"])
        # the warm runner's scratch copy carries the submodule too, and goes away whole
        copy = sandbox.start_scratch_copy().result(timeout=60)
        assert (copy / "lib" / "mylib.py").read_text() == "VALUE = 2\n"
        sandbox.discard_scratch(copy)
        deadline = time.monotonic() + 30
        while copy.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not copy.exists() and str(copy) not in worktrees(repo)
    finally:
        sandbox.close()
    assert [p.name for p in records_home(repo).glob("*.json")] == ["sub.json"]


def test_a_submodule_commit_missing_from_the_users_clone_is_a_clear_error_leaving_nothing(
        tmp_path, isolated_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env["XDG_CACHE_HOME"])
    repo = repo_with_submodule(tmp_path)
    missing = "1234567890" * 4
    git(repo, "update-index", "--cacheinfo", f"160000,{missing},lib")
    git(repo, "commit", "-q", "-m", "lib at a commit this clone never fetched")
    with pytest.raises(SandboxError, match="submodule lib: commit 1234567890.. is not in your"):
        Sandbox.create(repo, "gone", at="HEAD")
    assert worktrees(repo) == [str(repo)] and branches(repo) == []
    assert list(records_home(repo).iterdir()) == []


def test_a_patch_inside_a_submodule_is_rejected_and_the_model_told_why(tmp_path, isolated_env):
    repo = repo_with_submodule(tmp_path)
    into_lib = ("--- a/lib/mylib.py\n+++ b/lib/mylib.py\n@@ -1 +1 @@\n-VALUE = 2\n+VALUE = 3\n")
    done, events = session(repo, isolated_env, Reply(text=f"```diff\n{into_lib}```"),
                           Reply(text="Nothing more."))
    rejected = [e for e in events if e["type"] == "patch.rejected"]
    assert len(rejected) == 1, [e["type"] for e in events]
    assert "lib/mylib.py is inside the submodule lib" in rejected[0]["reason"]
    # the refusal is what the model reads next, and nothing was written
    second = [e for e in events if e["type"] == "model.request"][1]
    assert "inside the submodule lib" in json.dumps(second["messages"])
    assert (Path(ready(events)["path"]) / "lib" / "mylib.py").read_text() == "VALUE = 2\n"
    assert done.returncode == 0, done.stderr  # the baseline passed, and still does


# ---------------------------------------------------------------- review findings


def made_and_closed(repo: Path, name: str, tests: Callable[[Path], object] = lambda _: None,
                    user: Callable[[Path], object] | None = None) -> Sandbox:
    """A sandbox made and its session ended the way a session ends it. In between, `user` does
    what someone did in it by hand, then (past the slack on modification times) `tests` does
    what the session's test runs did, inside a test run."""
    sandbox = Sandbox.create(repo, name)
    if user is not None:
        user(sandbox.path)
        time.sleep(MTIME_SLACK_S + 0.2)
    with sandbox.test_run():
        tests(sandbox.path)
    sandbox.close()
    return sandbox


def test_clean_keeps_edits_made_in_the_sandbox_while_its_session_ran(tmp_path, isolated_env,
                                                                     monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env["XDG_CACHE_HOME"])
    repo = make_repo(tmp_path, "offbyone")

    def by_hand(path: Path) -> None:
        (path / "pager" / "paginate.py").write_text("# my own work\n")  # a REPL user's edit
        (path / "notes.txt").write_text("mine\n")

    def test_run(path: Path) -> None:
        (path / "pager" / "left_by_tests.txt").write_text("an artifact\n")

    sandbox = made_and_closed(repo, "during", test_run, by_hand).path
    (sandbox / "notes.txt").write_text("mine, changed after the end too\n")

    kept = clean(repo, isolated_env).stdout

    assert f"kept {sandbox}: uncommitted changes" in kept, kept
    assert "pager/paginate.py" in kept and "notes.txt" in kept
    assert "left_by_tests.txt" not in kept  # there, unchanged, when the session ended: its own
    assert (sandbox / "pager" / "paginate.py").read_text() == "# my own work\n"
    (sandbox / "pager" / "paginate.py").write_text(
        git(sandbox, "show", "HEAD:pager/paginate.py"))
    (sandbox / "notes.txt").unlink()
    assert f"removed {sandbox}" in clean(repo, isolated_env).stdout


def test_clean_keeps_a_new_file_made_by_hand_while_its_session_ran(tmp_path, isolated_env,
                                                                  monkeypatch):
    # only untracked files: before, every untracked file there at the session's end was taken
    # for its test runs' own, and the sandbox removed with the user's new file
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env["XDG_CACHE_HOME"])
    repo = make_repo(tmp_path, "offbyone")
    sandbox = made_and_closed(repo, "new-file", lambda p: (p / "junit.xml").write_text("<x/>"),
                              lambda p: (p / "idea.py").write_text("mine\n")).path

    kept = clean(repo, isolated_env).stdout

    assert f"kept {sandbox}: uncommitted changes: idea.py" in kept, kept
    assert "junit.xml" not in kept and (sandbox / "idea.py").read_text() == "mine\n"


def test_clean_keeps_a_changed_test_artifact_and_everything_of_a_killed_session(
        tmp_path, isolated_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env["XDG_CACHE_HOME"])
    repo = make_repo(tmp_path, "offbyone")
    ended = made_and_closed(repo, "ended", lambda p: (p / "out.log").write_text("run 1\n")).path
    (ended / "out.log").write_text("edited by hand afterwards\n")
    killed = Sandbox.create(repo, "killed")  # (never closed: as if killed)
    (killed.path / "out.log").write_text("run 1\n")
    killed._record.release()  # type: ignore[union-attr] - its process is gone

    kept = clean(repo, isolated_env).stdout

    assert f"kept {ended}: uncommitted changes: out.log" in kept, kept
    assert f"kept {killed.path}: uncommitted changes: out.log" in kept, kept


@pytest.mark.parametrize("inherited", [("GIT_DIR",),
                                       ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"),
                                       ("GIT_DIR", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                                        "GIT_COMMON_DIR")])
def test_git_variables_inherited_from_a_hook_never_turn_the_sandbox_onto_the_users_repo(
        tmp_path, isolated_env, inherited):
    # before: with GIT_DIR the patch was committed onto the user's main; with all three the
    # commit failed (the patch rejected); either way the tests' git saw the user's repository
    repo = make_repo(tmp_path, "offbyone")
    git(repo, "branch", "-m", "main")
    before = (git(repo, "rev-parse", "main"), tree_state(repo))
    seen = tmp_path / "seen"
    test_cmd = f"sh -c 'git rev-parse --show-toplevel >> {seen}; exec {PYTEST_CMD}'"
    values = {"GIT_DIR": str(repo / ".git"), "GIT_WORK_TREE": str(repo),
              "GIT_INDEX_FILE": str(repo / ".git" / "index"),  # as inside a git hook
              "GIT_OBJECT_DIRECTORY": str(repo / ".git" / "objects"),  # (GitPython's own
              "GIT_COMMON_DIR": str(repo / ".git")}  # ref and object lookups read these)
    env = {**isolated_env, **{name: values[name] for name in inherited}}
    with ScriptedModelServer([Reply(text=f"```diff\n{fix_diff('offbyone')}```")]) as server:
        done = run_codeloop(repo, env, *session_args(server, test_cmd), timeout=120)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, done.stderr
    sandbox, branch = ready(events)["path"], ready(events)["branch"]
    assert (git(repo, "rev-parse", "main"), tree_state(repo)) == before
    assert git(repo, "log", "-1", "--format=%s", branch).startswith("codeloop turn 1")
    assert seen.read_text().split() == [sandbox, sandbox]  # the tests' git saw the sandbox


def test_a_locked_sandbox_or_a_branch_git_cannot_delete_is_kept_with_the_reason(
        tmp_path, isolated_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env["XDG_CACHE_HOME"])
    repo = make_repo(tmp_path, "offbyone")
    locked = made_and_closed(repo, "locked")
    git(repo, "worktree", "lock", "--reason", "keep me", str(locked.path))
    busy = made_and_closed(repo, "busy")
    (repo / ".git" / "refs" / "heads" / "codeloop" / "busy.lock").write_text("")  # git at work
    gone = made_and_closed(repo, "gone")
    broken = made_and_closed(repo, "broken")
    (repo / ".git" / "worktrees" / "broken" / "index").write_bytes(b"not an index")

    done = run_codeloop(repo, isolated_env, "clean")

    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"kept {locked.path}: locked: keep me" in done.stdout, done.stdout
    assert "kept codeloop/locked: its sandbox is kept" in done.stdout
    assert f"removed {busy.path}" in done.stdout
    assert "kept codeloop/busy: git could not delete it: " in done.stdout
    assert f"removed {gone.path}" in done.stdout and "removed codeloop/gone" in done.stdout
    assert f"kept {broken.path}: git could not read its status: " in done.stdout
    assert locked.path.is_dir() and broken.path.is_dir()
    assert sorted(branches(repo)) == ["codeloop/broken", "codeloop/busy", "codeloop/locked"]
    # once git is done, and the lock is lifted, the next clean removes them
    (repo / ".git" / "refs" / "heads" / "codeloop" / "busy.lock").unlink()
    git(repo, "worktree", "unlock", str(locked.path))
    git(broken.path, "read-tree", "HEAD")  # (a new index)
    clean(repo, isolated_env)
    assert branches(repo) == [] and worktrees(repo) == [str(repo)]


def test_a_session_starting_while_clean_removes_the_records_folder_still_gets_its_lock(
        tmp_path):
    lock = tmp_path / "records" / "s1.lock"  # (`clean` removed the empty folder just now)
    fd = _hold_lock(lock, wait=True)
    assert fd is not None and lock.is_file()
    os.close(fd)


def test_unrecorded_sandboxes_of_an_older_codeloop_are_named_as_such_and_kept(
        tmp_path, isolated_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env["XDG_CACHE_HOME"])
    repo = make_repo(tmp_path, "offbyone")
    older = worktrees_home(repo) / "older"  # where codeloop put it, before it kept records
    git(repo, "worktree", "add", "-q", "-b", "codeloop/older", str(older))

    kept = clean(repo, isolated_env).stdout

    assert (f"kept {older}: no record of it (made by an older codeloop?): remove it with "
            f"`git worktree remove {older}`") in kept, kept
    assert "kept codeloop/older: its sandbox is kept" in kept
    assert older.is_dir() and branches(repo) == ["codeloop/older"]


def test_clean_from_a_linked_worktree_finds_the_sandboxes_made_from_the_main_one(
        tmp_path, isolated_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env["XDG_CACHE_HOME"])
    repo = make_repo(tmp_path, "offbyone")
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked))
    from_main = made_and_closed(repo, "from-main").path
    from_linked = made_and_closed(linked, "from-linked").path
    assert from_main.parent == from_linked.parent  # one home for the repository's sandboxes

    cleaned = clean(linked, isolated_env).stdout

    assert f"removed {from_main}" in cleaned and f"removed {from_linked}" in cleaned, cleaned
    assert "not made by codeloop" not in cleaned and branches(repo) == []
    assert sorted(worktrees(repo)) == sorted([str(repo), str(linked)])


def test_a_kept_sandbox_survives_gc_pruning_in_the_users_submodule(tmp_path, isolated_env,
                                                                   monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env["XDG_CACHE_HOME"])
    repo = repo_with_submodule(tmp_path)  # lib's uncommitted change: a commit nothing names
    sandbox = made_and_closed(repo, "kept").path
    # weeks later, git's automatic gc in the user's submodule prunes unreachable objects
    git(repo / "lib", "-c", "gc.pruneExpire=now", "-c", "gc.reflogExpire=now",
        "-c", "gc.reflogExpireUnreachable=now", "gc", "-q", "--prune=now")

    assert git(sandbox / "lib", "status", "--porcelain") == ""
    assert git(sandbox / "lib", "show", "HEAD:mylib.py") == "VALUE = 2\n"
    assert (sandbox / "lib" / "mylib.py").read_text() == "VALUE = 2\n"
