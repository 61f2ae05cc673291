"""codeloop's pytest plugin: run the collected tests in ordered groups, stopping after the
first group that has a failure, and record which of the project's functions each test ran.

It runs under the PROJECT's interpreter and imports nothing from codeloop. A cold run loads it
by name (`-p codeloop_select`, with this directory alone on PYTHONPATH); the warm runner's child
hands it to `pytest.main`. Its instructions are the JSON file named by `CODELOOP_SELECT`:

  {"groups": [{"name": NAME,
               "only": [...] | null,   these node ids (null: every test) ...
               "unknown": bool,        ... and every test not in "known" (new or renamed ones)
               "known": [...],
               "trace": "always" | "cheap" | ""}, ...],
   "exitfirst": bool,      stop at the first failure (-x)
   "trace": PATH,          write {node id: {file: [unit, ...]}} there: the project files whose
                           code each traced test ran (setup, call and teardown), relative to
                           "root", and in each the functions and methods it ran, by qualified
                           name up to any "<locals>" (a nested function is the one around it)
   "report": PATH,         write {"groups": [names that ran], "stopped": NAME | null,
                           "traced_all": bool} there
   "root": DIR}

A test belongs to the first group that wants it; the groups run in order, and once a group has
a failure the run stops after its last test. Tests no group wants are deselected the way `-k`
deselects (pytest counts them as such). Tracing "cheap" traces only where sys.monitoring (3.12+)
makes it nearly free, not with 3.11's trace function.
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


class _Units:
    """The project's functions that run while it is on (per test), as (file, unit)."""

    def __init__(self, root):
        self.root = os.path.realpath(root) + os.sep
        self.files = {}  # code file name -> the path relative to root, or None: not the project's
        self.units = {}  # code object -> (file, unit), or None
        self.seen = set()
        self.tool = None  # the sys.monitoring tool id taken (3.12+)

    def relative(self, filename):
        rel = self.files.get(filename, False)
        if rel is False:
            path = os.path.realpath(filename)
            rel = None
            if (os.path.isabs(filename) and path.startswith(self.root)  # (not "<frozen os>")
                    and os.sep + "site-packages" + os.sep not in path):
                rel = path[len(self.root):].replace(os.sep, "/")
            self.files[filename] = rel
        return rel

    def unit(self, code):
        key = self.units.get(code, False)
        if key is False:
            rel = self.relative(code.co_filename)
            name = getattr(code, "co_qualname", code.co_name).split(".<locals>", 1)[0]
            key = (rel, name) if rel is not None else None
            self.units[code] = key
        return key

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
        # 3.11: a global trace function that asks for no line events (calls only), as lean as
        # it can be: it runs at every Python call (see benchmarks/test_runner.py for its cost)
        known, unit, seen = self.units.get, self.unit, self.seen.add

        def called(frame, event, arg):
            code = frame.f_code
            key = known(code, False)
            seen(unit(code) if key is False else key)

        sys.settrace(called)
        threading.settrace(called)
        return True

    def stop(self):
        if hasattr(sys, "monitoring"):
            sys.monitoring.set_events(self.tool, 0)
        else:
            sys.settrace(None)
            threading.settrace(None)
        covered = {}
        for key in self.seen:
            if key is not None:
                covered.setdefault(key[0], []).append(key[1])
        return {rel: sorted(units) for rel, units in sorted(covered.items())}

    def _started(self, code, offset):
        self.seen.add(self.unit(code))
        return sys.monitoring.DISABLE


class _Group:
    def __init__(self, spec, cheap):
        self.name = spec["name"]
        self.only = None if spec.get("only") is None else set(spec["only"])
        self.unknown = bool(spec.get("unknown"))
        self.known = set(spec.get("known") or ())
        self.trace = spec.get("trace") == "always" or (spec.get("trace") == "cheap" and cheap)
        self.failed = False

    def wants(self, nodeid):
        return self.only is None or nodeid in self.only or (self.unknown
                                                            and nodeid not in self.known)


class Selection:
    """Orders and deselects as the spec says, stops after a failing group, traces."""

    def __init__(self, spec):
        self.groups = [_Group(g, hasattr(sys, "monitoring")) for g in spec["groups"]]
        self.exitfirst = bool(spec.get("exitfirst"))
        self.trace, self.report = spec.get("trace"), spec.get("report")
        self.units = _Units(spec.get("root") or os.getcwd())
        self.covered = {}
        self.of = {}  # node id -> its group
        self.last = {}  # group name -> the node id of its last test
        self.ran = []  # the names of the groups that ran, in order
        self.stopped = None
        self.traced_all = True

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        for item in items:
            self.of[item.nodeid] = next((g for g in self.groups if g.wants(item.nodeid)), None)
        dropped = [item for item in items if self.of[item.nodeid] is None]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        order = {id(g): n for n, g in enumerate(self.groups)}
        items[:] = sorted((i for i in items if self.of[i.nodeid] is not None),
                          key=lambda i: order[id(self.of[i.nodeid])])  # (stable: pytest's order)
        for item in items:
            self.last[self.of[item.nodeid].name] = item.nodeid

    def pytest_runtest_logreport(self, report):
        group = self.of.get(report.nodeid)
        if group is not None and report.failed:
            group.failed = True

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        group = self.of.get(item.nodeid)
        if group is not None and (not self.ran or self.ran[-1] != group.name):
            self.ran.append(group.name)
        tracing = group is not None and group.trace and self.trace and self.units.start()
        self.traced_all = self.traced_all and bool(tracing)
        try:
            yield
        finally:
            if tracing:
                self.covered[item.nodeid] = self.units.stop()
        if group is not None and group.failed and self.last.get(group.name) == item.nodeid \
                and nextitem is not None:
            self.stopped = group.name
            item.session.shouldstop = f"codeloop: the {group.name} tests fail; stopping there"

    def pytest_sessionfinish(self, session, exitstatus):
        if self.trace:
            with open(self.trace, "w", encoding="utf-8") as file:
                json.dump(self.covered, file)
        if self.report:
            with open(self.report, "w", encoding="utf-8") as file:
                json.dump({"groups": self.ran, "stopped": self.stopped,
                           "traced_all": self.traced_all}, file)


def pytest_configure(config):
    spec = _spec()
    if spec is not None and not config.pluginmanager.has_plugin("codeloop-selection"):
        selection = Selection(spec)
        if selection.exitfirst:
            config.option.maxfail = 1
        config.pluginmanager.register(selection, "codeloop-selection")
