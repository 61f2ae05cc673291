"""Failures by name from node's test runner, jest, vitest, cargo test and go test.

Each runner runs for real on a small project with one bug (one failing test, some passing, one
skipped) through `run_tests`, as a session runs it; the ids, messages, `file:line` locations and
counts it reports are checked, then what the model is shown of them. jest and vitest come from
the npm registry, installed once per test session (skipped, saying why, only where it cannot be
reached). Go runs for real where it is installed; elsewhere the test reads the output real
`go test` 1.19 printed for the same project, recorded in tests/data/runners/.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from codeloop.context.prompt import file_block, files_for_failures
from codeloop.context.windows import focus_of
from codeloop.testrunner.reports import read_report
from codeloop.testrunner.run import TestResult, run_tests
from tests.conftest import committed_repo, read_recording, run_codeloop, write_files
from tests.scripted_server import Reply, ScriptedModelServer

RECORDED = Path(__file__).resolve().parent / "data" / "runners"
MATH_JS = """\
function add(a, b) {
  return a - b;
}
function mul(a, b) {
  return a * b;
}
module.exports = { add, mul };
"""
NODE_TEST = """\
const test = require('node:test');
const assert = require('node:assert');
const { add, mul } = require('../math.js');

test('mul works', () => {
  assert.strictEqual(mul(2, 3), 6);
});

test.skip('later', () => {});

test.describe('arith', () => {
  test('add works', () => {
    assert.strictEqual(add(2, 3), 5);
  });
  test('mul again', () => {
    assert.strictEqual(mul(1, 1), 1);
  });
});
"""
JEST_TEST = """\
const { add, mul } = require('../math.js');

test('mul works', () => {
  expect(mul(2, 3)).toBe(6);
});

describe('arith', () => {
  test('add works', () => {
    expect(add(2, 3)).toBe(5);
  });
  test.skip('later', () => {});
});
"""
VITEST_TEST = "import { test, expect, describe } from 'vitest';\n" + JEST_TEST.replace(
    "const { add, mul } = require('../math.js');", "import { add, mul } from '../math.js';")


def run(command: str, cwd: Path) -> TestResult:
    return asyncio.run(run_tests(command, cwd, 120, lambda _: None))


def named(result: TestResult) -> list[tuple[str, str, str]]:
    return [(f.id, f.location, f.message) for f in result.failures]


@pytest.fixture(scope="session")
def js_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with jest and vitest installed from the npm registry, once per test session:
    math.js with a bug, a jest suite under jest_suite/ and a vitest one under vitest_suite/."""
    root = tmp_path_factory.mktemp("js-tools")
    write_files(root, {"package.json": '{"name": "m", "version": "1.0.0", "private": true}\n',
                       "math.js": MATH_JS, "jest_suite/math.test.js": JEST_TEST,
                       "vitest_suite/math.test.mjs": VITEST_TEST})
    installed = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "jest@30", "vitest@4"],
        cwd=root, capture_output=True, text=True, timeout=600)
    if installed.returncode:
        pytest.skip(f"cannot install jest and vitest from the npm registry: "
                    f"{installed.stderr.strip()[-300:]}")
    return root


def node_project(root: Path) -> Path:
    return write_files(root, {"math.js": MATH_JS, "test/math.test.js": NODE_TEST,
                              "package.json": '{"name": "m", "version": "1.0.0", '
                                              '"scripts": {"test": "node --test"}}\n'})


def test_node_test_runner_failures_are_named_from_its_tap_output(tmp_path):
    result = run("node --test", node_project(tmp_path / "p"))
    assert result.exit_code == 1
    assert result.counts == {"passed": 2, "failed": 1, "skipped": 1}
    assert named(result) == [("test/math.test.js > arith > add works", "test/math.test.js:13",
                              "Expected values to be strictly equal: -1 !== 5")]
    assert "-1 !== 5" in result.failures[0].details
    assert result.summary == "2 passed, 1 failed, 1 skipped"


def test_npm_test_wrapping_node_test_is_recognised_from_the_output(tmp_path):
    result = run("npm test", node_project(tmp_path / "p"))
    assert [f.id for f in result.failures] == ["test/math.test.js > arith > add works"]
    assert result.counts["failed"] == 1


