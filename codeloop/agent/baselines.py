"""The last baseline test result on a tree, remembered: a session on the same files and test
command asks the model at once with it, while its own baseline run confirms it.

Owns the memo: `cache_dir()/baselines/<key>.json`, keyed on the test command and the git tree
the sandbox starts from (HEAD plus the user's uncommitted work, committed there), holding what
the model is shown of a result. Written after each finished baseline; a memo that cannot be read
or written is no memo (the session then waits for its baseline, as without one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from pathlib import Path

from codeloop.core.dirs import cache_dir
from codeloop.core.events import TestFailure
from codeloop.testrunner.run import TestResult
from codeloop.workspace.errors import GitError
from codeloop.workspace.git import has_changes, tree_id

_KEPT = ("exit_code", "summary", "counts", "duration_ms", "output", "ran")


def _memo(root: Path, command: str) -> Path | None:
    try:
        tree = tree_id(root)
        if not tree or has_changes(root):
            return None
    except (GitError, OSError):  # (a sandbox removed under the session: no memo)
        return None
    key = hashlib.sha1(json.dumps([command, tree]).encode()).hexdigest()
    return cache_dir() / "baselines" / f"{key}.json"


def remembered(root: Path, command: str) -> TestResult | None:
    """The baseline result last seen for these files and this command, if any."""
    memo = _memo(root, command)
    if memo is None:
        return None
    try:
        data = json.loads(memo.read_text(encoding="utf-8"))
        failures = [TestFailure(**failure) for failure in data.pop("failures")]
        return TestResult(**{k: data[k] for k in _KEPT}, failures=failures)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def remember(root: Path, command: str, result: TestResult) -> None:
    """Keep a finished baseline (not one cut short by its timeout) for the next session."""
    memo = _memo(root, command)
    if memo is None or result.timed_out:
        return
    data = {k: getattr(result, k) for k in _KEPT}
    data["failures"] = [dataclasses.asdict(f) for f in result.failures]
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(data), encoding="utf-8")


def same_verdict(a: TestResult, b: TestResult) -> bool:
    """Whether two results tell the model the same: exit code, counts, which tests fail."""
    return (a.exit_code, sorted(a.counts.items()), sorted(f.id for f in a.failures)) == (
        b.exit_code, sorted(b.counts.items()), sorted(f.id for f in b.failures))
