"""The warm pytest runner: a process that has imported pytest, its plugins and the project's
third-party dependencies, and forks one child per test run; it learns, from each run, what else
to import before the next.

It runs under the PROJECT's interpreter (the one its test command uses), as a script, so it
imports nothing from codeloop. It never imports the project's own modules or conftest.py: each
child imports them fresh, so every run sees the latest patch. Command line:
`warm_child.py DEPENDENCIES LEARNED`, both JSON: the distributions to warm, and
{"modules": [...], "refused": [...]} (modules learned in earlier sessions, and names never to
learn). Protocol on stdin/stdout, one JSON object per line:

  <- {"ready": true, "threads": N, "warmed": [...], "failed": [...], "fork": bool,
      "site": [...]}                                                     after warming
  -> {"home": DIR}                         where the runs run: move there, import the modules
  <- {"learned": [...], "dropped": [[MODULE, WHY], ...], "tainted": bool}   learned before
  -> {"args": [...], "cwd": "...", "env": {...}, "output": FIFO, "path0": bool, "plugin": FILE,
      "learn": FILE}
  <- {"pid": P}                                                          the child started
  <- {"exit": CODE}                        the child finished, and all it started is ended
  <- {"learned": [...], "dropped": [[MODULE, WHY], ...], "tainted": bool}
                                           the runner has imported what the child learned
  SIGTERM                                  kill the child, if it runs (a timeout, a cancel)

Learning: just before its `os._exit`, the child writes to FILE the modules it imported (name,
file, namespace folders, whether pytest rewrote it) — the side channel, as its stdout and stderr
are the run's output. After reporting the exit (codeloop is then waiting on the model), the
runner keeps those that are not the project's (`_learnable`) and imports them one by one. An
import that fails, or that resolves to another file here, is dropped; one that leaves a thread
running makes the runner `tainted` (a fork would copy that thread half-way): it reports, and
exits, and codeloop starts another without that module. The modules learned before are imported
only once codeloop has said where the runs run (`home`, the sandbox), and reported the same way:
they never make warming fail.

The runner is a child subreaper (reaper.py): what a child leaves behind, daemons in sessions of
their own included, is handed to the runner, which kills it before it reports the exit.
"""

import importlib
import importlib.util
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


_replies = sys.stdout  # the protocol; `_guard_replies` moves it off fd 1


def _send(message):
    _replies.write(json.dumps(message) + "\n")
    _replies.flush()


def _guard_replies():
    """The replies get a descriptor of their own and fd 1 becomes /dev/null: a module that
    prints when imported (`this`, say, once learned) must not write into the protocol."""
    global _replies
    _replies = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _modules_of(distributions):
    """Top-level modules of the given distributions (the project's third-party dependencies),
    each looked up by name: `packages_distributions()` would read every installed
    distribution's metadata (~25-50 ms here), on the path to the runner's first run."""
    from importlib.metadata import PackageNotFoundError, distribution

    modules = set()
    for name in distributions:
        try:
            dist = distribution(name)
            top = (dist.read_text("top_level.txt") or "").split() or [
                file.parts[0] if len(file.parts) > 1 else file.stem
                for file in dist.files or () if file.suffix == ".py" and ".." not in file.parts]
        except (PackageNotFoundError, OSError, ValueError):
            continue  # not installed (or no metadata): nothing extra to warm
        modules.update(module for module in top if not module.startswith("_"))
    return sorted(modules)


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


