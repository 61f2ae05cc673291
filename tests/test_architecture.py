"""The architecture, checked from the source: the layer contracts, no import cycles, only the
workspace runs git, sizes a reader can hold in their head."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "codeloop"
LIMITS = {"module": 400, "class": 250, "function": 80}  # lines


def test_the_layer_contracts_hold() -> None:
    done = subprocess.run([Path(sys.executable).with_name("lint-imports"), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True)
    kept = [line for line in done.stdout.splitlines() if line.endswith((" KEPT", " BROKEN"))]
    assert len(kept) >= 4, done.stdout + done.stderr  # (the contracts were read)
    assert done.returncode == 0, done.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import cycles between modules (strongly connected components of two or more)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in graph.modules:
                continue
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return found


def test_there_are_no_import_cycles() -> None:
    graph = grimp.build_graph("codeloop", exclude_type_checking_imports=True)
    assert len(graph.modules) > 40
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "looped"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from looped import b\n")
    (package / "b.py").write_text("def later():\n    from looped import a\n")
    (package / "c.py").write_text("from looped import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("looped")) == [["looped.a", "looped.b"]]


def _too_long(path: Path, rel: str) -> list[str]:
    """`what name: N lines` for the module, and each class and function in it, over the limits."""
    text = path.read_text(encoding="utf-8")
    over = []
    if len(text.splitlines()) > LIMITS["module"]:
        over.append(f"module {rel}: {len(text.splitlines())} lines")
    for node in ast.walk(ast.parse(text)):
        kind = ("class" if isinstance(node, ast.ClassDef) else "function"
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else "")
        if kind:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size = node.end_lineno - first + 1
            if size > LIMITS[kind]:
                over.append(f"{kind} {rel}:{node.name}: {size} lines")
    return over


def test_modules_classes_and_functions_stay_small() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40
    assert [problem for path in modules
            for problem in _too_long(path, str(path.relative_to(ROOT)))] == []


def test_the_size_check_measures_what_it_says(tmp_path: Path) -> None:
    body = "\n".join(f"        x{n} = {n}" for n in range(79))
    module = tmp_path / "big.py"
    module.write_text(f"class C:\n    @staticmethod\n    def f():\n{body}\n"
                      f"def g():\n{body}\n" + "\n" * 320)
    assert _too_long(module, "big.py") == [
        "module big.py: 482 lines", "function big.py:f: 81 lines"]


WORKSPACE = PACKAGE / "workspace"
_PROCESS_MAKERS = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output", "getoutput",
                   "getstatusoutput"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
}


def _starts_git(node: ast.expr) -> bool:
    """Whether a process's first argument is a literal git: `["git", ...]`, `"git"`, or a
    shell line `"git ..."`."""
    if isinstance(node, ast.List | ast.Tuple):
        return bool(node.elts) and _starts_git(node.elts[0])
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.split(" ", 1)[0] == "git")


def _makers(tree: ast.Module) -> set[str]:
    """The names a module calls processes by: `subprocess.run`, or a bare `run` it imported."""
    names = {f"{module}.{name}" for module, names in _PROCESS_MAKERS.items() for name in names}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in _PROCESS_MAKERS:
            names |= {alias.asname or alias.name for alias in node.names
                      if alias.name in _PROCESS_MAKERS[node.module]}
    return names


def _git_uses(path: Path) -> list[str]:
    """`line: what` wherever the module at `path` starts a git process or imports GitPython."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    makers = _makers(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported = [node.module]
        else:
            imported = []
        if any(name == "git" or name.startswith("git.") for name in imported):
            found.append(f"{node.lineno}: imports GitPython")
        if (isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in makers
                and _starts_git(node.args[0])):
            found.append(f"{node.lineno}: runs git")
    return found


def test_only_the_workspace_runs_git() -> None:
    outside = [path for path in sorted(PACKAGE.rglob("*.py"))
               if not path.is_relative_to(WORKSPACE)]
    assert outside, "no modules found"
    assert [f"{path.relative_to(PACKAGE.parent)}:{use}"
            for path in outside for use in _git_uses(path)] == []


def test_the_git_check_sees_the_ways_a_module_runs_git(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("import subprocess\nimport asyncio\nfrom subprocess import run as go\n"
                      "import git.cmd\n"
                      "subprocess.run(['git', 'status'])\n"
                      "asyncio.create_subprocess_exec('git', 'grep')\n"
                      "go(('git', *args))\n"
                      "subprocess.check_output('git ls-files', shell=True)\n"
                      "subprocess.run(['python', 'git'])\n")
    assert _git_uses(module) == ["4: imports GitPython", "5: runs git", "6: runs git",
                                 "7: runs git", "8: runs git"]
