"""Harness overhead per turn: a real `codeloop --task` session against the scripted server.

The server answers at unlimited speed; the sample project is sandbox/offbyone. The first N-1
replies apply a harmless patch (a new notes file) so the tests keep failing, the last one fixes
the bug, so every turn pays a real apply and a real pytest run. Prints per-turn spans, the
median and p95 of harness overhead (turn wall time minus prompt build, connect, model time,
tools, patch apply and the test process), and each span's share of the turn time.

    python benchmarks/loop_overhead.py [--turns 10] [--sessions 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeloop.core.stats import percentile  # noqa: E402
from codeloop.workspace.projects import copy_project  # noqa: E402
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall  # noqa: E402

SPANS = ("prompt_ms", "connect_ms", "ttft_ms", "decode_ms", "tools_ms", "apply_ms", "test_ms",
         "overhead_ms")


def _patch(diff: str) -> ToolCall:
    return ToolCall("apply_patch", json.dumps({"patch": diff}))


def script(turns: int) -> list[Reply]:
    harmless = [
        Reply(text=f"Trying step {n}.", tool_calls=[_patch(
            f"--- /dev/null\n+++ b/notes/step{n}.txt\n@@ -0,0 +1 @@\n+step {n}\n")])
        for n in range(1, turns)
    ]
    fix = (ROOT / "tests" / "data" / "fixes" / "offbyone.diff").read_text()
    return [*harmless, Reply(text="The real fix.", tool_calls=[_patch(fix)])]


def run_session(turns: int, workdir: Path) -> list[dict]:
    repo = copy_project(ROOT / "sandbox" / "offbyone", workdir / "offbyone")
    env = {**os.environ, "XDG_CACHE_HOME": str(workdir / "cache"),
           "XDG_CONFIG_HOME": str(workdir / "config")}
    with ScriptedModelServer(script(turns)) as server:
        done = subprocess.run(
            [sys.executable, "-m", "codeloop", "--json", "--task", "fix the pager",
             "--base-url", server.base_url, "--model", "scripted",
             "--max-iterations", str(turns),
             "--test-cmd", f"{sys.executable} -m pytest -q -p no:cacheprovider"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    if not events or events[-1].get("outcome") != "passed":
        raise SystemExit(f"session did not pass (exit {done.returncode}):\n{done.stderr}")
    return [e["spans"] for e in events if e["type"] == "turn.end"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=3)
    args = parser.parse_args()
    all_spans: list[dict] = []
    for session in range(1, args.sessions + 1):
        with tempfile.TemporaryDirectory(prefix="codeloop-bench-") as tmp:
            spans = run_session(args.turns, Path(tmp))
        all_spans.extend(spans)
        print(f"session {session}: {len(spans)} turns")
        print("  turn " + " ".join(f"{s[:-3]:>9}" for s in SPANS))
        for turn, row in enumerate(spans, 1):
            print(f"  {turn:>4} " + " ".join(f"{row[s]:>9.2f}" for s in SPANS))
    overhead = [s["overhead_ms"] for s in all_spans]
    print(f"\n{len(all_spans)} turns over {args.sessions} session(s), scripted server at "
          "unlimited speed, loopback")
    print(f"harness overhead per turn: median {statistics.median(overhead):.2f} ms, "
          f"p95 {percentile(overhead, 0.95):.2f} ms, max {max(overhead):.2f} ms")
    print(f"prompt build per turn:     median "
          f"{statistics.median(s['prompt_ms'] for s in all_spans):.2f} ms")
    totals = {name: sum(s[name] for s in all_spans) for name in SPANS}
    whole = sum(totals.values())
    print("share of turn wall time:   " + ", ".join(
        f"{name[:-3]} {100 * value / whole:.1f}%" for name, value in totals.items()))


if __name__ == "__main__":
    main()
