"""Parse + place + render of one 10-file, 50-hunk change, in each edit dialect.

A generated project of 10 modules with 10 functions each; the change edits one line in every
other function (5 hunks a file, 50 in all), written as a git unified diff, Aider's plain udiff
(`@@ ... @@`, whole functions), a V4A envelope (`@@ def` anchors) and SEARCH/REPLACE blocks. Each
run is what the agent does with a reply's edit: `plan` (read the dialect, check the paths, place
every hunk, all or nothing) and then the `diffstat`. Prints the median and the slowest of the
runs per dialect, in ms; the target is a median of at most 5 ms each (printed, never asserted).

    python benchmarks/edits.py [--runs 20]
"""

from __future__ import annotations

import argparse
import difflib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeloop.edits.patch import diffstat, plan  # noqa: E402

FILES, FUNCTIONS = 10, 10
TARGET_MS = 5.0


def function(i: int, changed: bool) -> list[str]:
    sign = "-" if changed else "+"
    return [f"def f{i}(x):", f"    a = x + {i}", "    b = a * 2", "    c = b - 1",
            f"    d = c {sign} {i}", "    e = d * 3", "    f = e - 2", "    return f", "", ""]


def module(changed: bool) -> list[str]:
    lines = ['"""A generated module."""', "", ""]
    for i in range(FUNCTIONS):
        lines += function(i, changed and i % 2 == 1)
    return lines[:-2]


def text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def unified(names: list[str]) -> str:
    before, after = module(False), module(True)
    return "".join(f"diff --git a/{name} b/{name}\n" + "".join(difflib.unified_diff(
        [line + "\n" for line in before], [line + "\n" for line in after],
        f"a/{name}", f"b/{name}")) for name in names)


def plain_udiff(names: list[str]) -> str:
    out = []
    for name in names:
        out += [f"--- {name}", f"+++ {name}"]
        for i in range(1, FUNCTIONS, 2):
            old, new = function(i, False)[:8], function(i, True)[:8]
            out += ["@@ ... @@", *(f" {line}" for line in old[:4]), f"-{old[4]}", f"+{new[4]}",
                    *(f" {line}" for line in old[5:])]
    return text(out)


def v4a(names: list[str]) -> str:
    out = ["*** Begin Patch"]
    for name in names:
        out.append(f"*** Update File: {name}")
        for i in range(1, FUNCTIONS, 2):
            old, new = function(i, False), function(i, True)
            out += [f"@@ def f{i}(x):", *(f" {line}" for line in old[1:4]), f"-{old[4]}",
                    f"+{new[4]}", *(f" {line}" for line in old[5:8])]
    return text([*out, "*** End Patch"])


def search_replace(names: list[str]) -> str:
    out = []
    for name in names:
        for i in range(1, FUNCTIONS, 2):
            old, new = function(i, False), function(i, True)
            out += [name, "<<<<<<< SEARCH", *old[3:6], "=======", *new[3:6], ">>>>>>> REPLACE",
                    ""]
    return text(out)


def time_plan(root: Path, edit: str, runs: int) -> list[float]:
    expected = text(module(True))
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        edits = plan(root, [edit], lambda paths: {})
        diffstat(edits)
        timings.append((time.perf_counter() - start) * 1000)
        assert len(edits) == FILES and all(e.after == expected for e in edits), "wrong result"
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    names = [f"pkg/mod{n}.py" for n in range(FILES)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pkg").mkdir()
        for name in names:
            (root / name).write_text(text(module(False)))
        print(f"{FILES} files, {FILES * FUNCTIONS // 2} hunks, median of {args.runs} runs "
              f"(target ≤ {TARGET_MS:.0f} ms)")
        for label, build in (("unified (git)", unified), ("plain udiff", plain_udiff),
                             ("V4A", v4a), ("SEARCH/REPLACE", search_replace)):
            edit = build(names)
            timings = time_plan(root, edit, args.runs)
            median = statistics.median(timings)
            verdict = "ok" if median <= TARGET_MS else "over target"
            print(f"  {label:<15} {median:6.2f} ms median, {max(timings):6.2f} ms slowest, "
                  f"{len(edit):,} bytes  {verdict}")


if __name__ == "__main__":
    main()
