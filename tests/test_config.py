"""Configuration layering, validation, test-command detection and the CLI's start-up errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codeloop import __version__
from codeloop.cli import FLAG_KEYS
from codeloop.config import Config, ConfigError, detect_test_command, load_config

FLAG_NAMES = {key: flag for flag, key in FLAG_KEYS.items()}
CONSOLE_SCRIPT = Path(sys.executable).parent / "codeloop"


# ---------------------------------------------------------------- helpers and fixtures


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME and the XDG dirs into tmp_path and drop every CODELOOP_* variable."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for name in list(os.environ):
        if name.startswith("CODELOOP_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return tmp_path


@pytest.fixture
def repo(isolated: Path) -> Path:
    path = isolated / "repo"
    path.mkdir()
    return path


def user_config(isolated: Path, text: str) -> Path:
    path = isolated / "xdg-config" / "codeloop" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def repo_config(repo: Path, text: str) -> Path:
    path = repo / ".codeloop.toml"
    path.write_text(text, encoding="utf-8")
    return path


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout


def make_git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    (path / "README.md").write_text("hello\n")
    git(path, "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "initial")
    return path


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for a codeloop subprocess that sees none of the developer's settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CODELOOP_") and k not in ("OPENAI_API_KEY", "MY_KEY")}
    home = tmp_path / "cli-home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(tmp_path / "cli-config"),
               XDG_CACHE_HOME=str(tmp_path / "cli-cache"),
               GIT_CEILING_DIRECTORIES=str(tmp_path))
    env.update(extra)
    return env


def run_cli(cwd: Path, *args: str, env: dict[str, str],
            command: tuple[str, ...] = (sys.executable, "-m", "codeloop"),
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


# ---------------------------------------------------------------- layering


def test_defaults_apply_when_no_layer_sets_anything(repo: Path) -> None:
    config, origin = load_config(repo, {}, FLAG_NAMES)
    assert config == Config()
    assert origin == {}


def test_user_config_overrides_defaults(isolated: Path, repo: Path) -> None:
    path = user_config(isolated, 'model = "user-model"\nmax_iterations = 3\n')
    config, origin = load_config(repo, {}, FLAG_NAMES)
    assert config.model == "user-model"
    assert config.max_iterations == 3
    assert origin == {"model": str(path), "max_iterations": str(path)}
    assert config.base_url == Config().base_url


def test_repo_config_overrides_user_config(isolated: Path, repo: Path) -> None:
    user = user_config(isolated, 'model = "user-model"\nmax_iterations = 3\n')
    local = repo_config(repo, 'model = "repo-model"\n')
    config, origin = load_config(repo, {}, FLAG_NAMES)
    assert config.model == "repo-model"
    assert origin["model"] == str(local)
    assert config.max_iterations == 3
    assert origin["max_iterations"] == str(user)


def test_environment_overrides_repo_config(
    isolated: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = repo_config(repo, 'model = "repo-model"\nmax_iterations = 4\n')
    monkeypatch.setenv("CODELOOP_MODEL", "env-model")
    config, origin = load_config(repo, {}, FLAG_NAMES)
    assert config.model == "env-model"
    assert origin["model"] == "CODELOOP_MODEL"
    assert config.max_iterations == 4
    assert origin["max_iterations"] == str(local)


def test_flags_override_environment(
    isolated: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODELOOP_MODEL", "env-model")
    monkeypatch.setenv("CODELOOP_MAX_ITERATIONS", "5")
    config, origin = load_config(repo, {"model": "flag-model", "max_iterations": None},
                                 FLAG_NAMES)
    assert config.model == "flag-model"
    assert origin["model"] == "--model"
    # a flag left unset (None) does not hide the layer below it
    assert config.max_iterations == 5
    assert origin["max_iterations"] == "CODELOOP_MAX_ITERATIONS"


def test_environment_strings_are_parsed_to_the_keys_type(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODELOOP_MAX_ITERATIONS", "12")
    monkeypatch.setenv("CODELOOP_TEST_TIMEOUT_S", "2.5")
    config, _ = load_config(repo, {}, FLAG_NAMES)
    assert config.max_iterations == 12
    assert config.test_timeout_s == 2.5


def test_integer_in_toml_is_accepted_for_a_float_key(repo: Path) -> None:
    repo_config(repo, "test_timeout_s = 30\n")
    config, _ = load_config(repo, {}, FLAG_NAMES)
    assert config.test_timeout_s == 30.0
    assert isinstance(config.test_timeout_s, float)


# ---------------------------------------------------------------- validation errors


def test_unknown_key_in_repo_config_names_key_and_file(repo: Path) -> None:
    path = repo_config(repo, 'modle = "gpt"\n')
    with pytest.raises(ConfigError) as info:
        load_config(repo, {}, FLAG_NAMES)
    assert "modle" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_key_in_user_config_names_the_user_file(isolated: Path, repo: Path) -> None:
    path = user_config(isolated, "colour = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(repo, {}, FLAG_NAMES)
    assert "colour" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("line", ['max_iterations = "many"', 'max_iterations = "5"',
                                  "max_iterations = 2.5", "max_iterations = true"])
def test_wrong_type_in_repo_config_names_key_and_file(repo: Path, line: str) -> None:
    path = repo_config(repo, line + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(repo, {}, FLAG_NAMES)
    assert "max_iterations" in str(info.value)
    assert str(path) in str(info.value)


def test_non_positive_number_is_rejected(repo: Path) -> None:
    path = repo_config(repo, "max_iterations = 0\n")
    with pytest.raises(ConfigError, match="max_iterations must be positive") as info:
        load_config(repo, {}, FLAG_NAMES)
    assert str(path) in str(info.value)


def test_unparsable_environment_variable_names_the_variable(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODELOOP_MAX_ITERATIONS", "abc")
    with pytest.raises(ConfigError) as info:
        load_config(repo, {}, FLAG_NAMES)
    assert "CODELOOP_MAX_ITERATIONS" in str(info.value)
    assert "abc" in str(info.value)


@pytest.mark.parametrize(("key", "bad"), [("transport", "grpc"), ("edit_tool", "magic"),
                                          ("edit_mode", "magic")])
def test_invalid_choice_names_key_and_the_allowed_values(repo: Path, key: str, bad: str) -> None:
    path = repo_config(repo, f'{key} = "{bad}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(repo, {}, FLAG_NAMES)
    message = str(info.value)
    assert key in message
    assert bad in message
    assert str(path) in message
    assert "auto" in message


@pytest.mark.parametrize(("legacy", "now"), [("auto", "auto"), ("tools", "function"),
                                             ("text", "text")])
def test_the_legacy_edit_mode_key_is_read_as_edit_tool(repo: Path, monkeypatch, legacy: str,
                                                       now: str) -> None:
    path = repo_config(repo, f'edit_mode = "{legacy}"\n')
    config, origin = load_config(repo, {}, FLAG_NAMES)
    assert config.edit_tool == now and origin["edit_tool"] == str(path)
    monkeypatch.setenv("CODELOOP_EDIT_MODE", "tools")
    assert load_config(repo, {}, FLAG_NAMES)[0].edit_tool == "function"
    # the current key wins over the legacy one in the same layer
    monkeypatch.setenv("CODELOOP_EDIT_TOOL", "builtin")
    assert load_config(repo, {}, FLAG_NAMES)[0].edit_tool == "builtin"
    config, origin = load_config(repo, {"edit_mode": "text", "edit_tool": None}, FLAG_NAMES)
    assert config.edit_tool == "text" and origin["edit_tool"] == "--edit-mode"
    assert load_config(repo, {"edit_mode": "text", "edit_tool": "function"},
                       FLAG_NAMES)[0].edit_tool == "function"


def test_invalid_choice_from_a_flag_names_the_flag(repo: Path) -> None:
    with pytest.raises(ConfigError, match="--edit-mode"):
        load_config(repo, {"edit_mode": "magic"}, FLAG_NAMES)


def test_invalid_toml_syntax_names_the_file(repo: Path) -> None:
    path = repo_config(repo, "model = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(repo, {}, FLAG_NAMES)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- test-command detection


@pytest.mark.parametrize(("marker", "expected"), [
    ("package.json", "npm test"),
    ("Cargo.toml", "cargo test"),
    ("go.mod", "go test ./..."),
])
def test_detects_the_test_command_from_the_project_file(
    tmp_path: Path, marker: str, expected: str
) -> None:
    (tmp_path / marker).write_text("{}\n" if marker == "package.json" else "\n")
    assert detect_test_command(tmp_path) == expected


def test_pyproject_means_pytest(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    command = detect_test_command(tmp_path)
    assert "pytest" in command.split()


def test_undetectable_test_command_says_how_to_set_one(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing to see\n")
    with pytest.raises(ConfigError) as info:
        detect_test_command(tmp_path)
    assert "test_command" in str(info.value)
    assert "--test-cmd" in str(info.value)


# ---------------------------------------------------------------- the CLI


def test_version_prints_name_and_version(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--version", env=cli_env(tmp_path))
    assert result.returncode == 0
    assert result.stdout.strip() == f"codeloop {__version__}"


def test_help_mentions_every_flag(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--help", env=cli_env(tmp_path))
    assert result.returncode == 0
    for flag in [*FLAG_KEYS, "--task", "--json", "--apply"]:
        assert flag in result.stdout, flag


def test_bad_repo_config_exits_2_with_the_problem_on_stderr(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    (repo / ".codeloop.toml").write_text('max_iterations = "many"\n')
    result = run_cli(repo, "--task", "x", env=cli_env(tmp_path))
    assert result.returncode == 2
    assert "max_iterations" in result.stderr
    assert ".codeloop.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_environment_variable_exits_2_naming_it(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    env = cli_env(tmp_path, CODELOOP_MAX_ITERATIONS="abc")
    result = run_cli(repo, "--task", "x", env=env)
    assert result.returncode == 2
    assert "CODELOOP_MAX_ITERATIONS" in result.stderr
    assert "Traceback" not in result.stderr


def test_outside_a_git_repository_exits_2_and_says_what_to_do(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run_cli(plain, "--task", "x", env=cli_env(tmp_path))
    assert result.returncode == 2
    assert "not inside a git repository" in result.stderr
    assert "git init" in result.stderr


def test_missing_api_key_for_remote_server_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    (repo / ".codeloop.toml").write_text('base_url = "https://api.example.com/v1"\n')
    exclude = repo / ".git" / "info" / "exclude"
    exclude_before = exclude.read_text() if exclude.exists() else None
    result = run_cli(repo, "--task", "x", env=cli_env(tmp_path))
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr
    assert not (repo / ".codeloop").exists()
    assert (exclude.read_text() if exclude.exists() else None) == exclude_before
    assert git(repo, "status", "--porcelain", "--ignored") == "?? .codeloop.toml\n"
    assert git(repo, "branch", "--list", "codeloop/*") == ""
    assert not (tmp_path / "cli-cache" / "codeloop").exists()


def test_api_key_env_flag_changes_the_variable_named_in_the_error(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    result = run_cli(repo, "--task", "x", "--api-key-env", "MY_KEY",
                     "--base-url", "https://api.example.com/v1", env=cli_env(tmp_path))
    assert result.returncode == 2
    assert "MY_KEY" in result.stderr
    assert "OPENAI_API_KEY" not in result.stderr


def test_without_task_exits_2_asking_for_one(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    result = run_cli(repo, env=cli_env(tmp_path))
    assert result.returncode == 2
    assert "--task" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [("--version",), ("--help",), ()])
def test_python_dash_m_behaves_like_the_console_script(tmp_path: Path, args: tuple[str, ...]
                                                        ) -> None:
    repo = make_git_repo(tmp_path / "repo")
    env = cli_env(tmp_path)
    via_module = run_cli(repo, *args, env=env)
    via_script = run_cli(repo, *args, env=env, command=(str(CONSOLE_SCRIPT),))
    assert (via_module.returncode, via_module.stdout, via_module.stderr) == (
        via_script.returncode, via_script.stdout, via_script.stderr)


# ---------------------------------------------------------------- codeloop clean


def test_clean_with_nothing_to_clean_says_so(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    result = run_cli(repo, "clean", env=cli_env(tmp_path))
    assert result.returncode == 0
    assert result.stdout.strip() == "nothing to clean"


def test_clean_keeps_worktrees_and_branches_under_codeloop_that_it_did_not_make(
        tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    sandbox = tmp_path / "wt"
    other = tmp_path / "other-wt"
    git(repo, "worktree", "add", "-q", "-b", "codeloop/x", str(sandbox))
    git(repo, "worktree", "add", "-q", "-b", "feature", str(other))
    git(repo, "branch", "codeloop/orphan")

    result = run_cli(repo, "clean", env=cli_env(tmp_path))

    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"kept {sandbox}: not made by codeloop",
        "kept codeloop/orphan: not made by codeloop",
        "kept codeloop/x: not made by codeloop"]
    assert sandbox.is_dir() and other.is_dir()
    assert {"codeloop/orphan", "codeloop/x", "feature"} <= set(
        git(repo, "branch", "--list", "--format=%(refname:short)").split())
    again = run_cli(repo, "clean", env=cli_env(tmp_path))
    assert again.stdout == result.stdout


def test_clean_honours_repo_flag_given_before_the_subcommand(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    git(repo, "branch", "codeloop/x")
    result = run_cli(tmp_path, "-C", str(repo), "clean", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kept codeloop/x: not made by codeloop\n"


def test_clean_honours_repo_flag_given_after_the_subcommand(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    git(repo, "branch", "codeloop/x")
    result = run_cli(tmp_path, "clean", "-C", str(repo), env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kept codeloop/x: not made by codeloop\n"


def test_every_configuration_key_has_a_flag_a_variable_and_an_example_entry() -> None:
    from codeloop.cli import FLAG_KEYS
    from codeloop.config import Config

    example = (Path(__file__).resolve().parents[1] / ".codeloop.toml.example").read_text()
    keys = set(Config.key_types())
    assert set(FLAG_KEYS.values()) == keys
    for key in keys:
        assert f"\n{key} = " in example and f"CODELOOP_{key.upper()}" in example
