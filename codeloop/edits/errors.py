"""The one error the edits package raises: a patch refused, with the reason for the model.

Owns the exception only; every module of the package raises it, none catches another's kind.
"""

from __future__ import annotations

from codeloop.core.errors import CodeloopError


class PatchError(CodeloopError):
    """The patch cannot be applied; the message says precisely why, for the model to read."""
