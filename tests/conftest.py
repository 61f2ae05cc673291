"""Shared fixtures: copies of the sandbox projects as real git repos, and running codeloop.

Every session test runs the real `codeloop` as a subprocess against the scripted model server on
127.0.0.1, with its caches and config pointed into the test's own tmp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from codeloop.workspace.projects import copy_project

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = ROOT / "sandbox"
FIXES = Path(__file__).resolve().parent / "data" / "fixes"
PYTEST_CMD = f"{sys.executable} -m pytest -q -p no:cacheprovider"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
        capture_output=True, text=True).stdout


def write_files(root: Path, files: dict[str, str]) -> Path:
    """`root` holding `files` (relative path -> text)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def committed_repo(root: Path, files: dict[str, str]) -> Path:
    """A git repo at `root` holding `files`, committed."""
    write_files(root, files)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def make_repo(tmp_path: Path, project: str) -> Path:
    """A committed git repo holding a copy of `sandbox/<project>`."""
    return copy_project(SANDBOX / project, tmp_path / project)


def fix_diff(project: str) -> str:
    return (FIXES / f"{project}.diff").read_text()


def tree_state(repo: Path) -> dict[str, bytes]:
    """Every file of the working tree (codeloop's own recordings aside) plus the git index."""
    state = {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(repo).parts
             and ".codeloop" not in p.relative_to(repo).parts}
    state["<index>"] = (repo / ".git" / "index").read_bytes()
    state["<status>"] = git(repo, "status", "--porcelain").encode()
    return state


def read_recording(repo: Path) -> list[dict]:
    files = sorted((repo / ".codeloop" / "sessions").glob("*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no API key and codeloop's caches/config inside tmp_path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CODELOOP_") and k != "OPENAI_API_KEY"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return env


def run_codeloop(repo: Path, env: dict[str, str], *args: str, timeout: float = 60
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codeloop", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def pypi_sources(tmp_path_factory: pytest.TempPathFactory):
    """`get(name, version)`: the unpacked source distribution of a real project from PyPI (its
    own test suite included), downloaded once per test run; skipped, saying why, only where
    the package registry cannot be reached."""
    downloads = tmp_path_factory.mktemp("pypi")

    def get(name: str, version: str) -> Path:
        unpacked = downloads / f"{name}-{version}"
        if unpacked.is_dir():
            return unpacked
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", str(downloads), f"{name}=={version}"], capture_output=True, text=True)
        archives = sorted(downloads.glob(f"{name.replace('-', '?')}-{version}.tar.gz"))
        if fetched.returncode or not archives:
            pytest.skip(f"cannot download {name} {version} from the package registry: "
                        f"{fetched.stderr.strip()[-300:]}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(downloads, filter="data")
        return next(downloads.glob(f"{name.replace('-', '?')}-{version}"))

    return get
