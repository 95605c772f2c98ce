"""Probes: is a port open, an HTTP endpoint healthy, a file written, a command content?

Attempts block (a connect, a request, a child process), so each probe runs in a daemon
thread that reports through a pipe the event loop waits on: signals, deaths and the
birth timeout keep working while a probe hangs. socket, http.client and select are
imported by the attempts themselves, so a kubexit without probes never loads them (nor ssl,
which http.client brings in).

exec:COMMAND runs `/bin/sh -c COMMAND` below a relay shell that writes COMMAND's exit
status to a pipe. kubexit reaps every child with waitpid(-1) (it is PID 1 or a
subreaper), so a status left for waitpid could be collected by the main thread before
the probe thread asked for it; the status on the pipe can be taken by no one else. The
relay shell is reaped by Child.reap like any orphan, and a relay gone without writing a
status (killed at the timeout) is a failed attempt, never a passed one.
"""

import os
import threading
import time

from kubexit.config import PROBE_SHELL
from kubexit.loop import catchable_signals, start_thread

# As Kubernetes' timeoutSeconds default: a probe that has not answered in 1s has failed.
ATTEMPT_TIMEOUT = 1.0
STATUS_FD = 3
# $1 is COMMAND. It runs without fd 3, so that nothing it leaves running holds the pipe.
RELAY = '%s -c "$1" 3>&-; echo "$?" >&3' % PROBE_SHELL


def attempt_tcp(probe, timeout, prober):
    import socket

    try:
        with socket.create_connection((probe.host, probe.port), timeout):
            return True, "connected"
    except socket.timeout:
        return False, "no connection after %gs" % timeout
    except OSError as err:
        return False, err.strerror or str(err)


def http_status(method, target, timeout):
    """(HTTP status or None, what happened) of one request to target's host, port and path;
    shared with the quit URLs."""
    import http.client
    import socket

    if target.tls:
        connection = http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                                 context=unverified_tls())
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        connection.request(method, target.path, body=b"" if method == "POST" else None,
                           headers={"User-Agent": "kubexit"})
        status = connection.getresponse().status
    except socket.timeout:
        return None, "no answer after %gs" % timeout
    except (OSError, http.client.HTTPException) as err:
        return None, getattr(err, "strerror", None) or str(err) or type(err).__name__
    finally:
        connection.close()
    return status, "HTTP %d" % status


def unverified_tls():
    """As the kubelet's HTTPS probes: encrypted, the certificate not verified (a sidecar's
    health port has a self-signed or mesh certificate, never one for 127.0.0.1)."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def attempt_http(probe, timeout, prober):
    """GET; 2xx and 3xx pass (redirects are not followed), as Kubernetes' httpGet."""
    status, what = http_status("GET", probe, timeout)
    return status is not None and 200 <= status < 400, what


def attempt_file(probe, timeout, prober):
    import stat

    try:
        info = os.stat(probe.path)
    except OSError as err:
        return False, err.strerror
    if not stat.S_ISREG(info.st_mode):
        return False, "not a regular file"
    return info.st_size > 0, "%d bytes" % info.st_size


def attempt_exec(probe, timeout, prober):
    """Exit status 0 passes; output is discarded; the whole session dies at the timeout."""
    import select

    read_fd, write_fd = os.pipe()
    if write_fd == STATUS_FD:  # dup2 onto itself would keep close-on-exec
        write_fd = os.dup(STATUS_FD)
        os.close(STATUS_FD)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(
            PROBE_SHELL, [PROBE_SHELL, "-c", RELAY, "kubexit-probe", probe.command], os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                          (os.POSIX_SPAWN_DUP2, devnull, 2),
                          (os.POSIX_SPAWN_DUP2, write_fd, STATUS_FD)],
            setsid=True, setsigmask=(), setsigdef=catchable_signals())
    except OSError as err:
        os.close(read_fd)
        return False, "cannot run %s: %s" % (PROBE_SHELL, err.strerror)
    finally:
        os.close(write_fd)
        os.close(devnull)
    prober.started(pid, read_fd)
    status = b""
    deadline = time.monotonic() + timeout
    try:
        while not status.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
                prober.kill(pid)
                return False, "no exit after %gs" % timeout
            chunk = os.read(read_fd, 16)
            if not chunk:
                return False, "killed before it exited"
            status += chunk
    finally:
        prober.ended(pid)
        os.close(read_fd)
    code = int(status)
    return code == 0, "exit status %d" % code


ATTEMPTS = {"tcp": attempt_tcp, "http": attempt_http, "file": attempt_file,
            "exec": attempt_exec}


class Prober:
    """Runs each probe every `period` in a thread of its own until it passes once; the
    event loop hears of each pass through a pipe and calls on_pass(probe)."""

    def __init__(self, probes, period, log, loop, on_pass):
        self.pending = list(probes)
        self.last_result = {}
        self._period = period
        self._log = log
        self._loop = loop
        self._on_pass = on_pass
        self._lock = threading.Lock()
        self._passed = []       # passed in a thread, not yet handed to on_pass
        self._sessions = {}     # relay shell of an exec attempt -> its status pipe
        self._closed = False
        self._stopping = threading.Event()
        self._read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        loop.add_reader(self._read_fd, self._drain)
        for probe in probes:
            start_thread(threading.Thread(target=self._probe, args=(probe,),
                                          name="kubexit-probe", daemon=True))

    @property
    def all_passed(self):
        return not self.pending

    def failing(self):
        """The probes still failing, each with what its last attempt said."""
        return ", ".join("%s (%s)" % (probe.text, self.last_result.get(probe, "not tried yet"))
                         for probe in self.pending)

    def close(self):
        """Stop probing: no new attempt starts, and the command of a running one is killed."""
        self._stopping.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for pid, status_fd in self._sessions.items():
                self._kill_session(pid, status_fd)
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            os.close(self._write_fd)

    def started(self, pid, status_fd):
        with self._lock:
            self._sessions[pid] = status_fd
            if self._closed:
                self._kill_session(pid, status_fd)

    def ended(self, pid):
        with self._lock:
            self._sessions.pop(pid, None)

    def kill(self, pid):
        with self._lock:
            if pid in self._sessions:
                self._kill_session(pid, self._sessions[pid])

    @staticmethod
    def _kill_session(pid, status_fd):
        """SIGKILL the session the relay leads, unless its pipe already carries the status
        or end of file: a relay that has neither written nor exited cannot have been
        reaped, so its pid still names it."""
        import select

        if select.select([status_fd], [], [], 0)[0]:
            return
        try:
            os.killpg(pid, 9)
        except OSError:
            pass

    def _drain(self):
        try:
            os.read(self._read_fd, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            passed, self._passed = self._passed, []
        for probe in passed:
            self.pending.remove(probe)
            self._on_pass(probe)

    def _probe(self, probe):
        attempt = ATTEMPTS[probe.kind]
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                passed, result = attempt(probe, ATTEMPT_TIMEOUT, self)
            except Exception as err:  # a bug must show in the log, not stall the probe
                passed, result = False, "%s: %s" % (type(err).__name__, err)
            if passed:
                self.last_result[probe] = result
                self._report(probe)
                return
            if self._stopping.is_set():
                return
            if result != self.last_result.get(probe):
                self._log.debug("probe failed", probe=probe.text, result=result)
            self.last_result[probe] = result
            self._stopping.wait(max(0.0, self._period - (time.monotonic() - started)))

    def _report(self, probe):
        with self._lock:
            if self._closed:
                return
            self._passed.append(probe)
            try:
                os.write(self._write_fd, b"!")
            except BlockingIOError:
                pass
