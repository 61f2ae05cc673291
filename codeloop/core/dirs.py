"""Where codeloop keeps things of the user's, outside any repository: the XDG base directories
(config, cache, state), each with a `codeloop` folder. Reads the environment; makes nothing."""

from __future__ import annotations

import os
from pathlib import Path


def _base(variable: str, default: tuple[str, ...]) -> Path:
    return Path(os.environ.get(variable) or Path.home().joinpath(*default)) / "codeloop"


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/codeloop` (~/.config/codeloop): the user's config.toml."""
    return _base("XDG_CONFIG_HOME", (".config",))


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/codeloop` (~/.cache/codeloop): sandboxes, repo maps, warm-runner memos."""
    return _base("XDG_CACHE_HOME", (".cache",))


def state_dir() -> Path:
    """`$XDG_STATE_HOME/codeloop` (~/.local/state/codeloop): input histories."""
    return _base("XDG_STATE_HOME", (".local", "state"))
