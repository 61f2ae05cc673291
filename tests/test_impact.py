"""The pytest plugin's selections and traces on real pytest runs, and what the coverage map says
a change affects.

Each test writes a small project, runs real pytest on it with `-p codeloop_select` (the plugin's
directory alone on PYTHONPATH, as a cold run loads it), and reads pytest's own JUnit report and
the plugin's trace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from codeloop.testrunner.impact import PLUGIN, PLUGIN_DIR, CoverageMap, Selection, read_trace
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


def _run(root: Path, selection: Selection) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(outcome per node id, the trace) of a real pytest run with the selection."""
    junit, trace, spec = root / "report.xml", root / "trace.json", root / "spec.json"
    spec.write_text(selection.spec(root, trace))
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR), "CODELOOP_SELECT": str(spec)}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                    PLUGIN, f"--junitxml={junit}", "tests"], cwd=root, env=env,
                   capture_output=True, text=True, timeout=60)
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        node = f"tests/{case.get('classname').split('.')[-1]}.py::{case.get('name')}"
        outcomes[node] = "failed" if case.find("failure") is not None else "passed"
    return outcomes, read_trace(trace)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_files(tmp_path / "project", PROJECT)


def test_a_selection_runs_only_its_tests_and_new_ones(project: Path):
    only, _ = _run(project, Selection("failing", only=("tests/test_add.py::test_add",)))
    assert only == {"tests/test_add.py::test_add": "passed"}
    known = ("tests/test_add.py::test_add", "tests/test_add.py::test_add_zero",
             "tests/test_mul.py::test_mul")
    new, _ = _run(project, Selection("affected", only=(), unknown=True, known=known))
    assert new == {"tests/test_mul.py::test_limit": "passed"}  # the one the map has not seen
    rest, _ = _run(project, Selection("rest", exclude=known[:2]))
    assert set(rest) == {"tests/test_mul.py::test_mul", "tests/test_mul.py::test_limit"}


def test_the_trace_names_the_project_files_each_test_ran(project: Path):
    _, trace = _run(project, Selection("full", trace="always"))
    assert trace["tests/test_add.py::test_add"] == ["calc/add.py", "tests/test_add.py"]
    assert trace["tests/test_mul.py::test_mul"] == ["calc/mul.py", "tests/test_mul.py"]
    # module-level code runs at import, in no test: LIMIT's module is in no test's files
    assert trace["tests/test_mul.py::test_limit"] == ["tests/test_mul.py"]
    assert all(not f.startswith("<") and "site-packages" not in f
               for files in trace.values() for f in files)


def test_cheap_tracing_is_left_out_where_it_is_not_cheap(project: Path):
    _, trace = _run(project, Selection("full", trace="cheap"))
    assert bool(trace) is hasattr(sys, "monitoring")


def test_the_map_says_which_tests_a_change_affects(project: Path):
    coverage = CoverageMap()
    _, trace = _run(project, Selection("full", trace="always"))
    coverage.record(project, trace, whole_suite=True)
    assert coverage.affected(project) == set()
    (project / "calc" / "add.py").write_text("def add(a, b):\n    return b + a\n")
    assert coverage.affected(project) == {"tests/test_add.py::test_add",
                                          "tests/test_add.py::test_add_zero"}
    # once those ran again on the new file, nothing is stale
    _, again = _run(project, Selection("affected", only=tuple(coverage.affected(project))))
    coverage.record(project, {k: v for k, v in again.items()}, whole_suite=False)
    assert coverage.affected(project) == set()


@pytest.mark.parametrize("change", ["calc/consts.py", "tests/conftest.py", "calc/new.py"])
def test_a_change_no_test_is_known_to_run_affects_what_cannot_be_told(project: Path, change):
    coverage = CoverageMap()
    _, trace = _run(project, Selection("full", trace="always"))
    coverage.record(project, trace, whole_suite=True)
    (project / change).write_text("LIMIT = 11\n")
    assert coverage.affected(project) is None


def test_a_map_without_a_whole_suite_trace_cannot_tell(project: Path):
    coverage = CoverageMap()
    _, trace = _run(project, Selection("failing", only=("tests/test_add.py::test_add",),
                                       trace="always"))
    coverage.record(project, trace, whole_suite=False)
    assert coverage.affected(project) is None
