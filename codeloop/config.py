"""Layered configuration: defaults < user config < repo `.codeloop.toml` < CODELOOP_* < flags.

Owns the list of keys, their types, help and flags, validation, and test-command detection. It
reads files and the environment but never touches the network or the repo's contents beyond a few
marker files.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from codeloop.core.dirs import config_dir
from codeloop.core.errors import CodeloopError
from codeloop.core.kinds import LEGACY_EDIT_MODES, EditTool, ExitCode

TRANSPORTS = ("auto", "chat", "responses-http", "responses-ws")
WARM_MODES = ("auto", "on", "off")
VERIFY_MODES = ("full", "affected")
EDIT_TOOLS = tuple(EditTool)
# the models with the Responses API's built-in apply_patch tool (GPT-5.1 and later, the codex
# families), as comma-separated fnmatch patterns: `builtin_patch_models`' default
BUILTIN_PATCH_MODELS = "gpt-5.[1-9]*,gpt-[6-9]*,*codex*"


class ConfigError(CodeloopError):
    """A configuration problem the user must fix (exit code 2)."""

    exit_code = ExitCode.USAGE


@dataclass
class Config:
    """Every setting codeloop reads. The `.codeloop.toml.example` file documents each key."""

    model: str = "gpt-4.1"
    base_url: str = "https://api.openai.com/v1"
    transport: str = "auto"
    api_key_env: str = "OPENAI_API_KEY"
    test_command: str = ""
    test_timeout_s: float = 300.0
    max_iterations: int = 8
    edit_tool: str = "auto"
    builtin_patch_models: str = BUILTIN_PATCH_MODELS
    max_output_tokens: int = 8192
    request_timeout_s: float = 120.0
    responses_store: bool = False
    context_window: int = 0
    compact_at: float = 0.7
    keep_recent_turns: int = 4
    tool_output_tokens: int = 5000
    warm_tests: str = "auto"
    fail_fast: bool = False
    verify: str = "full"
    service_tier: str = ""

    @classmethod
    def key_types(cls) -> dict[str, type]:
        return {f.name: _KEY_TYPES[f.type] for f in fields(cls)}


_KEY_TYPES: dict[str, type] = {"str": str, "float": float, "int": int, "bool": bool}
# what each key means, as `--help` says it beside its flag
KEY_HELP = {
    "model": "model name sent to the server",
    "base_url": "OpenAI-compatible API root, e.g. http://127.0.0.1:8080/v1",
    "transport": f"wire protocol: {', '.join(TRANSPORTS)}",
    "api_key_env": "name of the environment variable holding the API key",
    "test_command": "test command run in the sandbox (detected when not set)",
    "test_timeout_s": "seconds before a test run's whole process group is killed",
    "max_iterations": "maximum number of turns (model requests)",
    "edit_tool": f"how edits are asked for: {', '.join(EDIT_TOOLS)} (auto: the model's "
                 "built-in apply_patch tool on Responses wires where it has one, else the "
                 "apply_patch function)",
    "builtin_patch_models": "comma-separated name patterns of the models that have the "
                            "built-in apply_patch tool",
    "max_output_tokens": "cap on tokens per reply",
    "request_timeout_s": "seconds to wait for the next byte of a reply",
    "responses_store": "Responses over HTTP: let the server keep the conversation (store=true) "
                       "and send only new items (true/false)",
    "context_window": "the model's context window in tokens (0: known default for the model)",
    "compact_at": "share of the window at which older turns are summarised",
    "keep_recent_turns": "turns a summary keeps verbatim",
    "tool_output_tokens": "token budget of one tool output or test report (head and tail kept)",
    "warm_tests": "pytest from a pre-imported, forking runner: auto, on, off",
    "fail_fast": "the tests that failed last turn, which run first, stop at the first that "
                 "still fails (true/false)",
    "verify": "before a turn counts as passed: the full suite, or only the tests the change "
              "can affect (full, affected)",
    "service_tier": "processing tier asked of the provider, passed through unchanged, e.g. "
                    "auto, default, flex, priority (empty: not sent)",
}
# flag name -> config key, for the settings a flag can override (`--help` lists them with
# KEY_HELP); `replay --ask` takes ASK_FLAGS of them too
FLAG_KEYS = {
    "--model": "model", "--base-url": "base_url", "--transport": "transport",
    "--api-key-env": "api_key_env", "--test-cmd": "test_command",
    "--test-timeout": "test_timeout_s", "--max-iterations": "max_iterations",
    "--edit-tool": "edit_tool", "--builtin-patch-models": "builtin_patch_models",
    "--max-output-tokens": "max_output_tokens",
    "--request-timeout": "request_timeout_s", "--responses-store": "responses_store",
    "--context-window": "context_window", "--compact-at": "compact_at",
    "--keep-recent-turns": "keep_recent_turns", "--tool-output-tokens": "tool_output_tokens",
    "--warm-tests": "warm_tests", "--fail-fast": "fail_fast", "--verify": "verify",
    "--service-tier": "service_tier",
}
LEGACY_FLAGS = {"--edit-mode": "edit_mode"}  # still read, as the key that replaced it
ASK_FLAGS = ("--model", "--base-url", "--transport", "--api-key-env", "--max-output-tokens",
             "--request-timeout", "--service-tier")

_TRUTH = {"true": True, "1": True, "yes": True, "on": True,
          "false": False, "0": False, "no": False, "off": False}


def parse_bool(text: str) -> bool:
    """`true/false`, `1/0`, `yes/no`, `on/off` (for environment variables and flags)."""
    try:
        return _TRUTH[text.strip().lower()]
    except KeyError:
        raise ValueError(f"not a boolean: {text!r}") from None
_CHOICES = {"transport": TRANSPORTS, "edit_tool": EDIT_TOOLS, "warm_tests": WARM_MODES,
            "verify": VERIFY_MODES}
LEGACY_KEYS = ("edit_mode",)  # still read, as the key that replaced it
_ZERO_ALLOWED = ("context_window",)  # 0 = the model's known default


def env_name(key: str) -> str:
    return "CODELOOP_" + key.upper()


def user_config_path() -> Path:
    return config_dir() / "config.toml"


def _current(key: str, value: Any, where: str) -> tuple[str, Any]:
    """A legacy key's setting as the key that replaced it (`edit_mode` is `edit_tool`)."""
    if key != "edit_mode":
        return key, value
    if value not in LEGACY_EDIT_MODES:
        raise ConfigError(f"{where}: edit_mode (now edit_tool) must be one of "
                          f"{', '.join(LEGACY_EDIT_MODES)}, got {value!r}")
    return "edit_tool", LEGACY_EDIT_MODES[value].value


