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


def wait_exited(pid):
    """Wait until our child `pid` has exited, without reaping it: while it is a zombie, its
    pid and process group id cannot be reused, so `end_all` cannot hit a stranger. Any other
    child that exits meanwhile (an orphan handed to us) is reaped at once."""
    if not hasattr(os, "waitid"):
        return
    while True:
        exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT).si_pid
        if exited == pid:
            return
        _unless_gone(os.waitpid, exited, 0)


def end_all(pid, keep=()):
    """`pid` (our child, the run's command) has exited: kill what is left in its process
    group, reap it, then kill and reap every child we have but `keep`, until none is left (each
    one killed hands us its own children). Returns the wait status of `pid`."""
    _unless_gone(os.killpg, pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    while True:
        left = [child for child in children() if child not in keep]
        if not left:
            return status
        for child in left:  # our child: its pid stays ours until we reap it
            _unless_gone(os.kill, child, signal.SIGKILL)
        for child in left:
            _unless_gone(os.waitpid, child, 0)


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
        signal.signal(-code, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (-code,))
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def supervise(command):
    """Run `command` in a shell in a process group of its own; a SIGTERM (codeloop stopping the
    run) kills that group at once. When the shell has exited, end everything it left."""
    become_subreaper()
    # blocked until the handler knows the shell: a stop never finds the shell unknown
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM,))
    try:
        shell = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], _environment(),
                               setpgroup=0, setsigmask=(),
                               setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as exc:
        sys.stderr.write(f"codeloop: cannot run /bin/sh: {exc}\n")
        os._exit(127)
    signal.signal(signal.SIGTERM, lambda *_: _unless_gone(os.killpg, shell, signal.SIGKILL))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM,))
    wait_exited(shell)
    # all is ended from here on anyway; and a stop after the shell is reaped could kill a
    # stranger's process group that reuses its id
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM,))
    _exit_as(end_all(shell))


if __name__ == "__main__":
    supervise(sys.argv[1])