def test_jest_failures_are_named_from_its_report_and_from_json(js_tools):
    for command in ("npx jest jest_suite", "npx jest --json jest_suite"):
        result = run(command, js_tools)
        assert result.counts == {"passed": 1, "failed": 1, "skipped": 1}, command
        [(id_, location, message)] = named(result)
        assert id_ == "jest_suite/math.test.js > arith > add works"
        assert location == "jest_suite/math.test.js:9"
        assert "expect(received).toBe(expected)" in message
        assert "Received: -1" in result.failures[0].details


def test_vitest_failures_are_named(js_tools):
    result = run("npx vitest run vitest_suite", js_tools)
    assert result.counts == {"passed": 1, "failed": 1, "skipped": 1}
    assert named(result) == [("vitest_suite/math.test.mjs > arith > add works",
                              "vitest_suite/math.test.mjs:10",
                              "AssertionError: expected -1 to be 5 // Object.is equality")]


CARGO = {
    "Cargo.toml": '[package]\nname = "calc"\nversion = "0.1.0"\nedition = "2021"\n',
    "src/lib.rs": """\
pub fn add(a: i32, b: i32) -> i32 {
    a - b
}

pub fn mul(a: i32, b: i32) -> i32 {
    a * b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_works() {
        assert_eq!(mul(2, 3), 6);
    }

    #[test]
    fn add_works() {
        assert_eq!(add(2, 3), 5);
    }

    #[test]
    #[ignore]
    fn later() {}
}
""",
    "tests/api.rs": """\
#[test]
fn api_add() {
    assert!(calc::add(1, 1) == 2, "add is broken");
}

#[test]
fn api_mul() {
    assert_eq!(calc::mul(1, 1), 1);
}
""",
}


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")
def test_cargo_test_failures_are_named_across_test_binaries(tmp_path):
    root = write_files(tmp_path / "calc", CARGO)
    result = run("cargo test --offline --no-fail-fast", root)
    assert result.counts == {"passed": 2, "failed": 2, "skipped": 1}
    assert named(result) == [
        ("tests::add_works", "src/lib.rs:20", "assertion `left == right` failed"),
        ("api_add", "tests/api.rs:3", "add is broken")]
    assert "left: -1" in result.failures[0].details


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")
def test_a_crate_that_does_not_compile_is_named_by_its_error(tmp_path):
    root = write_files(tmp_path / "calc", {**CARGO, "src/lib.rs": CARGO["src/lib.rs"].replace(
        "a - b", 'a - "x"')})
    result = run("cargo test --offline", root)
    [failure] = result.failures
    assert (failure.kind, failure.location) == ("errors", "src/lib.rs:2")
    assert failure.message.startswith("error[E0277]: cannot subtract `&str` from `i32`")


GO = {
    "go.mod": "module example.com/calc\n\ngo 1.19\n",
    "calc/calc.go": "package calc\n\nfunc Add(a, b int) int {\n\treturn a - b\n}\n\n"
                    "func Mul(a, b int) int {\n\treturn a * b\n}\n",
    "calc/calc_test.go": """\
package calc

import "testing"

func TestMul(t *testing.T) {
	if Mul(2, 3) != 6 {
		t.Fatal("mul broken")
	}
}

func TestAdd(t *testing.T) {
	if got := Add(2, 3); got != 5 {
		t.Errorf("Add(2, 3) = %d, want 5", got)
	}
}

func TestLater(t *testing.T) {
	t.Skip("not yet")
}

func TestTable(t *testing.T) {
	t.Run("small", func(t *testing.T) {})
	t.Run("big", func(t *testing.T) {
		if Add(10, 1) != 11 {
			t.Errorf("Add(10, 1) wrong")
		}
	})
}
""",
}
GO_FAILURES = [
    ("example.com/calc/calc > TestAdd", "calc/calc_test.go:13", "Add(2, 3) = -1, want 5"),
    ("example.com/calc/calc > TestTable/big", "calc/calc_test.go:25", "Add(10, 1) wrong")]


def go_result(root: Path, command: str, recorded: str, monkeypatch) -> TestResult:
    """`command` run by real go where it is installed, else its recorded real output read."""
    if shutil.which("go") is None:
        output = (RECORDED / recorded).read_text()
        counts, failures = read_report(output, root)
        return TestResult(exit_code=1, summary="", counts=counts, failures=failures)
    monkeypatch.setenv("GOCACHE", str(root.parent / "gocache"))
    monkeypatch.setenv("GOPROXY", "off")
    return run(command, root)


