"""Cold pytest against the warm runner: the floor, whole suites, and a one-bug task end to end.

Prints, cold vs warm, the minimum and median wall time of: one trivial test (the floor); the
full suite of each sandbox project; one larger real suite (more-itertools, from its PyPI sdist);
a two-test suite in a venv with hypothesis installed (from PyPI), cold, warm before the runner
has learned what the run imports lazily, and warm after (target: ≤ 0.25× cold); then
`codeloop --task` fixing sandbox/offbyone against the scripted server at unlimited speed
(start-up, baseline, one turn, the verifying run): a project's first session (no earlier
self-check to trust, so a cold baseline) and later ones, with warm_tests off and auto (target:
≤ 0.6 s); and more-itertools with a one-line bug fixed in one turn, verify full and affected,
against one cold full run of its suite (targets: the run after the patch ≤ 0.2×, the session ≤
1.6×).

    python benchmarks/test_runner.py [--repeat 7] [--e2e-repeat 7]
                                     [--only hypothesis|more-itertools]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeloop.testrunner.run import run_tests  # noqa: E402
from codeloop.testrunner.warm import WarmRunner  # noqa: E402
from codeloop.workspace.projects import copy_project  # noqa: E402
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall  # noqa: E402

COMMAND = f"{sys.executable} -m pytest -q -p no:cacheprovider"
LARGER = "more-itertools==10.5.0"
HYPOTHESIS_SUITE = ("from hypothesis import given, strategies as st\n\n"
                    "@given(st.integers())\ndef test_integers(x):\n    assert int(x) == x\n\n"
                    "def test_plain():\n    assert 1 + 1 == 2\n")


async def timings(root: Path, repeat: int) -> tuple[list[float], list[float], str]:
    cold, warm = [], []
    summary = ""
    for _ in range(repeat):
        result = await run_tests(COMMAND, root, 300, lambda _: None)
        cold.append(result.duration_ms)
        summary = result.summary
    runner = WarmRunner(COMMAND, root)
    await runner.launch()
    try:
        for _ in range(repeat):
            warm.append((await run_tests(COMMAND, root, 300, lambda _: None,
                                         warm=runner)).duration_ms)
    finally:
        await runner.close()
    return cold, warm, summary


def hypothesis_environment(where: Path) -> tuple[str, Path]:
    """(test command, project): a venv with pytest and hypothesis, and a two-test suite."""
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True)
    python = where / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "pytest", "hypothesis"],
                   check=True, capture_output=True)
    (where / "project" / "tests").mkdir(parents=True)
    (where / "project" / "tests" / "test_prop.py").write_text(HYPOTHESIS_SUITE)
    return f"{python} -m pytest -q -p no:cacheprovider", where / "project"


async def learning(command: str, root: Path, repeat: int) -> dict[str, list[float]]:
    """Cold runs; each fresh runner's first run (nothing learned yet); its second, started at
    once (so it waits for the runner to import what the first learned, which a model's answer
    hides in a session) and third; and the first run of a runner started with what was
    learned (as the next session's is)."""
    times: dict[str, list[float]] = {"cold": [], "before": [], "after": [], "settled": [],
                                     "next": []}
    for _ in range(repeat):
        times["cold"].append((await run_tests(command, root, 300, lambda _: None)).duration_ms)
    learned: list[str] = []
    for _ in range(repeat):
        runner = WarmRunner(command, root)
        await runner.launch()
        try:
            times["before"].append((await run_tests(command, root, 300, lambda _: None,
                                                    warm=runner)).duration_ms)
            times["after"].append((await run_tests(command, root, 300, lambda _: None,
                                                   warm=runner)).duration_ms)
            times["settled"].append((await run_tests(command, root, 300, lambda _: None,
                                                     warm=runner)).duration_ms)
            learned = runner.learned
        finally:
            await runner.close()
    for _ in range(repeat):
        runner = WarmRunner(command, root)
        runner.learned = list(learned)
        await runner.launch()
        try:
            times["next"].append((await run_tests(command, root, 300, lambda _: None,
                                                  warm=runner)).duration_ms)
        finally:
            await runner.close()
    print(f"  ({len(learned)} modules learned)")
    return times


def learning_rows(times: dict[str, list[float]]) -> None:
    cold = statistics.median(times["cold"])
    labels = {"cold": "cold", "before": "warm, nothing learned yet",
              "after": "warm, 2nd run (waits on learning)", "settled": "warm, 3rd run (learned)",
              "next": "warm, next session (memo)"}
    for key, label in labels.items():
        median = statistics.median(times[key])
        print(f"  {label:<36} min {min(times[key]):6.0f} / median {median:6.0f} ms   "
              f"{median / cold:5.2f}x cold")


def row(name: str, cold: list[float], warm: list[float], summary: str) -> None:
    print(f"  {name:<28} cold {min(cold):7.0f} / {statistics.median(cold):7.0f} ms   "
          f"warm {min(warm):6.0f} / {statistics.median(warm):6.0f} ms   "
          f"{statistics.median(cold) / statistics.median(warm):4.1f}x   ({summary})")


def larger_suite(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                    ":all:", LARGER, "-d", str(where)], check=True, capture_output=True)
    archive = next(where.glob("*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    return where / archive.name.removesuffix(".tar.gz")


def one_task(repo: Path, cache: Path, patch: str, label: str, *flags: str
             ) -> tuple[float, list[dict]]:
    """One `codeloop --task` whose model answers with `patch`: its wall time (ms) and events."""
    reply = Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"patch": patch}))])
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    with ScriptedModelServer([reply]) as server:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "codeloop", "--task", label, "--base-url", server.base_url,
             *flags, "--json"], cwd=repo, env=env, capture_output=True, text=True)
        wall = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"the task {label!r} failed:\n{done.stderr[-3000:]}")
    return wall, [json.loads(line) for line in done.stdout.splitlines()]


