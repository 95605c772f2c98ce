"""CMD and its descendants: start clean, signal, stop with a deadline, reap everything.

fork + exec rather than posix_spawn: glibc's posix_spawn leaves its two internal
signals ignored in the child, and only code running in the child can reset every
disposition and the mask (even those kubexit inherited as ignored or blocked), make a
process group and hand it the terminal. An exec failure comes back as errno over a
close-on-exec pipe. A fork costs more the bigger kubexit is (page tables, copy-on-write
faults: ~1 ms at start-up, ~3 ms once the API client is loaded), so when CMD waits for
its deps the child is forked before the wait and held just short of its exec (hold()).

CMD leads its own process group; kubexit is PID 1 or a child subreaper, so whatever CMD
leaves behind is reparented to kubexit and "no children left" means "the tree is gone".
"""

import _signal
import errno
import os
import time
import warnings

from kubexit.log import write_without_sigpipe
from kubexit.loop import catchable_signals

_SIGNAL_NAMES = {}
# Forwarded to CMD's whole process group; every other signal goes to CMD alone.
TERMINATING = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT)
PR_SET_CHILD_SUBREAPER = 36


def signal_names():
    """number -> name of each signal; built on first use, not on every start."""
    if not _SIGNAL_NAMES:
        _SIGNAL_NAMES.update(
            (getattr(_signal, name), name) for name in dir(_signal)
            if name.startswith("SIG") and not name.startswith("SIG_")
            and name not in ("SIGIOT", "SIGPOLL", "SIGCLD", "SIGRTMIN", "SIGRTMAX"))
    return _SIGNAL_NAMES


def signal_name(signum):
    names = signal_names()
    if signum in names:
        return names[signum]
    if _signal.SIGRTMIN <= signum <= _signal.SIGRTMAX:
        return "SIGRTMIN+%d" % (signum - _signal.SIGRTMIN)
    return "signal %d" % signum


def exit_status(wait_status):
    """The shell's convention: N for exit(N), 128+S for death by signal S."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def become_subreaper():
    """Adopt CMD's orphans (PID 1 already does); False where the kernel or libc refuses."""
    if os.getpid() == 1:
        return True
    from kubexit.libc import call

    try:
        return call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (ImportError, OSError, AttributeError):
        return False


