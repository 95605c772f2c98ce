"""Shared fixtures: run the built zipapp as a black box, with a private graveyard.

Every suite under tests/ can reuse them: the fixtures `pyz`, `kubexit_python`,
`graveyard` (a Graveyard: a path with tombstone writers), `start_kubexit` (a Popen
with line streams), `run_kubexit` and `watch_env`; and, by `from conftest import ...`,
`wait_until`, `write_tombstone_atomic`, `write_tombstone_in_place`, `tombstone_text`,
`signal_child_argv`, `assert_still_running` and `assert_failed_start_record`.

The interpreter that runs the zipapp is the test's own unless KUBEXIT_TEST_PYTHON
names another one (for example a CPython 3.8), so the whole suite can be replayed on
the floor version; KUBEXIT_TEST_PYZ points the suite at another build.
"""

import fcntl
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYZ = Path(os.environ.get("KUBEXIT_TEST_PYZ", ROOT / "dist" / "kubexit.pyz"))
SIGNAL_CHILD = Path(__file__).resolve().parent / "signal_child.py"
KUBEXIT_PYTHON = os.environ.get("KUBEXIT_TEST_PYTHON") or sys.executable
PYTHON38 = Path.home() / ".pyenv" / "versions" / "3.8.18" / "bin" / "python3"

# A Go-style RFC 3339 UTC time with a fraction, as kubexit writes it.
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z")

POLL_ENV = {"KUBEXIT_WATCH": "poll", "KUBEXIT_POLL_INTERVAL": "50ms"}

_temp_names = itertools.count()


def wait_until(predicate, timeout=5.0, interval=0.002, message=None):
    """Poll a condition up to a deadline instead of sleeping and hoping."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message or "condition not met within %.1fs" % timeout)
        time.sleep(interval)


def rfc3339_now():
    """The current time the way Go's time.RFC3339Nano prints it in UTC."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tombstone_text(born=True, died=False, exit_code=None):
    """A tombstone exactly as the Go kubexit writes one."""
    lines = []
    if born:
        lines.append('Born: "%s"' % rfc3339_now())
    if died:
        lines.append('Died: "%s"' % rfc3339_now())
    if exit_code is not None:
        lines.append("ExitCode: %d" % exit_code)
    return "".join(line + "\n" for line in lines)


def write_tombstone_atomic(path, content):
    """Write like kubexit does: a temporary dot-file, then a rename over the tombstone."""
    path = Path(path)
    temp = path.parent / (".%s.test-%d-%d" % (path.name, os.getpid(), next(_temp_names)))
    data = content.encode() if isinstance(content, str) else content
    with open(temp, "wb") as f:
        f.write(data)
    os.rename(temp, path)


def write_tombstone_in_place(path, content, between=None):
    """Write like the Go kubexit does: truncate the tombstone, then write into it.

    `between` runs after the truncate and before the write, so a test can look at
    the watcher while the file is caught empty.
    """
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if between is not None:
            between()
        os.write(fd, data)
    finally:
        os.close(fd)


def parse_tombstone(text):
    """Read a tombstone of kubexit's own format: `Key: value` lines, values JSON scalars."""
    record = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        record[key.strip()] = json.loads(value.strip())
    return record


class Graveyard:
    """A temporary graveyard directory; usable wherever a path is."""

    def __init__(self, path):
        self.path = Path(path)

    def __fspath__(self):
        return str(self.path)

    def __str__(self):
        return str(self.path)

    def __truediv__(self, name):
        return self.path / name

    def write_atomic(self, name, content):
        write_tombstone_atomic(self.path / name, content)

    def write_in_place(self, name, content, between=None):
        write_tombstone_in_place(self.path / name, content, between)

    def bear(self, name):
        """Record `name` as born and alive, atomically."""
        self.write_atomic(name, tombstone_text())

    def bury(self, name, exit_code=0):
        """Record `name` as dead, atomically."""
        self.write_atomic(name, tombstone_text(died=True, exit_code=exit_code))

    def read(self, name):
        return (self.path / name).read_text()

    def record(self, name):
        return parse_tombstone(self.read(name))

    def is_dead(self, name):
        try:
            return "Died" in self.record(name)
        except (OSError, ValueError):
            return False

    def names(self):
        return sorted(os.listdir(self.path))


