"""The `codeloop` command: flags, subcommands, exit codes, and wiring a session together.

Owns argument parsing and the order of start-up (repo, config, key, test command, recorder,
printer, transport); heavy modules are imported only once a session really starts, so `--help`
and `--version` stay instant.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from codeloop import __version__
from codeloop.config import (
    ASK_FLAGS,
    FLAG_KEYS,
    KEY_HELP,
    LEGACY_FLAGS,
    Config,
    ConfigError,
    env_name,
    parse_bool,
)
from codeloop.core.kinds import ExitCode
from codeloop.interrupts import CtrlC, hold_ctrl_c, let_go_of_sigint

if TYPE_CHECKING:
    from codeloop.agent.session import Session
    from codeloop.core.port import Agent
    from codeloop.replay.recorder import Recorder



class Parser(argparse.ArgumentParser):
    """argparse, with errors of one line that name the closest flag or command to a typo."""

    argv: list[str] = []  # what parse_args was given (the error names the word in it)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        Parser.argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(Parser.argv, namespace)

    def error(self, message: str):  # type: ignore[override]
        self.exit(ExitCode.USAGE, f"codeloop: error: {typo_message(self, self.argv) or message}\n")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((dict(a.choices) for a in parser._actions
                 if isinstance(a, argparse._SubParsersAction)), {})


def _closest(word: str, names: list[str]) -> str:
    found = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f" (did you mean {found[0]}?)" if found else ""


def typo_message(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    """The first word of `argv` that is no flag or command of codeloop's, and its closest
    match; empty when every word is known (the error is then of another kind)."""
    top = parser if parser.prog == "codeloop" else build_parser()
    commands, known, taking, where = _commands(top), top._option_string_actions, False, "codeloop"
    for word in argv:
        if word == "--":
            return ""
        if taking:
            taking = False
            continue
        if word.startswith("-") and len(word) > 1:
            long = word.startswith("--")
            name = word.split("=", 1)[0] if long else word[:2]
            # argparse takes a long flag's unambiguous abbreviation too
            matches = [option for option in known
                       if option == name or (long and option.startswith(name))]
            if not matches:
                return (f"unknown option {name}{_closest(name, [*known])}; "
                        f"`{where} --help` lists them")
            attached = "=" in word if long else len(word) > 2  # --flag=VALUE, -CDIR
            taking = not attached and known[matches[0]].nargs != 0
        elif word in commands and known is top._option_string_actions:
            known, where = commands[word]._option_string_actions, f"codeloop {word}"
        elif known is top._option_string_actions:
            return (f"unknown command {word!r}{_closest(word, [*commands])}; the commands are "
                    f"{', '.join(commands)}, and a task goes in --task TEXT")
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="codeloop",
        usage="%(prog)s [OPTIONS] [--task TEXT | --plain] [COMMAND ...]",
        description="Ask a model for a patch, apply it in a git sandbox, run the tests, feed the "
                    "failures back, repeat until they pass. Settings come from defaults < "
                    "~/.config/codeloop/config.toml < .codeloop.toml < CODELOOP_* variables < "
                    "these flags.",
        epilog="Exit codes: 0 tests pass, 1 tests still fail, 2 usage/configuration error, "
               "3 model/transport error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"codeloop {__version__}")
    parser.add_argument("--task", metavar="TEXT",
                        help="what to do; runs headless (no TTY needed). Without it, codeloop "
                             "opens the interactive app")
    parser.add_argument("--plain", action="store_true",
                        help="interactive line REPL instead of the full-screen app")
    parser.add_argument("--json", action="store_true",
                        help="print the event stream as JSON lines on stdout instead of progress")
    parser.add_argument("--quiet", action="store_true",
                        help="an applied patch is one line: its diff is not shown")
    parser.add_argument("--apply", action="store_true",
                        help="apply the final diff to your working tree at the end")
    parser.add_argument("--add", metavar="FILE", action="append", default=[],
                        help="put this file into the first prompt (repeatable)")
    parser.add_argument("-C", "--repo", metavar="DIR", type=Path, default=None,
                        help="run in this repository instead of the current directory")
    _add_config_flags(parser, tuple(FLAG_KEYS))
    for flag, key in LEGACY_FLAGS.items():
        parser.add_argument(flag, dest=key, default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands (optional)")
    clean = commands.add_parser(
        "clean", help="remove the sandbox worktrees and branches codeloop made",
        description="Remove the sandbox worktrees and branches codeloop made in this repo. Kept, "
                    "and listed with the reason: a running session's sandbox, a sandbox with "
                    "changes made in it after its session (unless --force), a branch with "
                    "commits codeloop did not make, and anything codeloop did not make.")
    clean.add_argument("-C", "--repo", metavar="DIR", type=Path, default=argparse.SUPPRESS,
                       help="run in this repository instead of the current directory")
    clean.add_argument("--dry-run", action="store_true",
                       help="say what would be removed and kept; change nothing")
    clean.add_argument("--force", action="store_true",
                       help="remove codeloop's sandboxes even when they hold uncommitted changes")
    replay = commands.add_parser(
        "replay", help="watch, re-execute or re-ask a recorded session",
        description="Watch a recording (at its recorded pace), re-execute it in a fresh sandbox "
                    "(recorded model replies, real patches and tests; exit 1 where it diverges), "
                    "or re-ask its requests of another model/transport (A/B latency).")
    replay.add_argument("file", metavar="FILE", help="a .codeloop/sessions/*.jsonl recording")
    replay.add_argument("--speed", type=speed_value, default=1.0, metavar="X",
                        help="playback speed: 2, 10, or max (default 1)")
    replay.add_argument("--headless", action="store_true", help="print instead of the TUI")
    replay.add_argument("--json", action="store_true", help="re-emit the events as JSON lines")
    replay.add_argument("--re-execute", action="store_true",
                        help="re-run the session in a fresh sandbox; report divergences")
    replay.add_argument("--at", metavar="REV", default="",
                        help="with --re-execute: start at this commit (default: the recorded base)")
    replay.add_argument("--ask", action="store_true",
                        help="send the recorded requests again; compare TTFT, decode, round trip")
    _add_config_flags(replay, ASK_FLAGS, ask=True)
    replay.add_argument("--slo", default="", metavar="CHECKS",
                        help='with --ask: e.g. "ttft_p95<500ms,decode_tps>800"; exit 1 if violated')
    replay.add_argument("-C", "--repo", metavar="DIR", type=Path, default=argparse.SUPPRESS)
    demo = commands.add_parser("demo", help="offline demo: codeloop fixing a bundled project")
    demo.add_argument("--speed", type=speed_value, default=1.0, metavar="X",
                      help="model stream speed: 2, 10, or max (default 1: as recorded)")
    demo.add_argument("--headless", action="store_true", help="print instead of the TUI")
    return parser


def _add_config_flags(parser: argparse.ArgumentParser, flags: tuple[str, ...],
                      ask: bool = False) -> None:
    """A flag per setting; `ask`: those `replay --ask` takes as a session does."""
    defaults, types = Config(), Config.key_types()
    for flag in flags:
        key = FLAG_KEYS[flag]
        if ask:  # (SUPPRESS: one not given after `replay` leaves what a flag before it set)
            said = "the recorded one" if key in ("model", "base_url") else \
                "the configuration, as for a session"
            default, text = argparse.SUPPRESS, f"with --ask: {KEY_HELP[key]} (default: {said})"
        else:
            default = None
            text = f"{KEY_HELP[key]} [{env_name(key)}; default: {getattr(defaults, key)!r}]"
        parser.add_argument(flag, dest=key, type=parse_bool if types[key] is bool else types[key],
                            default=default, metavar=key.upper().removesuffix("_S"), help=text)


def speed_value(text: str) -> float | None:
    """`--speed 2`, `--speed 10`, `--speed max` (None: no waiting at all)."""
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a speed: {text!r} (a number, or max)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be positive, or max")
    return value


def _error(message: str) -> ExitCode:
    print(f"codeloop: error: {message}", file=sys.stderr)
    return ExitCode.USAGE


def main(argv: list[str] | None = None) -> int:
    ctrl_c = hold_ctrl_c()  # first (`python -m codeloop` did so even before importing this)
    # inherited as ignored, SIGCHLD would have the kernel reap codeloop's children itself, and
    # no exit code of git or of a test run could be read
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        return _main(argv, ctrl_c)
    finally:
        # everything alive now dies with the process: keep it out of the collections the
        # interpreter runs while shutting down (measured: exit 40-57 ms -> 9-12 ms)
        gc.freeze()


def _main(argv: list[str] | None, ctrl_c: CtrlC) -> int:
    args = build_parser().parse_args(argv)
    from codeloop.workspace.clean import clean
    from codeloop.workspace.errors import SandboxError
    from codeloop.workspace.git import REPO_LOCATING
    from codeloop.workspace.repo import find_repo

    # codeloop finds the repository from the directory alone; an inherited GIT_DIR & co. (set
    # inside a git hook, say) would turn every git it runs — GitPython's, which reads them from
    # this process, included — onto the user's repository
    for name in REPO_LOCATING:
        os.environ.pop(name, None)
    if args.command in ("demo", "replay"):
        return _play(args, ctrl_c)

    try:
        repo_root = find_repo((args.repo or Path.cwd()).resolve())
    except (SandboxError, FileNotFoundError, NotADirectoryError) as exc:
        return _error(str(exc))
    if ctrl_c.pressed:  # nothing is made yet: there is nothing to clean, end or report
        return _interrupted()
    if args.command == "clean":
        report = clean(repo_root, force=args.force, dry_run=args.dry_run)
        done, kept = ("would remove", "would keep") if args.dry_run else ("removed", "kept")
        print("\n".join([*(f"{done} {item}" for item in report.removed),
                         *(f"{kept} {item}: {why}" for item, why in report.kept)])
              or "nothing to clean")
        return ExitCode.PASSED
    if not args.task and not args.plain and not (sys.stdin.isatty() and sys.stdout.isatty()):
        return _error("no terminal for the interactive app: pass --task TEXT to run headless, "
                      "or --plain for the line REPL")
    try:
        session, recorder = build_session(repo_root, args)
    except ConfigError as exc:
        return _error(str(exc))
    try:
        exit_code = _run_session(session, args, ctrl_c)
    finally:
        recorder.close()
    if not args.json:
        print(f"recording: {recorder.path}", file=sys.stderr)
    if exit_code == ExitCode.INTERRUPTED and session.sandbox is not None:
        print(f"interrupted: the sandbox stays at {session.sandbox.path} on branch "
              f"{session.sandbox.branch} (`codeloop clean` removes it)", file=sys.stderr)
    return exit_code


def _interrupted(mid_line: bool = False) -> int:
    print(("\n" if mid_line else "") + "codeloop: interrupted", file=sys.stderr)
    return ExitCode.INTERRUPTED


def _raise_at_ctrl_c(ctrl_c: CtrlC) -> None:
    """From now on a Ctrl-C raises KeyboardInterrupt, unless SIGINT is ignored (as whoever
    started codeloop left it: then it stays so)."""
    if not ctrl_c.ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _play(args: argparse.Namespace, ctrl_c: CtrlC) -> int:
    """`demo` and `replay`: they stop at a Ctrl-C wherever they are (exit 130, no traceback);
    one noted during start-up stops them before they begin."""
    try:
        _raise_at_ctrl_c(ctrl_c)
        if ctrl_c.pressed:
            return _interrupted()
        if args.command == "demo":
            from codeloop.replay.run import run_demo

            return run_demo(args)
        from codeloop.replay.run import run_replay
        from codeloop.workspace.errors import SandboxError
        from codeloop.workspace.repo import find_repo

        try:
            found: Path | None = find_repo((args.repo or Path.cwd()).resolve())
        except (SandboxError, FileNotFoundError, NotADirectoryError):
            found = None
        return run_replay(args, found)
    except KeyboardInterrupt:
        hold_ctrl_c()  # (a press from here on only adds to the one being answered)
        return _interrupted(mid_line=True)  # (what was playing may have stopped mid-line)


def _run_session(session: Session, args: argparse.Namespace, ctrl_c: CtrlC) -> int:
    """The session, in the front end asked for; after a Ctrl-C during start-up, the session
    starts and ends at once, interrupted, whatever the front end. The REPL and the app get it
    as an `Agent` (the port), and know nothing else of it."""
    if args.task or ctrl_c.pressed:
        return run_headless(session, ctrl_c)
    agent: Agent = session
    if args.plain:
        from codeloop.frontends.repl import run_repl

        return run_repl(agent, diffs=not args.quiet)
    from codeloop.frontends.tui.app import CodeloopApp

    _raise_at_ctrl_c(ctrl_c)  # (the app has its own ways)
    return CodeloopApp(agent).run() or 0


def _secret_values(names: tuple[str, ...]) -> tuple[str, ...]:
    """The values of these environment variables long enough to be worth scrubbing."""
    return tuple(os.environ[name] for name in names if len(os.environ.get(name, "")) >= 8)


def build_session(repo_root: Path, args: argparse.Namespace) -> tuple[Session, Recorder]:
    """Config, key check, test command, recorder, printer and client, wired into a Session."""
    from codeloop.config import detect_test_command, load_config
    from codeloop.core.redact import Redactor, redact
    from codeloop.transport import is_loopback

    # every API key in the environment stays out of the tests and off every output
    env_keys = tuple(name for name in os.environ if name.endswith(("_API_KEY", "_API_TOKEN")))
    names = {key: flag for flag, key in (*FLAG_KEYS.items(), *LEGACY_FLAGS.items())}
    flags = {key: getattr(args, key) for key in names}
    try:
        config, _ = load_config(repo_root, flags, flag_names=names)
    except ConfigError as exc:  # it quotes the bad value: maybe a key, set in the wrong place
        raise ConfigError(redact(str(exc), _secret_values(env_keys))) from None
    api_key = os.environ.get(config.api_key_env) or None
    if api_key is None and not is_loopback(config.base_url):
        raise ConfigError(
            f"no API key: set the environment variable {config.api_key_env} (named by "
            f"api_key_env), or point --base-url at a local server such as "
            f"http://127.0.0.1:8080/v1")
    test_command = config.test_command or detect_test_command(repo_root)
    key_vars = tuple(sorted({config.api_key_env, *env_keys}))
    from codeloop.core.ids import new_session_id

    session_id = new_session_id()
    from codeloop.replay.recorder import SESSIONS_DIR, Recorder
    from codeloop.testrunner.service import spawn_runner
    from codeloop.workspace.errors import SandboxError
    from codeloop.workspace.repo import exclude_from_git
    from codeloop.workspace.sandbox import start_sandbox

    # the warm test runner's start-up (~0.2 s) and the sandbox's git work overlap the imports
    # (the runner is no artefact: it ends with codeloop, whatever stops it here)
    runner = spawn_runner(config.warm_tests, test_command, repo_root, key_vars)
    try:  # before the recording exists (it stays out of git) and before the sandbox: where
        # either cannot be written, nothing is made
        exclude_from_git(repo_root, ".codeloop/")
        recorder = Recorder(repo_root, session_id, mirror=sys.stdout if args.json else None)
    except (OSError, SandboxError) as exc:  # `.codeloop` or `.git/info/exclude` a folder, say
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"cannot write recordings to {repo_root / SESSIONS_DIR} "
                          f"(kept out of git by .git/info/exclude): {reason}") from None
    sandbox_start = start_sandbox(repo_root, session_id)
    from codeloop.agent.session import Session, SessionSettings
    from codeloop.core.stream import EventStream
    from codeloop.frontends.headless import ProgressPrinter
    from codeloop.transport import make_client

    settings = SessionSettings(
        session_id=session_id, task=args.task or "", test_command=test_command,
        apply_at_end=args.apply, pinned_files=args.add, hidden_env=key_vars)
    # every subscriber (recording, --json, printer, REPL, TUI) gets the events redacted
    events = EventStream(Redactor(_secret_values(key_vars)))
    events.subscribe(recorder)
    if args.task and not args.json:
        events.subscribe(ProgressPrinter(diffs=not args.quiet))
    cache_key = "codeloop:" + hashlib.sha1(str(repo_root).encode()).hexdigest()[:16]
    client = make_client(config.transport, config.base_url, config.model, api_key,
                         config.max_output_tokens, config.request_timeout_s,
                         config.responses_store, cache_key, service_tier=config.service_tier)
    return Session(repo_root, config, settings, client, events, runner, sandbox_start), recorder


def run_headless(session: Session, ctrl_c: CtrlC) -> int:
    """Run the session; Ctrl-C or SIGTERM cancels it, and it still ends cleanly. A Ctrl-C
    already noted (`ctrl_c`, during start-up) cancels it as soon as it has begun."""
    import asyncio

    async def interruptible() -> int:
        loop = asyncio.get_running_loop()
        runner = asyncio.ensure_future(session.run())
        for signum in (signal.SIGTERM,) if ctrl_c.ignored else (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, runner.cancel)
        if ctrl_c.pressed:  # (queued after its first step: begun, its end is recorded too)
            loop.call_soon(runner.cancel)
        try:
            return await runner
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            if not ctrl_c.ignored:
                let_go_of_sigint(loop, ctrl_c)  # the rest of the exit notes a Ctrl-C

    return asyncio.run(interruptible())
