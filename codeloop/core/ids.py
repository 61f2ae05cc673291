"""Session ids: they name a session's sandbox, branch and recording, sort by start time, and
differ between sessions started in the same second."""

from __future__ import annotations

import secrets
import time


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
