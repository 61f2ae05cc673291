"""Start-up: how long `codeloop --version` takes, and how long until the app's first paint.

`--version` is timed as a whole process (interpreter start included). First paint is the time
from starting `codeloop` in a pty (120×40, in a git copy of sandbox/offbyone, against the
scripted server) to the first screen that shows the input's placeholder; the app is then sent
Ctrl-C twice. Prints the median and the minimum of each.

    python benchmarks/start_up.py [--runs 20]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeloop.workspace.projects import copy_project  # noqa: E402

from tests.scripted_server import ScriptedModelServer  # noqa: E402

PAINTED = b"Describe the task"


def version_ms() -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "codeloop", "--version"], check=True,
                   capture_output=True)
    return (time.perf_counter() - began) * 1000


def first_paint_ms(repo: Path, base_url: str, env: dict[str, str]) -> float:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "codeloop", "--base-url", base_url, "--model", "scripted",
         "--warm-tests", "off"], cwd=repo, env=env, stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True)
    os.close(slave)
    seen, painted = b"", 0.0
    try:
        while not painted and time.perf_counter() - began < 30:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 65536)
                if PAINTED in seen:
                    painted = (time.perf_counter() - began) * 1000
    finally:
        for _ in range(2):
            os.write(master, b"\x03")
            time.sleep(0.3)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        os.close(master)
    if not painted:
        raise SystemExit("the app never painted its input")
    return painted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    versions = [version_ms() for _ in range(args.runs)]
    with tempfile.TemporaryDirectory() as tmp, ScriptedModelServer([]) as server:
        repo = copy_project(ROOT / "sandbox" / "offbyone", Path(tmp) / "offbyone")
        env = {**os.environ, "TERM": "xterm-256color", "XDG_CACHE_HOME": f"{tmp}/cache",
               "XDG_CONFIG_HOME": f"{tmp}/config", "XDG_STATE_HOME": f"{tmp}/state"}
        paints = [first_paint_ms(repo, server.base_url, env) for _ in range(max(args.runs // 4, 3))]
    for name, figures in (("codeloop --version", versions), ("first paint (TUI)", paints)):
        print(f"{name:20} median {statistics.median(figures):7.1f} ms   "
              f"min {min(figures):7.1f} ms   ({len(figures)} runs)")


if __name__ == "__main__":
    main()
