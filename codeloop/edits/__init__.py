"""Edits: finding them in a model reply, in every dialect models write, and turning them into
exact file edits or a precise refusal. Pure: reads files, never writes them, never runs git.

    extract         the edits in a reply: `apply_patch` calls, fenced or bare edit text
    dialects        `parse_edit`: any dialect into the same per-file operations
    diff            unified diffs as models write them (git's, or Aider's plain udiff)
    v4a             the V4A envelope (`*** Begin Patch`, Codex's apply_patch language)
    search_replace  SEARCH/REPLACE blocks (Aider's `diff` format)
    place           where each hunk goes in a file's text (anchors too), and applying it
    reindent        the indentation of a hunk's added lines
    paths           which paths a patch may touch: `check_path`, `check_target`
    patch           `plan`: a reply's edits into `FileEdit`s, all or nothing; `diffstat`
    errors          `PatchError`, the refusal every module raises
"""
