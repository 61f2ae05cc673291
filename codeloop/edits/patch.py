"""Planning a reply's diffs into exact file edits, all or nothing, or a precise refusal.

Owns `plan` (every edit of a reply read by `dialects`, each path checked by `paths`, each file's
hunks placed by `place`, renames and mode changes followed), `FileEdit` (a file's whole new
content and mode, which `Sandbox.commit_patch` writes) and `diffstat`. It reads the sandbox but
never writes to it, and never runs git: the modes git holds come from the caller's `modes_of`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codeloop.edits.dialects import parse_edit
from codeloop.edits.diff import DEV_NULL, FileHeader, Hunk
from codeloop.edits.errors import PatchError
from codeloop.edits.paths import check_path, check_target
from codeloop.edits.place import apply_hunks, lines_of, split_lines

REGULAR, EXECUTABLE = "100644", "100755"
_UNSUPPORTED_MODES = {"120000": "a symbolic link", "160000": "a submodule"}
ModesOf = Callable[[list[str]], dict[str, str]]  # paths -> the modes git's index holds


@dataclass
class FileEdit:
    """The whole effect of a patch on one file: content before and after (None = absent), its
    git mode before and after, and the path it was renamed from (its `before` is that file's)."""

    path: str
    before: str | None
    after: str | None
    already_applied: list[str] = field(default_factory=list)
    mode_before: str | None = None
    mode_after: str | None = None
    renamed_from: str | None = None

    @property
    def changed(self) -> bool:
        return (self.before != self.after or self.mode_before != self.mode_after
                or self.renamed_from is not None)


def _read(root: Path, rel: str) -> tuple[str | None, str | None]:
    """A file's content and the mode its x bit says; (None, None) when there is no file."""
    path = root / rel
    if not path.is_file():
        return None, None
    with path.open("rb") as handle:  # (one open and its fstat, not a second lookup by name)
        mode = EXECUTABLE if os.fstat(handle.fileno()).st_mode & 0o111 else REGULAR
        return handle.read().decode("utf-8", "surrogateescape"), mode


class _Plan:
    """The edits of one reply so far, keyed by path; a path renamed away reads as absent."""

    def __init__(self, root: Path, modes: dict[str, str]) -> None:
        self.root = root
        self.modes = modes  # git's own, where the patch sets a mode (else the worktree's)
        self.edits: dict[str, FileEdit] = {}

    def renamed_away(self, rel: str) -> bool:
        return any(edit.renamed_from == rel for edit in self.edits.values())

    def edit(self, rel: str) -> FileEdit:
        if self.renamed_away(rel):
            raise PatchError(f"{rel}: this reply renames it away and then changes it again; "
                             "send one diff per file")
        if rel not in self.edits:
            content, on_disk = _read(self.root, rel)
            mode = (self.modes.get(rel) or on_disk) if content is not None else None
            self.edits[rel] = FileEdit(rel, content, content, mode_before=mode, mode_after=mode)
        return self.edits[rel]

    def rename(self, source: str, rel: str) -> FileEdit:
        """The edit of `rel` that takes over `source` (already renamed: `rel`'s own edit)."""
        origin = self.edit(source)
        target = self.edits[rel].after if rel in self.edits else _read(self.root, rel)[0]
        if origin.after is None and target is not None:
            if not origin.changed:
                del self.edits[source]
            edit = self.edit(rel)
            edit.already_applied.append(f"{source} -> {rel} (already renamed)")
            return edit
        if origin.after is None:
            raise PatchError(f"{source}: the patch renames it to {rel} but it does not exist")
        if target is not None:
            raise PatchError(f"{rel}: the patch renames {source} to {rel}, which exists; "
                             "rename onto a free path, or send a diff against both files")
        del self.edits[source]
        self.edits[rel] = FileEdit(rel, origin.before, origin.after, origin.already_applied,
                                   origin.mode_before, origin.mode_after, renamed_from=source)
        return self.edits[rel]


def _check_mode(rel: str, mode: str | None) -> None:
    if mode not in (None, REGULAR, EXECUTABLE):
        kind = _UNSUPPORTED_MODES.get(mode or "", "not a file mode git knows")
        raise PatchError(f"{rel}: mode {mode} ({kind}) is not supported; codeloop writes "
                         f"regular files ({REGULAR}) and executables ({EXECUTABLE})")


def _plan_header(plans: _Plan, header: FileHeader, hunks: list[Hunk]) -> None:
    source, target = header.source, header.target
    if header.unsupported:
        raise PatchError(f"{target if target != DEV_NULL else source}: {header.unsupported}")
    rel = check_path(plans.root, target if target != DEV_NULL else source)
    check_target(plans.root, rel)
    _check_mode(rel, header.new_mode)
    if header.rename and source not in (DEV_NULL, rel):
        origin = check_path(plans.root, source)
        check_target(plans.root, origin)
        edit = plans.rename(origin, rel)
    else:
        if source not in (DEV_NULL, target):
            check_path(plans.root, source)
        edit = plans.edit(rel)
    _plan_file(edit, rel, edit.after, source, target, hunks)
    if edit.after is None:
        edit.mode_after = None
    elif header.new_mode or edit.mode_after is None:
        edit.mode_after = header.new_mode or REGULAR


def _index_modes(root: Path, headers: list[FileHeader], modes_of: ModesOf) -> dict[str, str]:
    """The modes git's index holds for the existing files whose mode a header sets: git's
    mode, not the x bit on disk (which git ignores under core.fileMode=false). One call of
    `modes_of` (one git call), and none for the usual patch that sets no mode."""
    names = []
    for header in headers:
        if header.new_mode and header.source != DEV_NULL:
            with contextlib.suppress(PatchError):  # (a bad path is refused when planned)
                names.append(check_path(root, header.source))
    return modes_of(names) if names else {}


def plan(root: Path, diffs: list[str], modes_of: ModesOf) -> list[FileEdit]:
    """Compute every file edit of a reply's diffs, all or nothing; raises PatchError.

    `modes_of(paths)` gives the mode git's index holds for each of those it tracks (the
    sandbox's `index_modes`)."""
    errors: list[str] = []
    files: list[tuple[FileHeader, list[Hunk]]] = []
    for diff_text in diffs:
        try:
            files.extend(parse_edit(diff_text))
        except PatchError as exc:
            errors.append(str(exc))
    plans = _Plan(root, _index_modes(root, [header for header, _ in files], modes_of))
    for header, hunks in files:
        try:
            _plan_header(plans, header, hunks)
        except PatchError as exc:
            errors.append(str(exc))
    if errors:
        raise PatchError("\n".join(errors))
    return [edit for edit in plans.edits.values() if edit.changed or edit.already_applied]


def _plan_file(edit: FileEdit, rel: str, current: str | None, source: str, target: str,
               hunks: list[Hunk]) -> None:
    if target == DEV_NULL:
        if current is None:
            edit.already_applied.append(f"{rel} (already deleted)")
            return
        edit.after = None
        return
    if current is None and source != DEV_NULL and (not hunks or any(
            line[0] in " -" for hunk in hunks for line in hunk.lines)):
        raise PatchError(f"{rel}: the file does not exist; to create it use '--- /dev/null' "
                         "(in a V4A patch '*** Add File:', in SEARCH/REPLACE an empty SEARCH)")
    if source == DEV_NULL and current is not None:
        wanted = "".join(line[1:] + "\n" for h in hunks for line in h.lines if line[0] == "+")
        if current.rstrip() == wanted.rstrip() or lines_of(current) == lines_of(wanted):
            edit.already_applied.append(f"{rel} (already created)")
            return
        raise PatchError(f"{rel}: the patch creates this file but it already exists; "
                         "send a diff against its current content instead")
    if not hunks and current is not None:
        return  # (a rename or a mode change alone leaves the content as it is, byte for byte)
    after, already = apply_hunks(rel, current or "", hunks)
    edit.after = after
    edit.already_applied.extend(already)


def _trimmed(a: list[str], b: list[str]) -> tuple[int, list[str], list[str]]:
    """How many lines `a` and `b` share at their start and end, and what lies between."""
    start, stop = 0, min(len(a), len(b))
    while start < stop and a[start] == b[start]:
        start += 1
    end = 0
    while end < stop - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return start + end, a[start:len(a) - end], b[start:len(b) - end]


_MOST_EDITS = 500  # (Myers costs ~(N+M)·D steps: past this, difflib's estimate, as before)


def _shortest_edit(a: list[str], b: list[str]) -> int | None:
    """The fewest lines removed plus added that turn `a` into `b` (Myers' greedy O(ND) walk),
    or None past `_MOST_EDITS`."""
    n, m = len(a), len(b)
    furthest = [0] * (2 * (n + m) + 3)  # per diagonal k = x - y (offset): how far x got
    offset = n + m + 1
    for edits in range(min(n + m, _MOST_EDITS) + 1):
        for k in range(-edits, edits + 1, 2):
            if k == -edits or (k != edits and furthest[offset + k - 1] < furthest[offset + k + 1]):
                x = furthest[offset + k + 1]
            else:
                x = furthest[offset + k - 1] + 1
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x, y = x + 1, y + 1
            furthest[offset + k] = x
            if x >= n and y >= m:
                return edits
    return None


def line_counts(before: str, after: str) -> tuple[int, int]:
    """Lines added and removed, as `git diff --numstat` counts them: the fewest that turn one
    text into the other, each line with its end of line (a CRLF, or a last line that gains or
    loses its newline, is a changed line to git). Measured on the 10-file change of
    `benchmarks/edits.py`: difflib over the whole files took 3.5-3.9 ms, this 0.3-0.4 ms."""
    a, b = split_lines(before), split_lines(after)
    shared, a, b = _trimmed(a, b)
    # (a line only one side has is an edit whatever the alignment: dropping those leaves
    # what must be aligned, which for a usual edit is then equal)
    in_a, in_b = set(a), set(b)
    common_a, common_b = [x for x in a if x in in_b], [y for y in b if y in in_a]
    if common_a == common_b:
        return len(b) - len(common_a), len(a) - len(common_a)
    aligned, common_a, common_b = _trimmed(common_a, common_b)
    edits = _shortest_edit(common_a, common_b)
    if edits is None:
        matcher = difflib.SequenceMatcher(None, common_a, common_b, autojunk=False)
        kept = sum(block.size for block in matcher.get_matching_blocks())
    else:
        kept = (len(common_a) + len(common_b) - edits) // 2
    kept += shared + aligned
    return len(b) + shared - kept, len(a) + shared - kept


def diffstat(edits: list[FileEdit]) -> str:
    """`N files changed, +A -D` with one line per file, like `git diff --stat` but shorter."""
    rows: list[str] = []
    total_add = total_del = 0
    for edit in edits:
        if not edit.changed:
            continue
        added, removed = line_counts(edit.before or "", edit.after or "")
        total_add, total_del = total_add + added, total_del + removed
        name = f"{edit.renamed_from} => {edit.path}" if edit.renamed_from else edit.path
        mode = (f" (mode {edit.mode_before} => {edit.mode_after})"
                if None not in (edit.mode_before, edit.mode_after)
                and edit.mode_before != edit.mode_after else "")
        rows.append(f"{name} | +{added} -{removed}{mode}")
    rows.append(f"{len(rows)} file(s) changed, +{total_add} -{total_del}")
    return "\n".join(rows)
