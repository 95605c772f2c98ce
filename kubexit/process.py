"""CMD as a child process: start it clean, signal it, stop it, reap it and every orphan.

fork + exec rather than posix_spawn: glibc's posix_spawn leaves its two internal
signals ignored in the child, and only code running in the child can reset every
disposition and the mask (even those kubexit inherited as ignored or blocked). An exec
failure comes back to the parent as errno over a close-on-exec pipe.
"""

import _signal
import errno
import os

from kubexit.loop import catchable_signals

SIGNAL_NAMES = {
    getattr(_signal, name): name for name in dir(_signal)
    if name.startswith("SIG") and not name.startswith("SIG_")
    and name not in ("SIGIOT", "SIGPOLL", "SIGCLD", "SIGRTMIN", "SIGRTMAX")
}


def signal_name(signum):
    if signum in SIGNAL_NAMES:
        return SIGNAL_NAMES[signum]
    if _signal.SIGRTMIN <= signum <= _signal.SIGRTMAX:
        return "SIGRTMIN+%d" % (signum - _signal.SIGRTMIN)
    return "signal %d" % signum


def exit_status(wait_status):
    """The shell's convention: N for exit(N), 128+S for death by signal S."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


class SpawnError(Exception):
    """CMD could not be started; `status` is 127 (not found) or 126 (not executable)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Child:
    """The running CMD, from spawn to its exit status."""

    def __init__(self, argv, log):
        self.argv = argv
        self.log = log
        self.pid = None
        self.status = None
        self._kill_timer = None

    def spawn(self):
        errors, report = os.pipe()
        signals = catchable_signals()
        # Blocked across fork, so that no kubexit handler runs in the child.
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, signals)
        try:
            pid = os.fork()
            if pid == 0:
                self._exec(report, signals)
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
            os.close(report)
        with open(errors, "rb") as pipe:
            failure = pipe.read()
        if failure:
            os.waitpid(pid, 0)
            code = int(failure)
            status = 127 if code in (errno.ENOENT, errno.ENOTDIR) else 126
            raise SpawnError(status, "cannot run %s: %s" % (self.argv[0], os.strerror(code)))
        self.pid = pid
        return pid

    def _exec(self, report, signals):
        """In the child: clean signal state, then exec; never returns."""
        try:
            for signum in signals:
                _signal.signal(signum, _signal.SIG_DFL)
            _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
            os.execvpe(self.argv[0], self.argv, os.environ)
        except BaseException as err:  # noqa: BLE001 - the child must reach os._exit
            os.write(report, str(getattr(err, "errno", None) or errno.EINVAL).encode())
        finally:
            os._exit(127)

    @property
    def running(self):
        return self.pid is not None and self.status is None

    def send(self, signum):
        if self.running:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, loop, signum, grace_period):
        """Send the stop signal now and SIGKILL when the grace period ends."""
        if not self.running or self._kill_timer is not None:
            return
        self.log.info("stopping CMD", signal=signal_name(signum), grace_period="%gs" % grace_period)
        self.send(signum)
        self._kill_timer = loop.call_later(grace_period, self._kill)

    def _kill(self):
        if self.running:
            self.log.warn("grace period over: sending SIGKILL to CMD", pid=self.pid)
            self.send(_signal.SIGKILL)

    def reap(self):
        """Collect every exited child (orphans too when kubexit is PID 1)."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.status = exit_status(wait_status)
                if self._kill_timer is not None:
                    self._kill_timer.cancel()
            else:
                self.log.debug("reaped orphan", pid=pid, status=exit_status(wait_status))
