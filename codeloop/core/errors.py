"""The one base of every error codeloop raises on purpose, and the exit code each family means.

Each family lives with the module that owns it and derives from `CodeloopError`:

    CodeloopError
    ├── ConfigError       config.py            bad key, value or file; no API key   exit 2
    ├── SandboxError      workspace/           not a repo, git refused, a lock      exit 2
    │   ├── GitError                           a git command failed (with its stderr)
    │   └── SandboxDamaged                     a failed put-back: the session ends
    ├── PatchError        edits/               a patch refused, told to the model
    ├── TransportError    transport/           the model's server, after retries    exit 3
    ├── RecordingError    replay/              a recording that cannot be read      exit 2
    └── WarmUnavailable   testrunner/          the warm runner cannot serve: cold runs

A front end that catches `CodeloopError` shows `str(error)`: every message is written for the
user. Anything else that escapes is a bug, reported as such.
"""

from __future__ import annotations

from codeloop.core.kinds import ExitCode


class CodeloopError(Exception):
    """An error codeloop raises on purpose, with a message for the user."""

    exit_code: ExitCode = ExitCode.FAILED  # what ending a session with it means for a script