def _coerce(key: str, value: Any, where: str, parse: bool = False) -> Any:
    """Check one value against its key's type; `parse` turns environment strings into numbers."""
    expected = Config.key_types()[key]
    if parse and isinstance(value, str) and expected is not str:
        try:
            value = parse_bool(value) if expected is bool else expected(value)
        except ValueError:
            raise ConfigError(
                f"{where}: {key} must be {expected.__name__}, got {value!r}"
            ) from None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise ConfigError(
            f"{where}: {key} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    if key in _CHOICES and value not in _CHOICES[key]:
        choices = ", ".join(_CHOICES[key])
        raise ConfigError(f"{where}: {key} must be one of {choices}, got {value!r}")
    low = 0 if key in _ZERO_ALLOWED else 0.0001
    if expected in (int, float) and not low <= value < float("inf"):
        raise ConfigError(f"{where}: {key} must be positive, got {value!r}")
    if key == "compact_at" and not value <= 1:
        raise ConfigError(f"{where}: compact_at is a share of the window, 0 < x <= 1; "
                          f"got {value!r}")
    if key == "base_url" and not is_http_url(value):
        raise ConfigError(f"{where}: base_url must be an http:// or https:// URL with a host, "
                          f"such as {Config.base_url}; got {value!r}")
    return value


def is_http_url(text: str) -> bool:
    """An absolute http(s) URL naming a host (and a valid port, if any), with no spaces or
    control characters (which `urlsplit` would quietly strip or keep in the host)."""
    if not text.isprintable() or " " in text:
        return False
    try:
        parts = urlsplit(text)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (
            parts.port is None or parts.port > 0)
    except ValueError:  # e.g. an unclosed IPv6 bracket, a port that is not a number
        return False


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    known = Config.key_types()
    for key in data:
        if key not in known and key not in LEGACY_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} (known keys: {', '.join(known)})")
    current = dict(_current(key, value, str(path)) for key, value in data.items())
    return {key: _coerce(key, value, str(path)) for key, value in current.items()}


def load_config(repo: Path, flags: dict[str, Any], flag_names: dict[str, str] | None = None
                ) -> tuple[Config, dict[str, str]]:
    """Merge every layer. Returns the config and, per key, where its value came from."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for path in (user_config_path(), repo / ".codeloop.toml"):
        for key, value in _read_toml(path).items():
            values[key], origin[key] = value, str(path)
    for name in (*LEGACY_KEYS, *Config.key_types()):  # (the current key wins)
        raw = os.environ.get(env_name(name))
        if raw is not None:
            key, raw = _current(name, raw, env_name(name))
            values[key] = _coerce(key, raw, env_name(name), parse=True)
            origin[key] = env_name(name)
    for name, value in sorted(flags.items(), key=lambda kv: kv[0] not in LEGACY_KEYS):
        if value is not None:
            flag = (flag_names or {}).get(name, "--" + name.replace("_", "-"))
            key, value = _current(name, value, flag)
            values[key], origin[key] = _coerce(key, value, flag), flag
    return Config(**values), origin


def detect_test_command(root: Path) -> str:
    """The test command a developer would type for this project, judged by the files present."""
    python = "python" if shutil.which("python") else "python3"
    pytest = f"{python} -m pytest -q"
    if any((root / name).exists() for name in ("pyproject.toml", "setup.py", "setup.cfg",
                                                "pytest.ini", "tox.ini", "conftest.py")):
        return pytest
    if (root / "package.json").is_file():
        return "npm test"
    if (root / "Cargo.toml").is_file():
        return "cargo test"
    if (root / "go.mod").is_file():
        return "go test ./..."
    if any(root.glob("test_*.py")) or any(root.glob("tests/test_*.py")):
        return pytest
    raise ConfigError(
        f"{root}: could not detect a test command (no pyproject.toml, package.json, Cargo.toml "
        "or go.mod); set test_command in .codeloop.toml or pass --test-cmd"
    )
