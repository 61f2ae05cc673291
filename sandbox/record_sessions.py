"""Regenerate the bundled recordings under sandbox/sessions/ (run after a format change).

Each recording is codeloop itself (`codeloop --task`, headless) fixing a sandbox project against
the scripted model server in tests/, with the model streaming at a realistic pace: one reply
whose hunk does not apply (so the demo shows a rejection and the precise feedback), then the fix.

    python sandbox/record_sessions.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeloop.workspace.projects import copy_project  # noqa: E402
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall  # noqa: E402

TOKENS_PER_S = 400
WRONG_CONTEXT = "    if total < 0:"


def replies(project: str) -> list[Reply]:
    fix = (ROOT / "tests" / "data" / "fixes" / f"{project}.diff").read_text()
    wrong = fix.replace(WRONG_CONTEXT, "    if total <= 0:", 1)
    explain = ("The page count adds one page too many whenever the number of items is an exact "
               "multiple of the page size: `total // per_page + 1`. Ceiling division fixes it.")
    return [
        Reply(text=explain + "\n\n```diff\n" + wrong + "```\n"),
        Reply(text="My context line was wrong; here is the patch against the file as it is.",
              tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix}))]),
        Reply(text="The tests pass now."),
    ]


def record(project: str) -> Path:
    with tempfile.TemporaryDirectory(prefix="codeloop-record-") as tmp:
        repo = copy_project(ROOT / "sandbox" / project, Path(tmp) / project)
        task = (repo / "TASK.md").read_text().strip()
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        with ScriptedModelServer(replies(project), tokens_per_s=TOKENS_PER_S) as server:
            done = subprocess.run(
                [sys.executable, "-m", "codeloop", "--task", task, "--base-url",
                 server.base_url, "--model", "scripted", "--test-cmd",
                 "python -m pytest -q -p no:cacheprovider"], cwd=repo, env=env)
        if done.returncode != 0:
            raise SystemExit(f"recording {project} failed (exit {done.returncode})")
        made = next((repo / ".codeloop" / "sessions").glob("*.jsonl"))
        target = ROOT / "sandbox" / "sessions" / f"{project}.jsonl"
        shutil.copyfile(made, target)
        subprocess.run([sys.executable, "-m", "codeloop", "clean"], cwd=repo, env=env,
                       capture_output=True)
        return target


if __name__ == "__main__":
    print(record("offbyone"))
