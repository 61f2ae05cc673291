"""The workspace's errors: a git or sandbox problem, a git command that failed, a sandbox damaged.

Owns only the classes; each message is written where the problem is found, for the user.
"""

from __future__ import annotations

from codeloop.core.errors import CodeloopError
from codeloop.core.kinds import ExitCode


class SandboxError(CodeloopError):
    """A git or sandbox problem, phrased for the user."""

    exit_code = ExitCode.USAGE


class SandboxDamaged(SandboxError):
    """The sandbox could not be put back after a failed commit: its session cannot go on."""


class GitError(SandboxError):
    """A git command that failed: `command` its arguments, `reason` what git said."""

    def __init__(self, args: tuple[str, ...], reason: str) -> None:
        super().__init__(f"git {' '.join(args)} failed: {reason}")
        self.command = args
        self.reason = reason
