"""Ending every process a test run started, also those that left its process group.

Owns the child subreaper (Linux): the orphans of a run's processes, daemons in sessions of their
own included, are handed to the process that runs it, which ends them all when the test command
exits. The warm runner loads this file by path; around a cold run it is the script

    python -I -S reaper.py COMMAND     runs `/bin/sh -c COMMAND`, ends what it left, exits as it did

It imports only the standard library and runs under any Python 3.9+ (the warm runner runs
under the project's interpreter): it must not import codeloop.
"""

import os
import sys

try:  # the signal module imports enum: milliseconds more start-up time on every cold run
    import _signal as signal
except ImportError:
    import signal

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_HELD = (signal.SIGTERM, signal.SIGCHLD)


def become_subreaper():
    """From now on orphaned descendants become our children instead of init's. False where the
    kernel refuses (not Linux): then only a kill of the run's process group ends what it
    started."""
    try:
        import ctypes

        return ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (ImportError, OSError, AttributeError):
        return False


def children():
    """Our children, running or not yet reaped: the kernel's list per thread, or where it keeps
    none, every process whose parent we are."""
    me = str(os.getpid())
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:  # no /proc: no orphans can be found
        return []
    if not os.path.exists(f"/proc/self/task/{me}/children"):
        return _children_by_parent()
    found = []
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children") as listing:
                found += [int(pid) for pid in listing.read().split()]
        except OSError:  # the thread has ended
            pass
    return found


def _children_by_parent():
    """Where the kernel keeps no list of children (CONFIG_PROC_CHILDREN unset)."""
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(name))
            except (OSError, IndexError, ValueError):  # gone meanwhile
                pass
    return found


def hold_signals():
    """Block SIGTERM and SIGCHLD: `wait_exited` takes them when it is ready for them. (A
    handler would not do: one that arrives just before a blocking wait begins runs only after
    the wait, which is then for a run that the SIGTERM should have ended.) SIGCHLD goes back
    to its default first: inherited as ignored, the kernel would reap our children itself and
    never signal their exit, and every wait would hang."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)


def release_signals():
    """Undo `hold_signals` (in a child that is to run tests)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)


def discard_stop():
    """Drop a SIGTERM still pending for an earlier run (sent as that one ended by itself)."""
    if signal.SIGTERM in signal.sigpending():
        signal.sigwaitinfo((signal.SIGTERM,))


def wait_exited(pid):
    """Wait until our child `pid` has exited, without reaping it: while it is a zombie, its
    pid and process group id cannot be reused, so `end_all` cannot hit a stranger. Any other
    child that exits meanwhile (an orphan handed to us) is reaped at once. A SIGTERM
    (codeloop stopping the run) meanwhile kills `pid` with its process group. Needs
    `hold_signals`."""
    while True:
        exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        if exited is not None and exited.si_pid == pid:
            return
        if exited is not None:
            _unless_gone(os.waitpid, exited.si_pid, 0)
        elif signal.sigwaitinfo(_HELD).si_signo == signal.SIGTERM:
            _stop(pid)


def _stop(pid):
    """SIGKILL our child `pid` (not reaped: its ids are still its own) with its group."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # a warm child before its setsid(): no group, nothing started
        try:  # noqa: SIM105 - (contextlib would cost start-up time on every cold run)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # (gone already)
            pass


def end_all(pid, keep=()):
    """`pid` (our child, the run's command) has exited: kill what is left in its process
    group, reap it, then kill and reap every child we have but `keep`, round after round (each
    one killed hands us its own children). Returns the wait status of `pid`.

    With nothing to keep, until the kernel says we have no child at all: the listing of
    children, which the kernel calls unreliable while they change, only says whom to kill, and
    a child it missed is found in a later round. With `keep` (the warm runner's own children),
    until a listing shows no other child. That is sound in a process of one thread that reaps
    nothing while it reads the listing: a child leaves it only when we reap it, and orphans
    handed to us join it at its end, so no child we had when a reading began is missed. And no
    other child means no process of the run is left: each descends from one of our children
    (its orphans come to us, the subreaper), so none can hand us another."""
    _unless_gone(os.killpg, pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    while True:
        left = [child for child in children() if child not in keep]
        for child in left:  # our child: its pid stays ours until we reap it
            _unless_gone(os.kill, child, signal.SIGKILL)
        for child in left:
            _unless_gone(os.waitpid, child, 0)
        if not (left if keep else _any_child_left()):
            return status


def _any_child_left():
    """Whether we have a child at all; one that has exited meanwhile is reaped."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


def _unless_gone(call, *args):
    """A kill or a wait, where the process or group may be gone already."""
    try:  # noqa: SIM105 - contextlib would cost milliseconds of start-up on every cold run
        call(*args)
    except OSError:
        pass


def _environment():
    """The environment we were given, exactly: Python's start-up adds to os.environ (LC_CTYPE
    under the C locale, PEP 538), and the command must not see that."""
    with open("/proc/self/environ", "rb") as given:
        entries = given.read().split(b"\0")
    return dict(entry.split(b"=", 1) for entry in entries if entry.find(b"=") > 0)


def _exit_as(status):
    """Exit with the command's exit code, or die of the signal that killed it."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file left in the sandbox
        if -code != signal.SIGKILL:  # SIGKILL (a timeout's) has no handler or mask to undo
            signal.signal(-code, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, (-code,))
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def supervise(command):
    """Run `command` in a shell in a process group of its own; a SIGTERM (codeloop stopping the
    run) kills that group at once. When the shell has exited, end everything it left."""
    become_subreaper()
    hold_signals()  # a SIGTERM from now on stops the shell, even one before it started
    try:
        shell = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], _environment(),
                               setpgroup=0, setsigmask=(),
                               setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as exc:
        sys.stderr.write(f"codeloop: cannot run /bin/sh: {exc}\n")
        os._exit(127)
    wait_exited(shell)
    # a SIGTERM from here on stays blocked: all is ended anyway
    _exit_as(end_all(shell))


if __name__ == "__main__":
    supervise(sys.argv[1])