def _roots():
    """Where modules that are not the project's live: the standard library, site-packages."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
    roots += site.getsitepackages()
    if site.ENABLE_USER_SITE:
        roots.append(site.getusersitepackages())
    return tuple(sorted({os.path.join(os.path.realpath(root), "") for root in roots
                         if os.path.isdir(root)}))


def _plugin_packages():
    """Top-level names of the distributions with pytest plugins: pytest rewrites their modules
    (`_mark_plugins_for_rewrite`); learned, they are imported unrewritten, as the plugins'
    entry modules already are (the self-check compares the results)."""
    names = set()
    try:
        from importlib.metadata import distributions

        for dist in distributions():
            if any(ep.group == "pytest11" for ep in dist.entry_points):
                names.update(file.parts[0].removesuffix(".py") for file in dist.files or ()
                             if file.suffix == ".py" and ".." not in file.parts)
    except Exception:  # noqa: BLE001 - no metadata: no rewritten module is learned
        pass
    return names


def _learnable(entry, cwd, roots, plugins):
    """Whether a module the child imported is not the project's: its file (or a namespace's
    folders) in the standard library or site-packages and not under the run's cwd, no project
    file of its top-level name, not `__main__`, a conftest, a test module, or a module pytest
    rewrote but for its plugins'."""
    name, file, folders, rewritten = entry
    top, leaf = name.partition(".")[0], name.rpartition(".")[2]
    if (name == "__main__" or leaf == "conftest" or leaf.startswith("test_")
            or leaf.endswith("_test") or (rewritten and top not in plugins)):
        return False
    places = [os.path.realpath(place) for place in ([file] if file else folders)]
    if not places or any(place.startswith(cwd) or not place.startswith(roots)
                         for place in places):
        return False
    return not any(os.path.exists(os.path.join(cwd, base, top + suffix))
                   for base in ("", "src") for suffix in ("", ".py"))


def _import_one(name, file):
    """Import a learned module: None, or why it is dropped and whether the runner is tainted
    (it holds a thread, or a module other than the child's)."""
    try:
        if file is not None and "." not in name:  # (a submodule's look-up imports its parent)
            spec = importlib.util.find_spec(name)
            if spec is None or os.path.realpath(spec.origin or "") != os.path.realpath(file):
                return "it resolves to another file in the runner", False
        module = importlib.import_module(name)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - dropped, with the reason
        return f"import failed: {type(exc).__name__}: {exc}", False  # (warm.IMPORT_FAILED)
    if threading.active_count() > 1:
        return "importing it leaves a thread running in the runner (fork-unsafe)", True
    origin = getattr(getattr(module, "__spec__", None), "origin", None)
    if file is not None and os.path.realpath(origin or "") != os.path.realpath(file):
        return "it resolves to another file in the runner", True
    return None, False


def _import_all(entries, refused):
    """(imported, dropped [[name, why]], tainted): stops at the first module that taints."""
    learned, dropped = [], []
    for name, file in entries:
        if name in sys.modules or name in refused:
            continue
        why, tainted = _import_one(name, file)
        if why is None:
            learned.append(name)
            continue
        dropped.append([name, why])
        refused.add(name)
        if tainted:
            return learned, dropped, True
    return learned, dropped, False


def _import_known(modules, refused):
    """The modules learned in earlier sessions, at start-up."""
    return _import_all([(name, None) for name in modules], refused)


def _import_learned(found, refused, cwd):
    """What a run's child imported, less the project's modules (and what is here already)."""
    global _places
    if _places is None:
        _places = (_roots(), _plugin_packages())
    where = os.path.join(os.path.realpath(cwd), "")
    return _import_all([(entry[0], entry[1]) for entry in found
                        if entry[0] not in sys.modules and entry[0] not in refused
                        and _learnable(entry, where, *_places)], refused)


_places = None  # (_roots(), _plugin_packages()), on the first learning


