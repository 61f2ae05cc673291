"""Which paths a patch may touch: inside the sandbox, outside `.git/`, printable, and only
regular files of their own (never through a symbolic link, never a directory).

Owns path safety only; it reads the file tree (what is a link, a file, a directory) and never
changes it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from codeloop.edits.errors import PatchError

CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def check_path(root: Path, rel: str) -> str:
    """Refuse paths outside the sandbox (absolute, `..`, via a symlink), inside `.git/`, or
    holding a control character (a NUL cannot even be passed to the OS)."""
    control = CONTROL_CHARACTER.search(rel)
    if control:
        raise PatchError(f"refused: {rel!r} contains a control character "
                         f"({control.group(0)!r}); file names here are printable text")
    if not rel or rel.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", rel) or "\\" in rel:
        raise PatchError(f"refused: {rel!r} is an absolute or non-POSIX path; use paths "
                         "relative to the repository root")
    parts = PurePosixPath(rel).parts
    if ".." in parts:
        raise PatchError(f"refused: {rel!r} climbs out of the repository with '..'")
    if ".git" in parts:
        raise PatchError(f"refused: {rel!r} is inside .git/")
    real_root = root.resolve()
    if not (real_root / rel).resolve().is_relative_to(real_root):
        raise PatchError(f"refused: {rel!r} leads outside the repository through a symlink")
    return str(PurePosixPath(*parts))


def check_target(root: Path, rel: str) -> None:
    """Refuse to change what is not a regular file of its own: a symbolic link, or a path
    through one (writing through it would change the file it points to, which git does not see
    as changed: the link would be committed as it was), a directory, or a path under a file.
    A link is refused, not followed: the model learns the real path, and no reply reaches one
    file by two names."""
    parts = PurePosixPath(rel).parts
    for depth in range(1, len(parts) + 1):
        here, name = root.joinpath(*parts[:depth]), "/".join(parts[:depth])
        if here.is_symlink():
            via = (f"{rel!r} is a symbolic link" if depth == len(parts)
                   else f"{rel!r} leads through {name!r}, a symbolic link")
            real = (root / rel).resolve()
            advice = (f"; patch {real.relative_to(root.resolve()).as_posix()!r} itself"
                      if real.is_relative_to(root.resolve()) else "")
            raise PatchError(f"refused: {via} (to {os.readlink(here)!r}){advice}")
        if depth < len(parts) and here.exists() and not here.is_dir():
            raise PatchError(f"refused: {rel!r} cannot be created: {name!r} is a file")
    if (root / rel).is_dir():
        kind = "a submodule (a repository of its own)" if (root / rel / ".git").exists() \
            else "a directory"
        raise PatchError(f"refused: {rel!r} is {kind}; a patch changes files")
