"""Edits: finding them in a model reply, and turning unified diffs into exact file edits or a
precise refusal. Pure: reads files, never writes them, never runs git.

    extract   the diffs in a reply: `apply_patch` tool calls and fenced ```diff blocks
    diff      reading a diff as models write it: `repair`, decoded headers, hunks
    place     where each hunk goes in a file's text, and applying it (`reindent`: its indent)
    paths     which paths a patch may touch: `check_path`, `check_target`
    patch     `plan`: a reply's diffs into `FileEdit`s, all or nothing; `diffstat`
    errors    `PatchError`, the refusal every module raises
"""
