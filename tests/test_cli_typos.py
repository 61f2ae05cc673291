"""A mistyped flag or command: one line naming the closest real one, exit 2 (the real CLI)."""

from __future__ import annotations

import pytest

from tests.conftest import run_codeloop


@pytest.mark.parametrize(("args", "suggested"), [
    (("--taks", "fix it"), "--task"),
    (("--plian",), "--plain"),
    (("--versoin",), "--version"),
    (("-C", ".", "--modle", "m"), "--model"),
    (("dmeo",), "demo"),
    (("replay", "--sped", "2", "x.jsonl"), "--speed"),
])
def test_a_typo_is_one_line_naming_the_closest_flag_or_command(tmp_path, isolated_env, args,
                                                               suggested):
    # before: `--taks "fix it"` said "argument COMMAND: invalid choice: 'fix it'" under a
    # 16-line usage, and `--plian` "unrecognized arguments" with no suggestion
    done = run_codeloop(tmp_path, isolated_env, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("codeloop: error: unknown ")
    assert f"did you mean {suggested}?" in line
    assert "invalid choice" not in line


def test_a_word_that_is_no_command_lists_the_commands_and_points_to_task(tmp_path, isolated_env):
    done = run_codeloop(tmp_path, isolated_env, "fix the pager")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "unknown command 'fix the pager'" in line
    assert "clean, replay, demo" in line and "--task TEXT" in line


def test_errors_that_are_no_typo_keep_their_own_words(tmp_path, isolated_env):
    done = run_codeloop(tmp_path, isolated_env, "--max-iterations", "abc")
    assert done.returncode == 2
    assert done.stderr.strip() == ("codeloop: error: argument --max-iterations: invalid int "
                                   "value: 'abc'")
    missing = run_codeloop(tmp_path, isolated_env, "--task")
    assert "argument --task: expected one argument" in missing.stderr


def test_the_usage_line_shows_the_command_as_optional(tmp_path, isolated_env):
    done = run_codeloop(tmp_path, isolated_env, "--help")
    assert done.returncode == 0
    usage = done.stdout.splitlines()[0]
    assert usage.startswith("usage: codeloop ") and usage.endswith("[COMMAND ...]")
    assert "--quiet" in done.stdout