def end_to_end(workdir: Path, cache: Path, warm_tests: str) -> tuple[float, dict[str, float]]:
    """One `codeloop --task` run: its wall time, and when (ms after codeloop's event stream
    opened) the session started, the sandbox was ready, the baseline and the verifying run were
    done, and the session ended."""
    repo = copy_project(ROOT / "sandbox" / "offbyone", workdir / f"e2e-{warm_tests}")
    fix = (ROOT / "tests" / "data" / "fixes" / "offbyone.diff").read_text()
    wall, events = one_task(repo, cache, fix, "fix the pager", "--test-cmd", COMMAND,
                            "--warm-tests", warm_tests)
    marks = {"start": events[0]["t"],
             "sandbox": next(e["t"] for e in events if e["type"] == "sandbox.ready"),
             # (none when a patch stopped the baseline confirming a remembered one)
             "baseline": next((e["t"] for e in events
                               if e["type"] == "test.done" and e["turn"] == 0), float("nan")),
             "verified": [e["t"] for e in events if e["type"] == "test.done"][-1],
             "end": events[-1]["t"]}
    return wall, {name: t * 1000 for name, t in marks.items()}


BUG = ("    partial_size = full_size - 1\n", "    partial_size = full_size - 2\n")
MI_FIX = ("*** Begin Patch\n*** Update File: more_itertools/more.py\n"
          "@@ def chunked_even(iterable, n):\n     full_size = q + (1 if r > 0 else 0)\n"
          f"-{BUG[1]}+{BUG[0]}     num_full = length - partial_size * num_lists\n"
          "*** End Patch\n")


def more_itertools_session(source: Path, repo: Path, cache: Path, verify: str
                           ) -> tuple[float, dict]:
    """One `codeloop --task` fixing the injected bug: its wall time and the patch's test run."""
    if not repo.exists():
        copy_project(source, repo)
    wall, events = one_task(repo, cache, MI_FIX, "fix chunked_even", "--test-cmd",
                            f"{COMMAND} tests", "--verify", verify)
    return wall, [e for e in events if e["type"] == "test.done"][-1]