def _load_plugin(path):
    """codeloop's selection plugin (it reads its instructions from the environment), under a
    name of its own, as reaper.py is loaded."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_codeloop_select", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child(request, reaper):
    before = set(sys.modules)
    os.close(_replies.fileno())  # the runner's replies are not the tests' to write
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

    plugins = [_load_plugin(request["plugin"])] if request.get("plugin") else []
    code = pytest.main(request["args"], plugins=plugins)
    sys.stdout.flush()
    sys.stderr.flush()
    if request.get("learn"):
        _report_imports(request["learn"], before)
    os._exit(int(code))


def _report_imports(path, before):
    """Write what this child imported for the runner: [name, file or None, namespace folders,
    whether pytest rewrote it]. Only what a look costs (measured: 2.7 ms when all of 390
    modules are new, hypothesis's first run; next to nothing once learned): the runner sorts
    it out after the exit is reported."""
    found = []
    for name, module in list(sys.modules.items()):
        if name in before:
            continue
        try:
            spec = module.__spec__
            if spec is None or module.__name__ != name:  # an alias, six.moves' stand-ins
                continue
            origin = spec.origin if spec.has_location else None
            folders = [] if origin else [str(p) for p in spec.submodule_search_locations or ()]
            found.append([name, origin, folders,
                          type(spec.loader).__name__ == "AssertionRewritingHook"])
        except Exception:  # noqa: BLE001, S112 - an odd object in sys.modules: not learned
            continue
    try:
        with open(path, "w") as out:
            json.dump(found, out)
    except OSError:  # nothing learned from this run
        pass


def _learned_imports(path):
    try:
        with open(path) as found:
            return json.load(found)
    except (OSError, ValueError):  # the child was killed, or crashed: nothing to learn
        return []
    finally:
        _unless_missing(os.unlink, path)


def _unless_missing(call, *args):
    try:  # noqa: SIM105 - the runner imports no more than it must
        call(*args)
    except OSError:
        pass


def main():
    reaper = _load_reaper()
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == here:
        del sys.path[0]  # codeloop's folder: never where a child finds a module (as cold)
    _guard_replies()
    reaper.become_subreaper()
    distributions = json.loads(sys.argv[1]) if len(sys.argv) > 1 else []
    known = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    warmed, failed = _warm(distributions)
    threads = threading.active_count()
    import site

    _freeze()
    _send({"ready": True, "threads": threads, "warmed": warmed, "failed": failed,
           "fork": hasattr(os, "fork"),
           "site": [p for p in site.getsitepackages() if os.path.isdir(p)]})
    keep = set(reaper.children())  # whatever warming started is the runner's, not a run's
    # Only the runner may kill a run's child: it alone knows that the pid is still the child's
    # (not reaped). codeloop asks with a SIGTERM, after the pid was sent and before the exit
    # was read; one for an earlier run, sent before this request was, is pending by now.
    reaper.hold_signals()
    refused = set(known.get("refused", ()))
    for line in sys.stdin:
        request = json.loads(line)
        if "home" in request:
            keep = _learned_at_home(request["home"], known.get("modules", ()), refused, reaper)
            continue
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
        # codeloop now waits on the model: the time to import what the child needed. Measured
        # (benchmarks/test_runner.py, 2 tests, hypothesis installed: its plugin imports ~340
        # modules lazily; medians of 7): cold 1146 ms; warm before learning 799 ms (0.70x),
        # once learned 122 ms (0.11x; 234 ms for a run started at once, which waits for this),
        # the next session's first run 121 ms (0.11x)
        found = _learned_imports(request["learn"]) if request.get("learn") else []
        keep = _report_learning(_import_learned(found, refused, request["cwd"]), reaper)


def _learned_at_home(home, modules, refused, reaper):
    """Move to where the runs run (the sandbox) and import what earlier sessions learned: a
    module may keep the cwd it was imported in (hypothesis keeps its `.hypothesis` folder's),
    and the runs' must not be the user's repo, where the runner started."""
    _unless_missing(os.chdir, home)  # gone: imports happen where the runner is
    return _report_learning(_import_known(modules, refused), reaper)


def _report_learning(outcome, reaper):
    """Send what was learned; returns the runner's own children now (what imports started)."""
    learned, dropped, tainted = outcome
    if learned:
        _freeze()
    _send({"learned": learned, "dropped": dropped, "tainted": tainted})
    if tainted:  # its thread would hold up a normal exit
        os._exit(0)
    return set(reaper.children())


def _freeze():
    """What is loaded now lives as long as the runner: keep it out of every child's
    collections."""
    import gc

    gc.collect()
    gc.freeze()

if __name__ == "__main__":
    main()
