"""The tools offered to the model: `apply_patch` plus read-only looks at the sandbox.

Owns the tool schemas (fixed, sorted by name, so the request prefix stays byte-stable) and the
read-only tools' execution: read a file or a line range, search with `git grep`, list files.
Nothing here writes to the sandbox; `apply_patch` is carried out by the loop.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from codeloop.core.bounded import bound
from codeloop.edits.errors import PatchError
from codeloop.edits.paths import check_path
from codeloop.workspace.errors import GitError
from codeloop.workspace.git import grep, project_files

OUTPUT_CHARS = 20_000

_SCHEMAS: list[dict[str, Any]] = [
    {"name": "apply_patch",
     "description": "Edit files with a patch: a V4A patch (*** Begin Patch, *** Update File: "
                    "PATH, @@ anchor lines, context/-/+ lines, *** End Patch; *** Add File: and "
                    "*** Delete File: create and delete) or a unified diff (--- a/PATH, +++ "
                    "b/PATH, @@ hunks with 3 lines of context; --- /dev/null creates a file, +++ "
                    "/dev/null deletes one). Several files may be changed in one patch. The "
                    "tests run after the patch is applied and their result is returned.",
     "parameters": {"type": "object", "properties": {
         "patch": {"type": "string", "description": "The patch."}},
         "required": ["patch"]}},
    {"name": "list_files",
     "description": "List the repository's files under a directory (default: the root).",
     "parameters": {"type": "object", "properties": {
         "path": {"type": "string", "description": "A directory relative to the root."}},
         "required": []}},
    {"name": "read_file",
     "description": "Read a file, or a range of its lines, with line numbers.",
     "parameters": {"type": "object", "properties": {
         "path": {"type": "string", "description": "File path relative to the root."},
         "start_line": {"type": "integer", "description": "First line (1-based)."},
         "end_line": {"type": "integer", "description": "Last line (inclusive)."}},
         "required": ["path"]}},
    {"name": "search",
     "description": "Search the repository's files for a regular expression (git grep -n -E).",
     "parameters": {"type": "object", "properties": {
         "pattern": {"type": "string", "description": "Extended regular expression."},
         "path": {"type": "string", "description": "Limit to this file or directory."}},
         "required": ["pattern"]}},
]
READ_ONLY = ("list_files", "read_file", "search")


def tool_schemas(builtin_patch: bool = False) -> list[dict[str, Any]]:
    """The Chat Completions `tools` array, in a fixed order; `builtin_patch` marks apply_patch
    as the built-in tool, for a wire that has it (`ModelClient.builtin_tools`)."""
    return [{"type": "function", "function": schema,
             **({"builtin": "apply_patch"} if builtin_patch and schema["name"] == "apply_patch"
                else {})} for schema in _SCHEMAS]


def offers_builtin_patch(edit_tool: str, wire_builtins: frozenset[str], model: str,
                         builtin_models: str) -> bool:
    """Whether a request offers the built-in apply_patch tool: the wire has it, and `edit_tool`
    asks for it (`builtin`), or leaves it to the model (`auto`: one of `builtin_models`)."""
    if "apply_patch" not in wire_builtins:
        return False
    if edit_tool == "builtin":
        return True
    patterns = [p.strip() for p in builtin_models.split(",") if p.strip()]
    return edit_tool == "auto" and any(fnmatch.fnmatchcase(model.lower(), p.lower())
                                       for p in patterns)


BUILTIN_MARK = " (built-in)"  # after a tool's name in `model.request`: offered as the built-in


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    """How a request's tools are named in its `model.request` event."""
    return [t["function"]["name"] + (BUILTIN_MARK if t.get("builtin") else "") for t in tools]


def numbered(text: str, first: int = 1) -> str:
    return "".join(f"{n:>5}  {line}" for n, line in
                   enumerate(text.splitlines(keepends=True), first)).rstrip("\n") + "\n"


def run_read_only(root: Path, name: str, arguments: str, limit: int = OUTPUT_CHARS) -> str:
    """Answer one read-only tool call, at most about `limit` characters (head and tail kept);
    errors come back as text for the model."""
    try:
        args = json.loads(arguments) if arguments.strip() else {}
        if not isinstance(args, dict):
            raise ValueError("arguments must be a JSON object")
        if name == "read_file":
            rel = check_path(root, str(args.get("path", "")))
            path = root / rel
            if not path.is_file():
                return f"error: {rel} does not exist or is not a file"
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            start = max(int(args.get("start_line") or 1), 1)
            end = int(args.get("end_line") or len(lines))
            return bound(f"{rel} (lines {start}-{min(end, len(lines))} of {len(lines)}):\n"
                         + numbered("".join(lines[start - 1:end]), start), limit * 4 // 5,
                         limit // 5)
        if name == "search":
            where = [check_path(root, args["path"])] if args.get("path") else []
            found = grep(root, str(args.get("pattern", "")), where)
            return bound(found or "no matches", limit * 4 // 5, limit // 5)
        if name == "list_files":
            where = [check_path(root, args["path"])] if args.get("path") else []
            listing = project_files(root, where)
            return bound(listing or "no files", limit * 4 // 5, limit // 5)
    except GitError as exc:  # (what git said, for the model)
        return f"error: {exc.reason or f'git {exc.command[0]} failed'}"
    except (PatchError, ValueError, TypeError, KeyError) as exc:
        return f"error: {exc}"
    return f"error: unknown tool {name!r}"
