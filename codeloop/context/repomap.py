"""The repo map: every file, with the top-level classes and functions of Python files.

Owns building it fast and caching it by git tree hash. Top-level definitions are exactly the
statements that start at column 0, so one compiled regular expression over each file finds them
without building a syntax tree (on a 2,000-file repository that is ~20x faster than `ast`, which
took seconds). The map is bounded; it goes into the stable prefix of every request.
"""

from __future__ import annotations

import re
from pathlib import Path

from codeloop.core.dirs import cache_dir
from codeloop.workspace.errors import GitError
from codeloop.workspace.git import has_changes, project_files, tree_id

MAP_CHARS = 12_000
MAX_OUTLINED = 400  # Python files outlined; the rest are listed by name
MAX_FILE_BYTES = 512_000
_TOP_LEVEL = re.compile(rb"^(class|def|async[ \t]+def)[ \t]+([A-Za-z_]\w*)", re.MULTILINE)


def maps_dir() -> Path:
    """Where repo maps are kept, one per tree."""
    return cache_dir() / "repomap"


def outline(path: Path) -> str:
    """`class A, def f` for a Python file's top-level definitions ("" when it has none)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return ""
        data = path.read_bytes()
    except OSError:
        return ""
    return ", ".join(("class " if kind == b"class" else "def ") + name.decode()
                     for kind, name in _TOP_LEVEL.findall(data))


def build(root: Path, files: list[str]) -> str:
    """The map text for `files` (paths relative to `root`), bounded to MAP_CHARS."""
    lines: list[str] = []
    used = outlined = 0
    for index, rel in enumerate(files):
        text = rel
        if rel.endswith(".py") and outlined < MAX_OUTLINED:
            outlined += 1
            if found := outline(root / rel):
                text = f"{rel}: {found}"
        if used + len(text) + 1 > MAP_CHARS:
            lines.append(f"... and {len(files) - index} more files")
            break
        lines.append(text)
        used += len(text) + 1
    return "\n".join(lines)


def tracked_files(root: Path) -> list[str]:
    """The files of the tree at `root`: tracked, and untracked but not ignored."""
    try:
        listed = project_files(root)
    except GitError:  # (not a repository: no files)
        return []
    return sorted(set(listed.splitlines()))


def repo_map(root: Path) -> str:
    """The map of the tree checked out at `root`, from the cache when this tree was seen."""
    tree = tree_id(root)
    cached = maps_dir() / f"{tree}.txt" if tree and not has_changes(root) else None
    if cached is not None and cached.is_file():
        return cached.read_text(encoding="utf-8")
    text = build(root, tracked_files(root))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(text, encoding="utf-8")
    return text