# How long wait() gives a dead kubexit's pipes to reach end of file: a process it left
# behind may hold them, and some tests leave one on purpose.
PIPE_DRAIN = 2.0


class LineStream:
    """Collects a pipe's lines in a thread so a test can wait for one with a deadline."""

    def __init__(self, pipe):
        self._pipe = pipe
        self._lines = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        try:
            for raw in iter(self._pipe.readline, b""):
                with self._changed:
                    self._lines.append(raw.decode("utf-8", "replace"))
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass  # closed under us by a teardown that gave up waiting
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def lines(self):
        with self._changed:
            return [line.rstrip("\n") for line in self._lines]

    def wait_for(self, wanted, timeout=5.0):
        """Return the first line (stripped) that equals `wanted` or satisfies it if callable."""
        matches = wanted if callable(wanted) else (lambda line: line == wanted)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for raw in self._lines:
                    if matches(raw.rstrip("\n")):
                        return raw.rstrip("\n")
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise AssertionError(
                        "no line matching %r within %.1fs; got %r"
                        % (wanted, timeout, [line.rstrip("\n") for line in self._lines])
                    )
                self._changed.wait(remaining)

    def wait_for_count(self, wanted, count, timeout=5.0):
        """Wait until `wanted` has been seen `count` times."""
        wait_until(lambda: self.lines.count(wanted) >= count, timeout,
                   message="fewer than %d lines %r: %r" % (count, wanted, self.lines))

    def join(self, timeout):
        """Wait for the pipe's end of file (every writer gone)."""
        self._thread.join(timeout)

    def text(self, timeout=5.0):
        """Everything the pipe carried, once its writer has closed it."""
        self.join(timeout)
        assert not self._thread.is_alive(), "pipe still open after %.1fs" % timeout
        with self._changed:
            return "".join(self._lines)


def assert_failed_start_record(graveyard, name, status=2, restarts=0, restart_policy="Never"):
    """A run that ended before CMD could start left exactly its Died record, so that no
    sibling waits for it forever; name None: nothing may be written (no valid name)."""
    if name is None:
        assert os.listdir(graveyard) == [], "a tombstone was written"
        return
    assert os.listdir(graveyard) == [name], os.listdir(graveyard)
    record = parse_tombstone((Path(graveyard) / name).read_text())
    assert list(record) == ["Died", "ExitCode", "Restarts", "RestartPolicy"], record
    assert RFC3339_UTC.fullmatch(record["Died"]), record
    assert (record["ExitCode"], record["Restarts"], record["RestartPolicy"]) == (
        status, restarts, restart_policy), record


def assert_still_running(proc, window=0.2):
    """Check that kubexit neither stopped CMD nor exited after what a test just did.

    CMD must be `signal_child.py wait`. A SIGUSR1 round trip through kubexit proves its
    loop is alive (not blocked on a FIFO, not crashed) and has been around since the
    change; the window then covers a few poll intervals in poll mode.
    """
    seen = proc.out.lines.count("signal 10")
    for count in (seen + 1, seen + 2):
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while proc.out.lines.count("signal 10") < count:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    "SIGUSR1 did not reach CMD within 5s; kubexit %s; CMD said %r; kubexit "
                    "said %r" % ("is running" if proc.poll() is None else
                                 "exited with %s" % proc.returncode,
                                 proc.out.lines, proc.err.lines))
            time.sleep(0.002)
    try:
        status = proc.wait(window)
    except subprocess.TimeoutExpired:
        status = None
    assert status is None, "kubexit exited with %s: %s" % (status, "\n".join(proc.err.lines))
    assert "signal 15" not in proc.out.lines, "CMD was sent SIGTERM"


def pod_without_api_access():
    """What the kubelet sets in every container, RBAC or not: the API's address (here a
    loopback port nobody listens on) and no mounted token."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port),
            "KUBEXIT_SERVICE_ACCOUNT_DIR": "/nonexistent/serviceaccount"}


POD_ENVIRONMENT = pod_without_api_access()


def clean_environment(extra=None):
    """The test's environment without any KUBEXIT_*/KUBERNETES_* variable of its own, as a
    container of a pod without API access sees it, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KUBEXIT_", "KUBERNETES_"))
    }
    env.update(POD_ENVIRONMENT)
    env.update(extra or {})
    return {key: value for key, value in env.items() if value is not None}


