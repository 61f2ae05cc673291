"""The warm pytest runner: a process that has imported pytest, its plugins and the project's
third-party dependencies, and forks one child per test run.

It runs under the PROJECT's interpreter (the one its test command uses), as a script, so it
imports nothing from codeloop. It never imports the project's own modules or conftest.py: each
child imports them fresh, so every run sees the latest patch. Protocol on stdin/stdout, one JSON
object per line:

  <- {"ready": true, "threads": N, "warmed": [...], "failed": [...], "fork": bool,
      "site": [...]}                                                     after warming
  -> {"args": [...], "cwd": "...", "env": {...}, "output": FIFO, "path0": bool, "first": [...]}
  <- {"pid": P}                                                          the child started
  <- {"exit": CODE}                        the child finished, and all it started is ended
  SIGTERM                                  kill the child, if it runs (a timeout, a cancel)

The runner is a child subreaper (reaper.py): what a child leaves behind, daemons in sessions of
their own included, is handed to the runner, which kills it before it reports the exit.
"""

import importlib
import json
import os
import sys
import threading


def _load_reaper():
    """reaper.py, beside this file, under a name of its own: the project's modules, which may
    have any name, never meet it."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reaper.py")
    spec = importlib.util.spec_from_file_location("_codeloop_reaper", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _modules_of(distributions):
    """Top-level modules of the given distributions (the project's third-party dependencies)."""
    try:
        from importlib.metadata import packages_distributions

        wanted = {name.lower().replace("_", "-") for name in distributions}
        return sorted(module for module, dists in packages_distributions().items()
                      if not module.startswith("_")
                      and any(d.lower().replace("_", "-") in wanted for d in dists))
    except Exception:  # noqa: BLE001 - no metadata: nothing extra to warm
        return []


def _warm(distributions):
    warmed, failed = [], []
    import pytest  # noqa: F401 - the point is to have it imported

    try:
        from importlib.metadata import entry_points

        plugins = [ep.module for ep in entry_points(group="pytest11")]
    except Exception:  # noqa: BLE001 - best effort: plugins are loaded by pytest anyway
        plugins = []
    for name in [*plugins, *_modules_of(distributions)]:
        try:
            importlib.import_module(name)
            warmed.append(name)
        except Exception as exc:  # noqa: BLE001 - reported back: codeloop then runs cold
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    failed += _warm_pytest_itself()
    return warmed, failed


def _warm_pytest_itself():
    """What every run would otherwise redo, and which carries no state from one run to the
    next: pytest's own plugin modules (`import pytest` loads only some), inspect's map from
    files to modules (filled on the first failure report), tokenize's pattern (compiled on the
    first traceback)."""
    failed = []
    from _pytest import config

    for name in getattr(config, "default_plugins", ()):
        try:
            importlib.import_module(f"_pytest.{name}")
        except Exception as exc:  # noqa: BLE001 - reported back: codeloop then runs cold
            failed.append(f"_pytest.{name}: {type(exc).__name__}: {exc}")
    import inspect
    import io
    import tokenize

    inspect.getmodule(None, os.devnull)  # any file name not a module's fills the cache
    list(tokenize.generate_tokens(io.StringIO("x = 1\n").readline))
    return failed


class _FailedFirst:
    """Puts the tests that failed last time first, keeping the rest in their order."""

    def __init__(self, first):
        self.first = set(first)

    def pytest_collection_modifyitems(self, items):
        items.sort(key=lambda item: item.nodeid not in self.first)


def _child(request, reaper):
    reaper.release_signals()  # the tests get the signals the runner takes for itself
    os.setsid()  # its own group, which the runner kills on SIGTERM; the subreaper ends the rest
    fd = os.open(request["output"], os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["path0"]:
        sys.path.insert(0, request["cwd"])  # as `python -m pytest` puts the cwd first
    import pytest

    plugins = [_FailedFirst(request["first"])] if request["first"] else []
    code = pytest.main(request["args"], plugins=plugins)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def main():
    reaper = _load_reaper()
    reaper.become_subreaper()
    distributions = json.loads(sys.argv[1]) if len(sys.argv) > 1 else []
    warmed, failed = _warm(distributions)
    import gc
    import site

    # what is loaded now lives as long as the runner: keep it out of every child's collections
    gc.collect()
    gc.freeze()
    _send({"ready": True, "threads": threading.active_count(), "warmed": warmed,
           "failed": failed, "fork": hasattr(os, "fork"),
           "site": [p for p in site.getsitepackages() if os.path.isdir(p)]})
    keep = set(reaper.children())  # whatever warming started is the runner's, not a run's
    # Only the runner may kill a run's child: it alone knows that the pid is still the child's
    # (not reaped). codeloop asks with a SIGTERM, after the pid was sent and before the exit
    # was read; one for an earlier run, sent before this request was, is pending by now.
    reaper.hold_signals()
    for line in sys.stdin:
        request = json.loads(line)
        reaper.discard_stop()
        pid = os.fork()
        if pid == 0:
            try:
                _child(request, reaper)
            finally:
                os._exit(70)
        _send({"pid": pid})
        reaper.wait_exited(pid)
        _send({"exit": os.waitstatus_to_exitcode(reaper.end_all(pid, keep))})


if __name__ == "__main__":
    main()