@pytest.mark.parametrize(("command", "recorded", "counts"), [
    ("go test ./...", "go_test.txt", {"failed": 2}),  # passes are not printed without -v
    ("go test -v ./...", "go_test_v.txt", {"passed": 2, "failed": 2, "skipped": 1}),
    ("go test -json ./...", "go_test_json.txt", {"passed": 2, "failed": 2, "skipped": 1}),
])
def test_go_test_failures_are_named(tmp_path, monkeypatch, command, recorded, counts):
    result = go_result(write_files(tmp_path / "calc", GO), command, recorded, monkeypatch)
    assert result.counts == counts
    assert named(result) == GO_FAILURES  # a parent failing through its subtest is not repeated


def test_a_go_package_that_does_not_build_is_named(tmp_path, monkeypatch):
    files = {**GO, "calc/calc.go": GO["calc/calc.go"].replace("a - b", "a - c")}
    result = go_result(write_files(tmp_path / "calc", files), "go test ./...",
                       "go_test_build_failed.txt", monkeypatch)
    assert named(result) == [("example.com/calc/calc", "calc/calc.go:4", "undefined: c")]
    assert result.failures[0].kind == "errors" and result.counts["errors"] == 1


def test_the_model_is_shown_the_files_and_lines_the_failures_point_to(tmp_path):
    root = node_project(tmp_path / "p")
    filler = "".join(f"function helper{n}(x) {{\n  return x + {n};\n}}\n" for n in range(900))
    (root / "math.js").write_text(filler + MATH_JS.replace(  # a 2,710-line file, ~39,000 chars
        "module.exports = { add, mul };",
        "function check() {\n  throw new Error('broken check');\n}\n"
        "module.exports = { add, mul, check };"))
    (root / "test/math.test.js").write_text(NODE_TEST.replace(
        "assert.strictEqual(add(2, 3), 5);", "require('../math.js').check();"))
    result = run("node --test", root)
    [failure] = result.failures
    assert failure.location == "math.js:2708"  # the innermost project frame: the throw
    assert failure.message == "broken check"
    assert files_for_failures(root, result) == ["test/math.test.js", "math.js"]
    block = file_block(root, "math.js", focus_of(root, result.failures))
    assert "shown as windows" in block
    assert " 2708    throw new Error('broken check');" in block
    assert "helper400" not in block


def test_go_and_rust_failures_point_to_their_files(tmp_path, monkeypatch):
    result = go_result(write_files(tmp_path / "calc", GO), "go test ./...", "go_test.txt",
                       monkeypatch)
    assert files_for_failures(tmp_path / "calc", result) == ["calc/calc_test.go", "calc/calc.go"]
    rust = TestResult(exit_code=101, summary="", failures=read_report(
        "running 1 test\ntest t ... FAILED\n\nfailures:\n\n---- t stdout ----\n\n"
        "thread 't' panicked at src/lib.rs:2:5:\nboom\n", tmp_path)[1])
    write_files(tmp_path, {"src/lib.rs": "fn a() {\n    panic!(\"boom\")\n}\n"})
    assert files_for_failures(tmp_path, rust) == ["src/lib.rs"]


def test_a_session_on_node_test_names_the_failing_test_to_the_model(tmp_path, isolated_env):
    repo = committed_repo(tmp_path / "repo", {"math.js": MATH_JS, "test/math.test.js": NODE_TEST})
    with ScriptedModelServer([Reply(text="Nothing to change.")]) as server:
        done = run_codeloop(repo, isolated_env, "--task", "make the tests pass", "--base-url",
                            server.base_url, "--model", "scripted", "--test-cmd", "node --test",
                            "--json")
        prompt = json.dumps(server.chat_requests[0].body["messages"])
    events = [json.loads(line) for line in done.stdout.splitlines()]
    baseline = next(e for e in events if e["type"] == "test.done" and e["turn"] == 0)
    assert baseline["counts"] == {"passed": 2, "failed": 1, "skipped": 1}
    assert [(f["id"], f["location"]) for f in baseline["failures"]] == [
        ("test/math.test.js > arith > add works", "test/math.test.js:13")]
    assert ("Failing tests:\\n- test/math.test.js > arith > add works (test/math.test.js:13): "
            "Expected values to be strictly equal: -1 !== 5") in prompt
    assert "### math.js" in prompt  # the module the failing test requires, shown whole
    assert "math.js: function add, function mul" in prompt  # the repo map outlines JS
    assert read_recording(repo) == events
