"""Context management: a byte-stable prefix, append-only history, compaction, budgets, repo map."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from codeloop.context.layout import SUMMARY_MARK, PrefixTracker
from codeloop.context.repomap import maps_dir, repo_map
from codeloop.context.tools import run_read_only
from codeloop.core.conversation import Instructions, UserText
from codeloop.core.conversation import Reply as ModelReply
from tests.conftest import PYTEST_CMD, fix_diff, git, make_repo, read_recording, run_codeloop
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall


def note_patch(n: int) -> ToolCall:
    diff = f"--- /dev/null\n+++ b/notes/step{n}.txt\n@@ -0,0 +1 @@\n+step {n}\n"
    return ToolCall("apply_patch", json.dumps({"patch": diff}))


def args(server: ScriptedModelServer, *extra: str) -> list[str]:
    return ["--task", "fix the pager", "--base-url", server.base_url, "--model", "scripted",
            "--test-cmd", PYTEST_CMD, "--json", *extra]


def test_the_prefix_is_byte_identical_and_the_history_append_only(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    replies = [Reply(tool_calls=[note_patch(n)]) for n in (1, 2)] + [
        Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))])]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, isolated_env, *args(server))
        bodies = [r.body for r in server.chat_requests]
    assert done.returncode == 0, done.stderr
    prefix = [json.dumps(b["messages"][:2]) + json.dumps(b["tools"]) for b in bodies]
    assert len(bodies) == 3 and len(set(prefix)) == 1
    for earlier, later in zip(bodies, bodies[1:], strict=False):
        assert later["messages"][:len(earlier["messages"])] == earlier["messages"]
    requests = [e for e in read_recording(repo) if e["type"] == "model.request"]
    assert [r["prefix_changed"] for r in requests] == ["", "", ""]
    assert all(r["prefix_reuse"] > 0.8 for r in requests[1:])
    assert all(r["prefix_basis"] == "bytes" for r in requests)


def test_editing_a_file_mid_session_appends_it_and_leaves_earlier_messages_alone(tmp_path,
                                                                                  isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    comment = ("--- a/pager/paginate.py\n+++ b/pager/paginate.py\n@@ -1,1 +1,2 @@\n"
               "+# looked at by codeloop\n")
    first_line = (repo / "pager" / "paginate.py").read_text().splitlines()[0]
    comment = comment.replace("@@ -1,1 +1,2 @@\n", f"@@ -1,1 +1,2 @@\n {first_line}\n")
    replies = [Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": comment}))]),
               Reply(text="Nothing more.")]
    with ScriptedModelServer(replies) as server:
        run_codeloop(repo, isolated_env, *args(server))
        first, second = (r.body["messages"] for r in server.chat_requests)
    assert second[:len(first)] == first  # nothing earlier was rewritten
    assert "# looked at by codeloop" not in json.dumps(first)
    feedback = second[-1]["content"]
    assert "pager/paginate.py" in feedback and "# looked at by codeloop" in feedback


def test_a_summary_replaces_old_turns_and_keeps_the_recent_ones(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    env = {**isolated_env, "CODELOOP_CONTEXT_WINDOW": "3000", "CODELOOP_COMPACT_AT": "0.6",
           "CODELOOP_KEEP_RECENT_TURNS": "1"}
    replies = [Reply(text=f"Step {n}.", tool_calls=[note_patch(n)]) for n in range(1, 9)]
    with ScriptedModelServer(replies) as server:
        done = run_codeloop(repo, env, *args(server, "--max-iterations", "5"))
        bodies = [r.body["messages"] for r in server.chat_requests]
    events = json.loads("[" + ",".join(done.stdout.splitlines()) + "]")
    compactions = [e for e in events if e["type"] == "context.compaction"]
    assert compactions, done.stderr
    compaction = compactions[0]
    assert compaction["reason"] == "auto" and compaction["turns_kept"] == 1
    assert compaction["tokens_after"] < compaction["tokens_before"]
    summary_request = next(i for i, b in enumerate(bodies)
                           if "replace the older turns" in str(b[-1]["content"]))
    after = bodies[summary_request + 1]
    assert after[:2] == bodies[0][:2]  # the stable prefix survives a compaction
    assert after[2]["content"].startswith(SUMMARY_MARK)
    assert "Task: fix the pager" in after[2]["content"]
    assert "test_exact_multiple_page_count" in after[2]["content"]  # the failing tests
    assert "notes/step" in after[2]["content"]  # files touched, with their diff stat
    kept = [m for m in after[3:] if m["role"] == "assistant"]
    assert len(kept) == 1 and kept[0] == bodies[summary_request][-3]  # the latest turn, verbatim


def test_a_prefix_change_is_named_by_the_section_it_starts_in():
    system, context = Instructions("S"), UserText("map")
    tools = [{"type": "function", "function": {"name": "read_file"}}]
    tracker = PrefixTracker()
    tracker.measure([system, context, UserText("task")], tools)
    grown = tracker.measure([system, context, UserText("task"), ModelReply("ok")], tools)
    assert grown.changed == "" and 0.5 < grown.reuse < 1
    assert tracker.measure([system, context], tools[:0]).changed == "tools"
    assert tracker.measure([Instructions("T"), context], []).changed == "instructions"
    summary = UserText(SUMMARY_MARK + ": ...")
    assert tracker.measure([Instructions("T"), context, summary], []).changed == ""
    assert tracker.measure([Instructions("T"), context, UserText(SUMMARY_MARK + ": new")],
                           []).changed == "summary"


def test_tool_output_is_cut_to_its_budget_keeping_head_and_tail(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "big.txt").write_text("".join(f"line {n}\n" for n in range(1, 5001)))
    out = run_read_only(root, "read_file", json.dumps({"path": "big.txt"}), limit=2000)
    assert len(out) < 2300 and "characters elided" in out
    assert "line 1\n" in out and "line 5000" in out


def test_rereading_an_unchanged_file_is_answered_with_a_reference(tmp_path, isolated_env):
    repo = make_repo(tmp_path, "offbyone")
    read = ToolCall("read_file", json.dumps({"path": "pager/paginate.py"}))
    replies = [Reply(tool_calls=[read]), Reply(tool_calls=[read]), Reply(text="Done looking.")]
    with ScriptedModelServer(replies) as server:
        run_codeloop(repo, isolated_env, *args(server))
    outputs = [e["output"] for e in read_recording(repo) if e["type"] == "tool.result"]
    assert "def page_count" in outputs[0]
    assert outputs[1].startswith("(unchanged since you read it in turn 1")


def test_the_repo_map_is_cached_by_tree_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = make_repo(tmp_path, "twomodules")
    first = repo_map(repo)
    assert "ledger/parse.py: " in first and "def parse_amount" in first
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    cached = maps_dir() / f"{tree}.txt"
    assert cached.read_text() == first
    cached.write_text("from the cache")
    assert repo_map(repo) == "from the cache"
    (repo / "ledger" / "extra.py").write_text("class Extra:\n    pass\n")
    assert "class Extra" in repo_map(repo)  # a dirty tree is never served from the cache
    assert Path(cached).read_text() == "from the cache"
