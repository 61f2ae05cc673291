"""The workspace: the git sandbox beside the user's repo, every git command codeloop runs,
the records of what codeloop made, and `clean`.

    git.py        running git (the only module that does) and GitPython; read-only questions
    errors.py     SandboxError, GitError, SandboxDamaged
    repo.py       the user's repo: find it, its exclude file, snapshots, submodules
    records.py    where codeloop's worktrees live, their records and locks
    sandbox.py    one session's worktree: Sandbox, start_sandbox
    commit.py     committing planned edits all or nothing, and putting back
    leftovers.py  whose the untracked files of a worktree are
    clean.py      `codeloop clean`
    projects.py   sample projects copied into repositories of their own

Import from the module that owns a name: this package imports nothing, so that importing it
costs nothing (`codeloop --version` never imports GitPython).
"""