def more_itertools_sessions(where: Path, repeat: int) -> None:
    source = larger_suite(where / "sdist")
    more = source / "more_itertools" / "more.py"
    more.write_text(more.read_text().replace(*BUG))
    cold = [asyncio.run(run_tests(f"{COMMAND} tests", source, 300, lambda _: None)).duration_ms
            for _ in range(repeat)]
    full = statistics.median(cold)
    print(f"\nmore-itertools 10.5.0, bug at more.py:4412, fixed in one turn; one cold full run "
          f"of its suite: median {full:.0f} ms of {repeat}; sessions: median of {repeat}")
    for verify in ("full", "affected"):
        for label, fresh in (("first session", True), ("later sessions", False)):
            results = []
            if not fresh:  # the memos (trust, learned modules, baseline) of an earlier session
                more_itertools_session(source, where / f"{verify}-later", where /
                                       f"cache-{verify}", verify)
            for n in range(repeat):
                name = f"{verify}-{n}" if fresh else f"{verify}-later"
                cache = where / (f"cache-{verify}-{n}" if fresh else f"cache-{verify}")
                results.append(more_itertools_session(source, where / name, cache, verify))
            wall = statistics.median(w for w, _ in results)
            patch_run = statistics.median(r["duration_ms"] for _, r in results)
            print(f"  verify={verify:<8} {label:<15} session {wall:6.0f} ms "
                  f"({wall / full:.2f}x a cold full run); the run after the patch "
                  f"{patch_run:5.0f} ms ({patch_run / full:.2f}x; {results[-1][1]['scope']}, "
                  f"{results[-1][1]['summary']})")


def e2e_line(label: str, runs: list[tuple[float, dict[str, float]]]) -> None:
    walls = [wall for wall, _ in runs]
    marks = {name: statistics.median(m[name] for _, m in runs) for name in runs[0][1]}
    done = [m["baseline"] for _, m in runs if not math.isnan(m["baseline"])]
    baseline = (f"done {statistics.median(done):.0f}" if done else "") + (
        f" (stopped by the patch in {len(runs) - len(done)} of {len(runs)})"
        if len(done) < len(runs) else "")
    print(f"  {label:<48} {statistics.median(walls):5.0f} ms (min {min(walls):.0f})\n"
          f"      events at: session.start {marks['start']:.0f}, sandbox.ready "
          f"{marks['sandbox']:.0f}, baseline {baseline}, verified "
          f"{marks['verified']:.0f}, session.end {marks['end']:.0f} (medians)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--e2e-repeat", type=int, default=7)
    parser.add_argument("--only", choices=["hypothesis", "more-itertools", "e2e"],
                        help="run one section alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="codeloop-runner-") as tmp_name:
        tmp = Path(tmp_name)
        if args.only in (None, "hypothesis"):
            command, project = hypothesis_environment(tmp / "hypothesis")
            print(f"hypothesis installed: 2 tests, wall ms over {args.repeat} runs each")
            learning_rows(asyncio.run(learning(command, project, args.repeat)))
        if args.only in (None, "more-itertools"):
            compileall.compile_dir(ROOT / "codeloop", quiet=1)
            more_itertools_sessions(tmp / "mi", max(3, args.e2e_repeat // 2))
        if args.only in ("hypothesis", "more-itertools"):
            return
        if args.only is None:
            pytest_runs(tmp, args.repeat)
        # as an install leaves them: a source checkout run with PYTHONDONTWRITEBYTECODE set
        # (as on these machines) would otherwise recompile codeloop at every start
        compileall.compile_dir(ROOT / "codeloop", quiet=1)
        print(f"\none-bug task end to end (codeloop start-up, baseline, one turn, verifying run;"
              f" scripted server at unlimited speed; codeloop byte-compiled), median of "
              f"{args.e2e_repeat}, times in ms")
        e2e_line("warm_tests=auto, first session of the project", [
            end_to_end(tmp / f"first-{n}", tmp / f"cache-{n}", "auto")
            for n in range(args.e2e_repeat)])
        for mode in ("off", "auto"):
            e2e_line(f"warm_tests={mode}, later sessions (self-check kept)", [
                end_to_end(tmp / f"{mode}-{n}", tmp / "cache-0", mode)
                for n in range(args.e2e_repeat)])


def pytest_runs(tmp: Path, repeat: int) -> None:
    """Cold against warm pytest runs: a trivial floor, the sandbox projects, a larger suite."""
    floor = tmp / "floor"
    (floor / "tests").mkdir(parents=True)
    (floor / "tests" / "test_one.py").write_text("def test_one():\n    assert True\n")
    print(f"pytest runs, min / median of {repeat} (wall ms, as codeloop measures a run)")
    row("floor (1 trivial test)", *asyncio.run(timings(floor, repeat)))
    for project in ("offbyone", "twomodules", "newfile"):
        root = copy_project(ROOT / "sandbox" / project, tmp / project)
        row(f"sandbox/{project}", *asyncio.run(timings(root, repeat)))
    root = larger_suite(tmp / "sdist")
    row(LARGER, *asyncio.run(timings(root, max(3, repeat // 2))))


if __name__ == "__main__":
    main()
