"""A session that cannot start: a clear error, exit 2, and nothing made in the repository.

Real `python -m codeloop` processes in real git repositories.
"""

from __future__ import annotations

from tests.conftest import committed_repo, git, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer


def test_a_repo_where_recordings_cannot_be_written_is_an_error_before_any_sandbox(
        tmp_path, isolated_env):
    # before: a NotADirectoryError traceback, exit 1, and a codeloop/... worktree and branch
    # left behind, never reported
    repo = committed_repo(tmp_path / "repo", {"app.py": "VALUE = 1\n",
                                              ".codeloop": "not a directory\n"})
    with ScriptedModelServer([Reply(text="never asked")]) as server:
        done = run_codeloop(repo, isolated_env, "--task", "do it", "--base-url", server.base_url,
                            "--test-cmd", "true", timeout=120)
        asked = server.chat_requests
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"cannot write recordings to {repo / '.codeloop' / 'sessions'}" in done.stderr
    assert not asked
    worktrees = [line for line in git(repo, "worktree", "list", "--porcelain").splitlines()
                 if line.startswith("worktree ")]
    assert worktrees == [f"worktree {repo}"]  # the repository's own, no sandbox
    assert git(repo, "branch", "--list", "codeloop/*").strip() == ""
    assert git(repo, "status", "--porcelain") == ""  # (the file stays as it was)


def test_a_repo_whose_git_exclude_cannot_be_written_leaves_no_recording(tmp_path, isolated_env):
    # before: an IsADirectoryError traceback, and an empty recording left in an unignored
    # .codeloop/ of the user's repository
    repo = committed_repo(tmp_path / "repo", {"app.py": "VALUE = 1\n"})
    exclude = repo / ".git" / "info" / "exclude"
    exclude.unlink(missing_ok=True)
    exclude.mkdir(parents=True)
    with ScriptedModelServer([Reply(text="never asked")]) as server:
        done = run_codeloop(repo, isolated_env, "--task", "do it", "--base-url", server.base_url,
                            "--test-cmd", "true", timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "cannot write recordings" in done.stderr and ".git/info/exclude" in done.stderr
    assert not (repo / ".codeloop").exists()
    assert git(repo, "branch", "--list", "codeloop/*").strip() == ""  # (git status itself
    # refuses such a repository)
