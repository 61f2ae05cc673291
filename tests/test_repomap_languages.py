"""The repo map outlines JS/TS, Go and Rust files as it does Python: their top-level definitions,
found at column 0, within the same bound; Python files are outlined as before."""

from __future__ import annotations

import subprocess

from codeloop.context.repomap import MAX_OTHER_OUTLINED, build, repo_map
from codeloop.core.dirs import cache_dir
from tests.conftest import committed_repo, git, write_files

TS = """\
import x from "y";
export function foo(a: number) {}
export default class Widget {}
export const LIMIT = 3;
const { a, b } = require("z");
let counter = 0;
export async function* gen() {}
export interface Shape { x: number }
export type Id = string;
export enum Color { Red }
export default function () {}
  function nested() {}
declare const g: number;
export abstract class Base {}
// function commented() {}
"""
GO = """\
package b

import "fmt"

type Point struct{ X int }
type (
	A int
)

func New() *Point { return nil }
func (p *Point) Move(dx int) {}
func (Point) Name() string { return fmt.Sprint(1) }
func Generic[T any](t T) {}
"""
RUST = """\
use std::fmt;
pub struct Point { x: i32 }
pub(crate) enum Kind { A }
pub trait Shape {}
impl Point {}
impl fmt::Display for Point {}
impl<T: Clone> Shape for Vec<T> where T: Copy {}
pub fn add(a: i32) -> i32 { a }
pub async fn fetch() {}
pub const fn zero() -> i32 { 0 }
unsafe fn raw() {}
mod tests;
pub mod util {
    fn inner() {}
}
pub type Alias = i32;
"""


def test_js_ts_go_and_rust_files_list_their_top_level_definitions(tmp_path):
    root = write_files(tmp_path, {"web/a.ts": TS, "b/b.go": GO, "src/lib.rs": RUST,
                                  "web/c.mjs": "export default 3;\n", "README.md": "# r\n",
                                  "web/empty.js": "// nothing\n"})
    lines = build(root, ["README.md", "b/b.go", "src/lib.rs", "web/a.ts", "web/c.mjs",
                         "web/empty.js"]).splitlines()
    assert lines == [
        "README.md",
        "b/b.go: type Point, func New, func Point.Move, func Point.Name, func Generic",
        "src/lib.rs: struct Point, enum Kind, trait Shape, impl Point, "
        "impl fmt::Display for Point, impl Shape for Vec<T>, fn add, fn fetch, fn zero, fn raw, "
        "mod tests, mod util, type Alias",
        "web/a.ts: function foo, class Widget, const LIMIT, let counter, function gen, "
        "interface Shape, type Id, enum Color, export default function, const g, class Base",
        "web/c.mjs: export default",
        "web/empty.js",
    ]


def test_other_languages_have_their_own_bound_and_leave_python_outlined(tmp_path):
    count = MAX_OTHER_OUTLINED + 1
    files = {f"js/m{n:03}.js": f"function f{n}() {{}}\n" for n in range(count)}
    root = write_files(tmp_path, {**files, "z.py": "def late():\n    pass\n"})
    lines = build(root, [*sorted(files), "z.py"]).splitlines()
    assert lines[0] == "js/m000.js: function f0"
    assert lines[count - 2] == f"js/m{count - 2:03}.js: function f{count - 2}"
    assert lines[count - 1] == f"js/m{count - 1:03}.js"  # past the bound: by name only
    assert lines[count] == "z.py: def late"


def test_python_files_are_outlined_as_before(tmp_path):
    root = write_files(tmp_path, {"a.py": "import os\n\nclass A:\n    def m(self):\n        pass\n"
                                          "\nasync  def run():\n    pass\n\ndef f():\n    pass\n"
                                          "x = '''\ndef in_string():\n'''\n"})
    assert build(root, ["a.py"]) == "a.py: class A, def run, def f, def in_string"


def test_a_map_cached_before_other_languages_were_outlined_is_not_served(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = committed_repo(tmp_path / "r", {"index.js": "export function main() {}\n"})
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    old = cache_dir() / "repomap" / f"{tree}.txt"  # where maps were kept before
    old.parent.mkdir(parents=True)
    old.write_text("index.js")
    assert repo_map(repo) == "index.js: function main"
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True,
                          text=True).stdout == ""