def owns_foreground_terminal():
    """True when stdin is a terminal whose foreground group is kubexit's, as tini checks."""
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def children_of(parent):
    """Direct children of `parent`, from /proc (only used once CMD has exited)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def find_executable(name):
    """execvp's PATH search, done before fork: in the child every Python step costs
    copy-on-write page faults. The first executable match wins; otherwise the first
    match that exists, so that exec reports "permission denied" (126), not "not found"."""
    if "/" in name:
        return name
    candidates = [os.path.join(directory or ".", name)
                  for directory in os.environ.get("PATH", os.defpath).split(os.pathsep)]
    existing = [c for c in candidates if os.path.isfile(c)]
    for candidate in existing:
        if os.access(candidate, os.X_OK):
            return candidate
    return existing[0] if existing else candidates[-1]


class SpawnError(Exception):
    """CMD could not be started; `status` is 127 (not found) or 126 (not executable)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Child:
    """The running CMD, from spawn to the reaping of the last process it left behind."""

    def __init__(self, argv, log, signal_group):
        self.argv = argv
        self.log = log
        self.signal_group = signal_group
        self.pid = None
        self.status = None
        self.deadline = None      # monotonic time of SIGKILL for the whole tree
        self.alone = False        # no child process of kubexit's is left
        self._kill_timer = None
        self._killing = False
        self._signalled = {}      # leftover pid -> the last signal it was sent
        self._held = None         # (pid, exec report fd, go fd) of a child held before exec
        self._held_gone = False   # that child died before it was let go

    def hold(self, take_terminal):
        """Fork CMD's process now, while kubexit is small and has no threads; it waits,
        signals blocked, for spawn() to let it exec, or for cancel()."""
        go_read, go_write = os.pipe()
        pid, errors = self._fork(take_terminal, (go_read, go_write))
        os.close(go_read)
        self._held, self._held_gone = (pid, errors, go_write), False

    def cancel(self):
        """CMD is not to start: the held child ends without exec (read EOF), and is reaped."""
        held, self._held = self._held, None
        if held is not None:
            pid, errors, go = held
            os.close(go)
            os.close(errors)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # reap() was first

    def spawn(self, take_terminal):
        """Start CMD: let the held child exec, or fork one now; back once it has exec'd.

        kubexit only waits here: the child, forked onto kubexit's core, runs when kubexit
        blocks, and any work done before that delays the exec and pays copy-on-write faults."""
        held, self._held = self._held, None
        if held is not None:
            pid, errors, go = held
            try:
                if not self._held_gone:
                    write_without_sigpipe(go, b"!")
            except BrokenPipeError:
                # Killed since the last reap: it is a zombie now, reaped here.
                os.waitpid(pid, 0)
                self._held_gone = True
            finally:
                os.close(go)
            if self._held_gone:
                os.close(errors)
                held = None
        if held is None:
            pid, errors = self._fork(take_terminal)
        with open(errors, "rb") as pipe:
            failure = pipe.read()
        if failure:
            os.waitpid(pid, 0)
            code = int(failure)
            status = 127 if code in (errno.ENOENT, errno.ENOTDIR) else 126
            raise SpawnError(status, "cannot run %s: %s" % (self.argv[0], os.strerror(code)))
        self.pid = pid
        return pid

    def _fork(self, take_terminal, go=None):
        """(pid, the fd on which a failed exec reports its errno) of a child that execs
        CMD, after a byte on go[0] when `go` is given."""
        path = find_executable(self.argv[0])
        errors, report = os.pipe()
        signals = catchable_signals()
        # Blocked across fork, so that no kubexit handler runs in the child.
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, signals)
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about fork beside threads; kubexit's (API, lock waits)
                # hold no lock the child needs: it only resets signals and execs.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:
                self._exec(path, report, signals, take_terminal, go)
            if self.signal_group:
                try:
                    os.setpgid(pid, pid)  # also in the parent, so signals never miss the group
                except OSError:
                    pass
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
            os.close(report)
        return pid, errors

    def _exec(self, path, report, signals, take_terminal, go):
        """In the child: own group, clean signal state, (the go-ahead,) terminal, then
        exec; never returns."""
        try:
            if self.signal_group:
                os.setpgid(0, 0)
            for signum in signals:
                _signal.signal(signum, _signal.SIG_DFL)
            if go is not None:
                os.close(go[1])
                if not os.read(go[0], 1):
                    os._exit(0)  # cancelled: CMD is not to start
            if self.signal_group and take_terminal:
                os.tcsetpgrp(0, os.getpid())  # allowed: SIGTTOU is blocked here
            _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
            os.execve(path, self.argv, os.environ)
        except BaseException as err:  # noqa: BLE001 - the child must reach os._exit
            os.write(report, str(getattr(err, "errno", None) or errno.EINVAL).encode())
        finally:
            os._exit(127)

    @property
    def running(self):
        return self.pid is not None and self.status is None

    def forward(self, signum):
        """Terminating signals reach the whole group (as a terminal's would); others CMD."""
        if signum in TERMINATING:
            self._signal_tree(signum)
        elif self.running:
            self._kill(self.pid, signum)

    def stop(self, loop, signum, grace_period):
        """The stop signal now, SIGKILL to whatever is left when the grace period ends."""
        if self.deadline is not None:
            return
        self._arm(loop, grace_period)
        self._signal_tree(signum)

    def stop_leftovers(self, loop, grace_period):
        """After CMD's exit: SIGTERM its leftovers, within what remains of the deadline."""
        leftovers = children_of(os.getpid())
        self.log.info("CMD left processes behind; stopping them", count=len(leftovers))
        self._arm(loop, grace_period)
        self._signal_tree(_signal.SIGKILL if self._killing else _signal.SIGTERM)

    def _arm(self, loop, grace_period):
        if self.deadline is None:
            self.deadline = time.monotonic() + grace_period
            self._kill_timer = loop.call_later(grace_period, self._grace_over)

    def _grace_over(self):
        self.log.warn("grace period over: sending SIGKILL", pid=self.pid)
        self._killing = True
        self._signal_tree(_signal.SIGKILL)

    def _signal_tree(self, signum):
        if self.signal_group and self.pid is not None:
            try:
                os.killpg(self.pid, signum)
            except OSError:
                pass
        elif self.running:
            self._kill(self.pid, signum)
        if not self.running:
            for pid in children_of(os.getpid()):
                if self._signalled.get(pid) != signum:
                    self._signalled[pid] = signum
                    self.log.debug("signalling leftover", pid=pid, signal=signal_name(signum))
                    self._kill(pid, signum)

    @staticmethod
    def _kill(pid, signum):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def kill_all(self):
        """SIGKILL CMD's group and every child of kubexit's, and reap them all (blocking:
        after a bug, the event loop cannot be trusted)."""
        self._signal_tree(_signal.SIGKILL)
        for pid in children_of(os.getpid()):
            self._kill(pid, _signal.SIGKILL)
        while True:
            try:
                pid, wait_status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == self.pid:
                self.status = exit_status(wait_status)

    def reap(self):
        """Collect every exited child: CMD, and orphans adopted as PID 1 or subreaper."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.alone = True
                break
            if pid == 0:
                self.alone = False  # an exec probe's reaped shell is no reason to think so
                break
            if pid == self.pid:
                self.status = exit_status(wait_status)
            elif self._held is not None and pid == self._held[0]:
                self._held_gone = True  # killed while held: spawn() forks afresh
            else:
                self.log.debug("reaped orphan", pid=pid, status=exit_status(wait_status))
        if self.alone and self._kill_timer is not None:
            self._kill_timer.cancel()
        elif self.deadline is not None and not self.running:
            # Descendants of the dead reach kubexit as they are orphaned: signal them too.
            self._signal_tree(_signal.SIGKILL if self._killing else _signal.SIGTERM)
