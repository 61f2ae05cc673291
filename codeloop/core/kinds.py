"""The closed sets of names codeloop uses in its events and decisions: outcomes, kinds, modes,
and the process exit codes.

Each is a `StrEnum` (an `IntEnum` for exit codes): a member is its value, so the JSON of an
event, a recording and `--json` stay exactly the strings they always were.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """What `codeloop` exits with (the README's table)."""

    PASSED = 0  # the tests pass at the end
    FAILED = 1  # the loop ended with tests failing
    USAGE = 2  # usage or configuration error, not a git repo, an unreadable recording
    MODEL = 3  # model/transport error that retries did not fix
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

    @classmethod
    def of_tests(cls, passed: bool | None) -> ExitCode:
        """A session that ended normally: the tests decide (none run yet: failed)."""
        return cls.PASSED if passed else cls.FAILED


class SessionOutcome(StrEnum):
    """Why a session (or one user message of it) ended: `session.end`'s `outcome`."""

    PASSED = "passed"  # a patch (new or already present) left the tests passing
    NO_EDITS = "no_edits"  # the model replied without an edit
    MAX_ITERATIONS = "max_iterations"  # the turn limit was reached
    FAILED = "failed"  # ended before a user message was worked on
    INTERACTIVE = "interactive"  # the user quit the TUI or the REPL
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
    MODEL_ERROR = "model_error"  # the model's server failed after retries
    SANDBOX_ERROR = "sandbox_error"  # git or the sandbox failed
    INTERNAL_ERROR = "internal_error"  # a bug in codeloop; the recording still ends


class TurnOutcome(StrEnum):
    """How one turn ended: `turn.end`'s `outcome`."""

    APPLIED = "applied"  # the patch was applied and the tests ran
    UNCHANGED = "unchanged"  # every hunk was already in the files
    REJECTED = "rejected"  # the patch was refused; nothing changed
    LOOKED = "looked"  # only read-only tool calls
    NO_EDITS = "no_edits"  # neither edits nor tool calls: the loop ends
    CUT_OFF = "cut_off"  # the reply hit the output token limit without an edit
    INTERRUPTED = "interrupted"  # Ctrl-C: the spans and the tokens so far


class ErrorKind(StrEnum):
    """What went wrong: `error`'s `kind`."""

    TRANSPORT = "transport"
    SANDBOX = "sandbox"
    INTERNAL = "internal"
    INTERRUPTED = "interrupted"
    COMPACTION = "compaction"
    FALLBACK = "fallback"
    APPLY = "apply"
    SUBSCRIBER = "subscriber"  # a consumer of events (a display, the recorder) raised


class NoticeKind(StrEnum):
    """What the user did or should know: `notice`'s `kind`."""

    UNDO = "undo"
    APPLY = "apply"
    PIN = "pin"
    MODEL = "model"
    CLEAR = "clear"
    COMPACTION = "compaction"
    BASELINE = "baseline"  # the first request goes with the last session's baseline result
    DEMO = "demo"  # `codeloop demo` has shown its recording: what it was, what to do next


class TransportChangeKind(StrEnum):
    """How the connection to the model changed: `transport.change`'s `kind`."""

    FALLBACK = "fallback"  # to another wire (Responses → Chat, WebSocket → HTTP)
    RECONNECT = "reconnect"  # a new connection on the same wire
    RESEND = "resend"  # the whole conversation again (the server lost its copy)
    ROTATE = "rotate"  # a fresh WebSocket before the server's connection age limit
    RESTORE = "restore"  # back to the preferred wire
    WARMUP = "warmup"  # the server was warmed up with the prompt's prefix
    TIER = "tier"  # the requested service tier had no capacity: the default tier from now on


class TestMode(StrEnum):
    """How a test run ran: `test.done`'s and `test.runner`'s `mode`."""

    __test__ = False  # not a pytest test class

    WARM = "warm"  # a child forked from the warm runner
    COLD = "cold"  # the command as typed, in a shell


class EditTool(StrEnum):
    """How edits are asked for (`edit_tool`)."""

    # the model's built-in apply_patch tool where the wire and the model have it, else the
    # apply_patch function; ```diff blocks in text if the server refuses tools
    AUTO = "auto"
    BUILTIN = "builtin"  # the built-in tool on every Responses wire, whatever the model
    FUNCTION = "function"  # the apply_patch function on every wire
    TEXT = "text"  # no tools: edits in the reply's text


# `edit_mode`, the key `edit_tool` replaced, and what each of its values now is
LEGACY_EDIT_MODES = {"auto": EditTool.AUTO, "tools": EditTool.FUNCTION, "text": EditTool.TEXT}


class CallKind(StrEnum):
    """Which kind of tool call the model made, as the Responses API tells them apart."""

    FUNCTION = "function"  # a function tool's call: JSON arguments
    CUSTOM = "custom"  # a freeform (custom) tool's call: raw input text
    PATCH = "apply_patch_call"  # the built-in apply_patch tool: one file operation
