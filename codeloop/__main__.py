"""`python -m codeloop` and the `codeloop` command (the entry point in pyproject.toml)."""

import signal

from codeloop.interrupts import hold_ctrl_c


def run() -> int:
    hold_ctrl_c()  # first: a Ctrl-C while the CLI imports (~30 ms) is noted, not raised
    from codeloop.cli import main

    exit_code = main()
    # the outcome is settled and said: a Ctrl-C while the interpreter winds down (joining
    # threads, then back to the default handler) would only turn this exit into a signal's
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return exit_code


if __name__ == "__main__":
    raise SystemExit(run())
