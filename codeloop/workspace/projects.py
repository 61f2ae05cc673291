"""Sample projects made into repositories of their own, for the demo, the benchmarks and tests.

Owns only the copy; it never touches a user's repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from codeloop.workspace.git import run_git


def copy_project(source: Path, dest: Path) -> Path:
    """A new git repository at `dest` holding a copy of `source`, committed (for the demo, the
    benchmarks and the tests, which all work on copies of the sample projects)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    run_git(dest, "init", "-q")
    run_git(dest, "add", "-A")
    run_git(dest, "commit", "-q", "--no-gpg-sign", "-m", f"{source.name}: sample project")
    return dest
