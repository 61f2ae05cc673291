"""codeloop's pytest plugin: run a selection of the collected tests, and record which of the
project's files each test that ran executed.

It runs under the PROJECT's interpreter and imports nothing from codeloop. A cold run loads it
by name (`-p codeloop_select`, with this directory alone on PYTHONPATH); the warm runner's child
hands it to `pytest.main`. Its instructions are the JSON file named by `CODELOOP_SELECT`:

  {"only": [...] | null,   run only these node ids (null: every collected test) ...
   "unknown": bool,         ... and every collected test not in "known" (new or renamed ones)
   "known": [...],
   "exclude": [...],        never these (run already, on these files, in this turn)
   "exitfirst": bool,       stop at the first failure (-x)
   "trace": PATH | null,    write {node id: [files]} there: the project's files whose code each
                            test executed (setup, call and teardown), relative to "root"
   "trace_mode": "always" | "cheap",  "cheap": only where sys.monitoring (3.12+) makes it
                            nearly free, not with 3.11's trace function
   "root": DIR}

The tests not selected are deselected the way `-k` deselects (pytest counts them as such), so a
selection's results are those of the same tests in a full run.
"""

import json
import os
import sys
import threading

import pytest


def _spec():
    """The instructions (read at each run's start: the warm runner loads this module once)."""
    path = os.environ.get("CODELOOP_SELECT")
    if not path:
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


class _Files:
    """The project's files whose functions run while it is on (per test)."""

    def __init__(self, root):
        self.root = os.path.realpath(root) + os.sep
        self.mine = {}  # code file name -> the path relative to root, or None: not the project's
        self.seen = set()
        self.tool = None  # the sys.monitoring tool id taken (3.12+)

    def relative(self, filename):
        rel = self.mine.get(filename, False)
        if rel is False:
            path = os.path.realpath(filename)
            rel = None
            if (os.path.isabs(filename) and path.startswith(self.root)  # (not "<frozen os>")
                    and os.sep + "site-packages" + os.sep not in path):
                rel = path[len(self.root):].replace(os.sep, "/")
            self.mine[filename] = rel
        return rel

    def start(self):
        """Begin a test; False when another tool traces (a debugger, coverage): then nothing
        is recorded for it rather than that tool disturbed."""
        self.seen = set()
        if hasattr(sys, "monitoring"):  # 3.12+: one event per code object, then disabled
            monitoring = sys.monitoring
            if self.tool is None:
                free = [i for i in range(6) if monitoring.get_tool(i) is None]
                if not free:
                    return False
                self.tool = free[-1]
                monitoring.use_tool_id(self.tool, "codeloop")
                monitoring.register_callback(self.tool, monitoring.events.PY_START,
                                             self._started)
            monitoring.set_events(self.tool, monitoring.events.PY_START)
            monitoring.restart_events()
            return True
        if sys.gettrace() is not None:
            return False
        # 3.11: a global trace function that asks for no line events (calls only); measured on
        # more-itertools 10.5.0's suite: see benchmarks/test_runner.py
        sys.settrace(self._called)
        threading.settrace(self._called)
        return True

    def stop(self):
        if hasattr(sys, "monitoring"):
            sys.monitoring.set_events(self.tool, 0)
        else:
            sys.settrace(None)
            threading.settrace(None)
        return sorted(self.seen)

    def _started(self, code, offset):
        rel = self.relative(code.co_filename)
        if rel is not None:
            self.seen.add(rel)
        return sys.monitoring.DISABLE

    def _called(self, frame, event, arg):
        rel = self.relative(frame.f_code.co_filename)
        if rel is not None:
            self.seen.add(rel)
        return None


class Selection:
    """Deselects what the spec does not ask for; traces what it asks to."""

    def __init__(self, spec):
        self.only = None if spec.get("only") is None else set(spec["only"])
        self.unknown = bool(spec.get("unknown"))
        self.known = set(spec.get("known") or ())
        self.exclude = set(spec.get("exclude") or ())
        self.exitfirst = bool(spec.get("exitfirst"))
        cheap = hasattr(sys, "monitoring")
        self.trace = spec.get("trace") if cheap or spec.get("trace_mode") == "always" else None
        self.files = _Files(spec.get("root") or os.getcwd()) if self.trace else None
        self.covered = {}

    def wanted(self, nodeid):
        if nodeid in self.exclude:
            return False
        return self.only is None or nodeid in self.only or (self.unknown
                                                            and nodeid not in self.known)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        kept = [item for item in items if self.wanted(item.nodeid)]
        if len(kept) < len(items):
            dropped = [item for item in items if not self.wanted(item.nodeid)]
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        if self.files is None:
            yield
            return
        if not self.files.start():
            yield
            return
        try:
            yield
        finally:
            self.covered[item.nodeid] = self.files.stop()

    def pytest_sessionfinish(self, session, exitstatus):
        if self.trace:
            with open(self.trace, "w", encoding="utf-8") as file:
                json.dump(self.covered, file)


def pytest_configure(config):
    spec = _spec()
    if spec is not None and not config.pluginmanager.has_plugin("codeloop-selection"):
        selection = Selection(spec)
        if selection.exitfirst:
            config.option.maxfail = 1
        config.pluginmanager.register(selection, "codeloop-selection")
