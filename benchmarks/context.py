"""Prefix reuse, tokens sent and compactions over a 30-turn session, per transport.

A real `codeloop --task` session on sandbox/twomodules against the scripted server (unlimited
speed): every turn applies a harmless patch and the tests keep failing, so the history grows for
30 turns; the context window is set so that the rolling summary fires during the run. Prints per
turn the client-side prefix reuse (bytes, as no tokenizer is available offline), the estimated
prompt tokens, the bytes actually uploaded, the section that broke the prefix if any, and the
compactions; then the median prefix reuse on turns without a compaction.

    python benchmarks/context.py [--turns 30] [--window 6000]
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

from codeloop.workspace.projects import copy_project  # noqa: E402
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall  # noqa: E402


def note(n: int) -> Reply:
    diff = f"--- /dev/null\n+++ b/notes/step{n}.txt\n@@ -0,0 +1 @@\n+tried step {n}\n"
    return Reply(text=f"Trying step {n}: recording what I checked.",
                 tool_calls=[ToolCall("apply_patch", json.dumps({"patch": diff}))])


def session(transport: str, turns: int, window: int, workdir: Path) -> list[dict]:
    repo = copy_project(ROOT / "sandbox" / "twomodules", workdir / transport / "twomodules")
    env = {**os.environ, "XDG_CACHE_HOME": str(workdir / "cache"),
           "XDG_CONFIG_HOME": str(workdir / "config"), "CODELOOP_CONTEXT_WINDOW": str(window)}
    replies = [note(n) for n in range(1, turns + 10)]  # spare replies for summary requests
    with ScriptedModelServer(replies) as server:
        done = subprocess.run(
            [sys.executable, "-m", "codeloop", "--json", "--task", "fix the ledger",
             "--base-url", server.base_url, "--model", "scripted", "--transport", transport,
             "--max-iterations", str(turns),
             "--test-cmd", f"{sys.executable} -m pytest -q -p no:cacheprovider"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    rows: list[dict] = []
    compacted = False
    for event in events:
        if event["type"] == "context.compaction":
            compacted = True
            print(f"  compaction before the next turn: {event['tokens_before']} -> "
                  f"{event['tokens_after']} tokens (estimate), {event['turns_replaced']} turns "
                  f"summarised, {event['turns_kept']} kept, {event['duration_ms']:.0f} ms")
        elif event["type"] == "model.request":
            rows.append({"turn": event["turn"], "reuse": event["prefix_reuse"],
                         "tokens": event["prompt_tokens_estimate"],
                         "changed": event["prefix_changed"], "after_compaction": compacted})
            compacted = False
        elif event["type"] == "model.first_byte" and rows:
            rows[-1]["bytes"] = event["request_bytes"]
        elif event["type"] == "model.done" and rows:
            rows[-1]["cached"] = event["usage"].get("cached_tokens", 0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--window", type=int, default=6_000,
                        help="context window in tokens (small, so a compaction happens)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="codeloop-context-") as tmp:
        for transport in ("chat", "responses-ws"):
            print(f"\n{transport} (window {args.window} tokens, compaction at 70 %)")
            rows = session(transport, args.turns, args.window, Path(tmp))
            print("  turn  prefix reuse  prompt tokens (est.)  bytes uploaded  prefix broke in")
            for row in rows:
                mark = "  <- after compaction" if row["after_compaction"] else ""
                print(f"  {row['turn']:>4} {row['reuse']:>13.3f} {row['tokens']:>20} "
                      f"{row.get('bytes', 0):>15}  {row['changed'] or '-'}{mark}")
            steady = [r["reuse"] for r in rows[1:] if not r["after_compaction"]]
            uploads = [r.get("bytes", 0) for r in rows]
            print(f"  median prefix reuse on turns without a compaction: "
                  f"{statistics.median(steady):.3f} over {len(steady)} turns; "
                  f"bytes uploaded: first {uploads[0]}, median {statistics.median(uploads):.0f}, "
                  f"max {max(uploads)}")


if __name__ == "__main__":
    main()