def kubexit_argv(args, python=None):
    return [python or KUBEXIT_PYTHON, str(PYZ)] + [os.fspath(arg) for arg in args]


def signal_child_argv(*args):
    """CMD that runs tests/signal_child.py with the test's interpreter."""
    return [sys.executable, str(SIGNAL_CHILD)] + [str(arg) for arg in args]


def process_state(pid):
    """Its state letter from /proc ('T' stopped, 'Z' a zombie); None once it is reaped."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def descendants(pid):
    """Every process below `pid` (CMD runs in a process group of its own)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def stop_process_tree(proc):
    """Teardown for a test that failed midway: leave nothing running."""
    if proc.poll() is not None:
        return
    for pid in [proc.pid] + descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)


def _build_pyz_once():
    """`make test` builds the zipapp first; a bare pytest run builds it if missing."""
    lock_path = os.path.join(tempfile.gettempdir(), "kubexit-test-build.lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not PYZ.exists():
            subprocess.run(
                [sys.executable, "build_zipapp.py", "-o", str(PYZ)],
                cwd=str(ROOT), check=True, timeout=120,
            )


@pytest.fixture(scope="session")
def pyz():
    """Path of the built dist/kubexit.pyz."""
    if not PYZ.exists():
        _build_pyz_once()
    return PYZ


@pytest.fixture(scope="session")
def kubexit_python():
    """The interpreter that runs the zipapp (KUBEXIT_TEST_PYTHON or the test's own)."""
    return KUBEXIT_PYTHON


@pytest.fixture
def graveyard(tmp_path):
    """An empty graveyard of the test's own."""
    path = tmp_path / "graveyard"
    path.mkdir()
    return Graveyard(path)


class Supervised(subprocess.Popen):
    """A kubexit under test: once wait() has seen it exit, its LineStreams have every line
    it wrote (up to end of file), so that a test reading proc.err.lines next sees them all."""

    def wait(self, timeout=None):
        status = super().wait(timeout)
        for stream in (getattr(self, "out", None), getattr(self, "err", None)):
            if stream is not None:
                stream.join(PIPE_DRAIN)
        return status


@pytest.fixture
def start_kubexit(pyz):
    """start(env, args, **popen_kwargs) -> Popen of `python kubexit.pyz ARGS`.

    `env` is added to the test's environment with every KUBEXIT_* variable removed.
    stdin, stdout and stderr are pipes unless overridden; with stream=True (default)
    proc.out and proc.err are LineStreams of stdout and stderr. Each kubexit runs in
    its own session so that teardown can kill whatever a failed test left behind.
    """
    started = []

    def start(env, args, stream=True, python=None, argv=None, **popen_kwargs):
        popen_kwargs.setdefault("stdin", subprocess.PIPE)
        popen_kwargs.setdefault("stdout", subprocess.PIPE)
        popen_kwargs.setdefault("stderr", subprocess.PIPE)
        popen_kwargs.setdefault("start_new_session", True)
        proc = Supervised(
            argv or kubexit_argv(args, python), env=clean_environment(env), **popen_kwargs
        )
        started.append(proc)
        if stream:
            proc.out = LineStream(proc.stdout) if proc.stdout else None
            proc.err = LineStream(proc.stderr) if proc.stderr else None
        return proc

    yield start
    for proc in started:
        stop_process_tree(proc)
        for stream in (getattr(proc, "out", None), getattr(proc, "err", None)):
            if stream is not None:
                stream.join(5)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


@pytest.fixture
def run_kubexit(pyz):
    """run(env, args, input=None, timeout=20, **kwargs) -> CompletedProcess (text mode)."""

    def run(env, args, input=None, timeout=20, python=None, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL if input is None else None)
        return subprocess.run(
            kubexit_argv(args, python),
            env=clean_environment(env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs
        )

    return run


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A throw-away CA and a server certificate for 127.0.0.1 (tests/kube/certs.py)."""
    from kube.certs import make_certs

    return make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(params=["inotify", "poll"])
def watch_env(request):
    """Environment that selects each watch mode in turn (poll at 50 ms)."""
    return dict(POLL_ENV) if request.param == "poll" else {}
