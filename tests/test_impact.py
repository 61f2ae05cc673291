"""The pytest plugin's selections and traces on real pytest runs, and what the coverage map says
a change affects.

Each test writes a small project, runs real pytest on it with `-p codeloop_select` (the plugin's
directory alone on PYTHONPATH, as a cold run loads it), and reads pytest's own JUnit report and
the plugin's trace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from codeloop.testrunner.impact import (
    PLUGIN,
    PLUGIN_DIR,
    CoverageMap,
    Group,
    Selection,
    read_trace,
)
from tests.conftest import write_files

PROJECT = {
    "calc/__init__.py": "",
    "calc/add.py": "def add(a, b):\n    return a + b\n",
    "calc/mul.py": "def mul(a, b):\n    return a * b\n",
    "calc/consts.py": "LIMIT = 10\n",
    "tests/test_add.py": "from calc.add import add\n\n\ndef test_add():\n"
                         "    assert add(1, 2) == 3\n\n\ndef test_add_zero():\n"
                         "    assert add(0, 0) == 0\n",
    "tests/test_mul.py": "from calc.consts import LIMIT\nfrom calc.mul import mul\n\n\n"
                         "def test_mul():\n    assert mul(2, 3) == 6\n\n\n"
                         "def test_limit():\n    assert LIMIT == 10\n",
}


def _run(root: Path, *groups: Group, exitfirst: bool = False
         ) -> tuple[dict[str, str], dict[str, dict[str, list[str]]]]:
    """(outcome per node id, in the order they ran; the trace) of a real pytest run."""
    outcomes, trace, _ = _run_reported(root, *groups, exitfirst=exitfirst)
    return outcomes, trace


def _run_reported(root: Path, *groups: Group, exitfirst: bool = False):
    junit, trace, spec = root / "report.xml", root / "trace.json", root / "spec.json"
    report = root / "stages.json"
    spec.write_text(Selection(groups, exitfirst).spec(root, trace, report))
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR), "CODELOOP_SELECT": str(spec)}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                    PLUGIN, f"--junitxml={junit}", "tests"], cwd=root, env=env,
                   capture_output=True, text=True, timeout=60)
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        node = f"tests/{case.get('classname').split('.')[-1]}.py::{case.get('name')}"
        outcomes[node] = "failed" if case.find("failure") is not None else "passed"
    return outcomes, read_trace(trace), json.loads(report.read_text())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_files(tmp_path / "project", PROJECT)


def test_a_selection_runs_only_its_tests_and_new_ones(project: Path):
    only, _ = _run(project, Group("failing", only=("tests/test_add.py::test_add",)))
    assert only == {"tests/test_add.py::test_add": "passed"}
    known = ("tests/test_add.py::test_add", "tests/test_add.py::test_add_zero",
             "tests/test_mul.py::test_mul")
    new, _ = _run(project, Group("affected", only=(), unknown=True, known=known))
    assert new == {"tests/test_mul.py::test_limit": "passed"}  # the one the map has not seen
    staged, _ = _run(project, Group("failing", only=known[2:]), Group("rest"))
    assert list(staged)[0] == "tests/test_mul.py::test_mul" and len(staged) == 4


def test_the_trace_names_the_project_files_each_test_ran(project: Path):
    _, trace = _run(project, Group("full", trace="always"))
    assert trace["tests/test_add.py::test_add"] == {"calc/add.py": ["add"],
                                                    "tests/test_add.py": ["test_add"]}
    assert trace["tests/test_mul.py::test_mul"] == {"calc/mul.py": ["mul"],
                                                    "tests/test_mul.py": ["test_mul"]}
    # module-level code runs at import, in no test: LIMIT's module is in no test's files
    assert trace["tests/test_mul.py::test_limit"] == {"tests/test_mul.py": ["test_limit"]}
    assert all(not f.startswith("<") and "site-packages" not in f
               for files in trace.values() for f in files)


def test_cheap_tracing_is_left_out_where_it_is_not_cheap(project: Path):
    _, trace = _run(project, Group("full", trace="cheap"))
    assert bool(trace) is hasattr(sys, "monitoring")


def test_the_map_says_which_tests_a_change_affects(project: Path):
    coverage = CoverageMap()
    _, trace = _run(project, Group("full", trace="always"))
    coverage.record(project, trace, whole_suite=True)
    assert coverage.affected(project) == set()
    (project / "calc" / "add.py").write_text("def add(a, b):\n    return b + a\n")
    assert coverage.affected(project) == {"tests/test_add.py::test_add",
                                          "tests/test_add.py::test_add_zero"}
    # once those ran again on the new file, nothing is stale
    _, again = _run(project, Group("affected", only=tuple(coverage.affected(project)),
                                   trace="always"))
    coverage.record(project, {k: v for k, v in again.items()}, whole_suite=False)
    assert coverage.affected(project) == set()


@pytest.mark.parametrize("change", ["calc/consts.py", "tests/conftest.py", "calc/new.py"])
def test_a_change_no_test_is_known_to_run_affects_what_cannot_be_told(project: Path, change):
    coverage = CoverageMap()
    _, trace = _run(project, Group("full", trace="always"))
    coverage.record(project, trace, whole_suite=True)
    (project / change).write_text("LIMIT = 11\n")
    assert coverage.affected(project) is None


def test_a_map_without_a_whole_suite_trace_cannot_tell(project: Path):
    coverage = CoverageMap()
    _, trace = _run(project, Group("failing", only=("tests/test_add.py::test_add",),
                                   trace="always"))
    coverage.record(project, trace, whole_suite=False)
    assert coverage.affected(project) is None


SHAPES = ("class Square:\n    def __init__(self, side):\n        self.side = side\n\n"
          "    def area(self):\n        return self.side ** 2\n\n"
          "    def perimeter(self):\n        return 4 * self.side\n\n\n"
          "def helper(x):\n    def inner(y):\n        return y + 1\n    return inner(x)\n")


def test_the_map_is_per_function_and_survives_a_move_and_a_save(tmp_path: Path):
    root = write_files(tmp_path / "p", {
        "shapes.py": SHAPES,
        "tests/test_shapes.py": "from shapes import Square, helper\n\n\n"
                                "def test_area():\n    assert Square(3).area() == 9\n\n\n"
                                "def test_perimeter():\n    assert Square(3).perimeter() == 12\n"
                                "\n\ndef test_helper():\n    assert helper(1) == 2\n"})
    coverage = CoverageMap()
    _, trace = _run(root, Group("full", trace="always"))
    assert trace["tests/test_shapes.py::test_area"]["shapes.py"] == ["Square.__init__",
                                                                     "Square.area"]
    assert trace["tests/test_shapes.py::test_helper"]["shapes.py"] == ["helper"]  # (inner's)
    coverage.record(root, trace, whole_suite=True)
    shapes = root / "shapes.py"
    shapes.write_text("\n\n" + SHAPES)  # everything moved, nothing changed
    assert coverage.affected(root) == set()
    shapes.write_text(SHAPES.replace("4 * self.side", "self.side * 4"))
    assert coverage.affected(root) == {"tests/test_shapes.py::test_perimeter"}
    shapes.write_text(SHAPES.replace("return y + 1", "return 1 + y"))
    again = CoverageMap.from_json(coverage.to_json())  # as the next session reads it
    assert again.affected(root) == {"tests/test_shapes.py::test_helper"}
    shapes.write_text("import math\n" + SHAPES)  # module-level code: every test of the file
    assert again.affected(root) == set(trace)


def test_a_failing_group_stops_the_run_after_its_last_test(project: Path):
    (project / "calc" / "add.py").write_text("def add(a, b):\n    return a - b\n")
    ran, _, report = _run_reported(
        project, Group("failing", only=("tests/test_add.py::test_add",
                                        "tests/test_add.py::test_add_zero")), Group("rest"))
    assert ran == {"tests/test_add.py::test_add": "failed",
                   "tests/test_add.py::test_add_zero": "passed"}
    assert report == {"groups": ["failing"], "stopped": "failing", "traced_all": False}
    ran, _, report = _run_reported(project, Group("failing", only=("tests/test_mul.py::test_mul",)),
                                   Group("rest"))
    assert len(ran) == 4 and report["stopped"] is None and report["groups"] == ["failing", "rest"]
