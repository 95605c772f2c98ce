"""Readiness probes, wait-for probes and their syntax (issue 5), through dist/kubexit.pyz.

Each probe kind is seen failing (the debug line that says why), then passing once the
test fixes what it probes, and never passing before that: the Ready time in the
tombstone, or CMD's start, must come after the fix. Servers listen on 127.0.0.1 only.
"""

import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import (
    KUBEXIT_PYTHON,
    PYZ,
    assert_failed_start_record,
    assert_still_running,
    clean_environment,
    signal_child_argv,
    wait_until,
)

PERIOD = "20ms"
HANG_LIMIT = 15.0  # a hanging handler gives up by itself, so no test can leave it behind


class LocalHttp:
    """An HTTP server on 127.0.0.1 whose answer per path the test sets: a status code,
    or "hang" (no answer until released). Every request is recorded with what `observe`
    returned at the moment it arrived."""

    def __init__(self, observe=None, certs=None):
        self.answers = {}
        self.scheme = "https" if certs else "http"
        self.requests = []
        self.observe = observe or (lambda: None)
        self.release = threading.Event()
        self.changed = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer()

            def do_POST(self):
                self._answer()

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with server.changed:
                    server.requests.append((self.command, self.path, server.observe()))
                    server.changed.notify_all()
                answer = server.answers.get(self.path, 404)
                if answer == "hang":
                    server.release.wait(HANG_LIMIT)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if certs is not None:  # self-signed as far as kubexit knows: it has no CA to check
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certs.server_crt, certs.server_key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, path):
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.port, path)

    def requests_to(self, path):
        with self.changed:
            return [r for r in self.requests if r[1] == path]

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = LocalHttp()
    yield server
    server.stop()


@pytest.fixture
def unused_port():
    """A port on 127.0.0.1 that refuses connections: bound, never listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def full_listener():
    """A listening socket whose backlog is full: a new connect gets no answer at all."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    held = []
    for _ in range(2):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(sock.getsockname())
        held.append(client)
    return sock, held


def readiness_env(graveyard, probe, **extra):
    env = {"KUBEXIT_NAME": "proxy", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_READINESS_PROBE": probe, "KUBEXIT_READINESS_PERIOD": PERIOD,
           "KUBEXIT_LOG_LEVEL": "debug"}
    env.update(extra)
    return env


def tombstone_time(text):
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
        microsecond=int((fraction + "000000")[:6]))


def utc_now():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def processes_running(cmdline):
    """Pids of every process on the machine whose command line is exactly `cmdline`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if f.read().replace(b"\0", b" ").decode().strip() == cmdline:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def wait_for_failure(proc, result):
    """The debug line of a failed attempt whose result contains `result`."""
    return proc.err.wait_for(lambda line: "probe failed" in line and result in line, 10)


def assert_ready_after(proc, graveyard, fixed_at):
    """Ready appears, once, later than the moment the probed thing was fixed."""
    wait_until(lambda: "Ready" in graveyard.record("proxy"), 10,
               message="no Ready: %s" % "\n".join(proc.err.lines))
    record = graveyard.record("proxy")
    assert list(record) == ["Born", "Ready", "Restarts", "RestartPolicy"], record
    assert tombstone_time(record["Ready"]) >= fixed_at
    assert tombstone_time(record["Ready"]) >= tombstone_time(record["Born"])
    return record


def finish(proc, graveyard, ready):
    """End CMD; the final tombstone keeps the one Ready (after the Go kubexit's keys, as
    the contract's "further keys may follow"), and the status."""
    proc.stdin.close()
    assert proc.wait(10) == 0, "\n".join(proc.err.lines)
    record = graveyard.record("proxy")
    assert list(record) == ["Born", "Died", "ExitCode", "Ready", "Restarts", "RestartPolicy"], \
        record
    assert record["Ready"] == ready["Ready"] and record["ExitCode"] == 0
    assert [line for line in proc.err.lines if "CMD is ready" in line][1:] == []


def start_probed(start_kubexit, graveyard, probe, **extra):
    proc = start_kubexit(readiness_env(graveyard, probe, **extra), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    return proc


def test_tcp_readiness(start_kubexit, graveyard, unused_port):
    port = unused_port.getsockname()[1]
    proc = start_probed(start_kubexit, graveyard, "tcp://127.0.0.1:%d" % port)
    wait_for_failure(proc, "Connection refused")
    assert "Ready" not in graveyard.record("proxy")
    fixed_at = utc_now()
    unused_port.listen(8)
    finish(proc, graveyard, assert_ready_after(proc, graveyard, fixed_at))


def test_tcp_probe_timing_out(start_kubexit, graveyard):
    listener, held = full_listener()
    try:
        proc = start_probed(start_kubexit, graveyard, "tcp://127.0.0.1:%d" % (
            listener.getsockname()[1]))
        wait_for_failure(proc, "no connection after 1s")
        assert "Ready" not in graveyard.record("proxy")
        proc.stdin.close()
        assert proc.wait(10) == 0
        assert "Ready" not in graveyard.record("proxy")
    finally:
        for sock in held + [listener]:
            sock.close()


@pytest.fixture(params=["http", "https"])
def web_server(request, certs):
    """Each scheme in turn; the https one has a certificate kubexit cannot verify."""
    server = LocalHttp(certs=certs if request.param == "https" else None)
    yield server
    server.stop()


@pytest.mark.parametrize("passing", [200, 204, 302, 399])
def test_http_readiness(start_kubexit, graveyard, web_server, passing):
    http_server = web_server
    http_server.answers["/healthz"] = 503
    proc = start_probed(start_kubexit, graveyard, http_server.url("/healthz"))
    wait_for_failure(proc, "HTTP 503")
    http_server.answers["/healthz"] = 404
    wait_for_failure(proc, "HTTP 404")
    assert "Ready" not in graveyard.record("proxy")
    fixed_at = utc_now()
    http_server.answers["/healthz"] = passing
    ready = assert_ready_after(proc, graveyard, fixed_at)
    probes = len(http_server.requests_to("/healthz"))
    assert_still_running(proc)  # a window of many periods: no attempt after Ready
    assert len(http_server.requests_to("/healthz")) == probes
    assert all(method == "GET" for method, _, _ in http_server.requests)
    finish(proc, graveyard, ready)


def test_http_probe_timing_out(start_kubexit, graveyard, http_server):
    http_server.answers["/slow"] = "hang"
    proc = start_probed(start_kubexit, graveyard, http_server.url("/slow"))
    wait_for_failure(proc, "no answer after 1s")
    assert "Ready" not in graveyard.record("proxy")
    fixed_at = utc_now()
    http_server.answers["/slow"] = 200
    finish(proc, graveyard, assert_ready_after(proc, graveyard, fixed_at))


def test_file_readiness(start_kubexit, graveyard, tmp_path):
    flag = tmp_path / "ready-flag"
    proc = start_probed(start_kubexit, graveyard, "file:%s" % flag)
    wait_for_failure(proc, "No such file or directory")
    flag.mkdir()
    wait_for_failure(proc, "not a regular file")
    flag.rmdir()
    flag.write_text("")
    wait_for_failure(proc, "0 bytes")
    assert "Ready" not in graveyard.record("proxy")
    fixed_at = utc_now()
    flag.write_text("ok\n")
    finish(proc, graveyard, assert_ready_after(proc, graveyard, fixed_at))


def test_exec_readiness(start_kubexit, graveyard, tmp_path):
    flag = tmp_path / "ready-flag"
    probe = 'exec:test -e "%s" || exit 3' % flag
    proc = start_probed(start_kubexit, graveyard, probe)
    wait_for_failure(proc, "exit status 3")
    assert "Ready" not in graveyard.record("proxy")
    fixed_at = utc_now()
    flag.write_text("")
    finish(proc, graveyard, assert_ready_after(proc, graveyard, fixed_at))


def test_exec_failures_are_never_lost_to_the_reaper(start_kubexit, graveyard):
    """kubexit reaps every child with waitpid(-1): a probe status taken from waitpid could
    be collected by the reaper and read as 0. Many failing attempts, none may pass."""
    proc = start_probed(start_kubexit, graveyard, "exec:exit 1", KUBEXIT_READINESS_PERIOD="5ms")
    wait_for_failure(proc, "exit status 1")
    wait_until(lambda: sum("reaped orphan" in line for line in proc.err.lines) >= 40, 20)
    assert "Ready" not in graveyard.record("proxy")
    assert not any("CMD is ready" in line for line in proc.err.lines)
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert "Ready" not in graveyard.record("proxy")


def test_exec_probe_timing_out_is_killed(start_kubexit, graveyard):
    proc = start_probed(start_kubexit, graveyard, "exec:exec sleep 7.25")
    wait_for_failure(proc, "no exit after 1s")
    # Each timed-out command is killed: at most the current attempt's is running.
    assert len(processes_running("sleep 7.25")) <= 1
    assert "Ready" not in graveyard.record("proxy")
    proc.stdin.close()
    assert proc.wait(10) == 0
    wait_until(lambda: not processes_running("sleep 7.25"), 2,
               message="an exec probe outlived kubexit")
    assert "Ready" not in graveyard.record("proxy")


def test_no_probe_after_cmd_exits(start_kubexit, graveyard, http_server):
    """CMD ending first: no Ready is written after Died, and the exit is not held up."""
    http_server.answers["/healthz"] = "hang"
    proc = start_probed(start_kubexit, graveyard, http_server.url("/healthz"))
    wait_until(lambda: http_server.requests_to("/healthz"), 10)
    started = time.monotonic()
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert time.monotonic() - started < 0.9
    record = graveyard.record("proxy")
    assert list(record) == ["Born", "Died", "ExitCode", "Restarts", "RestartPolicy"], record


# --- wait-for probes -------------------------------------------------------------------

def wait_for_env(graveyard, probes, **extra):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_WAIT_FOR": probes, "KUBEXIT_READINESS_PERIOD": PERIOD,
           "KUBEXIT_LOG_LEVEL": "debug"}
    env.update(extra)
    return env


def test_wait_for_starts_cmd_when_every_probe_passes(start_kubexit, graveyard, http_server,
                                                     unused_port, tmp_path):
    marker = tmp_path / "cmd-ran"
    flag = tmp_path / "flag"
    http_server.answers["/ready"] = 500
    probes = "tcp://127.0.0.1:%d, %s,file:%s,exec:test -s %s" % (
        unused_port.getsockname()[1], http_server.url("/ready"), flag, flag)
    proc = start_kubexit(wait_for_env(graveyard, probes), ["touch", marker])
    wait_for_failure(proc, "Connection refused")
    wait_for_failure(proc, "HTTP 500")
    wait_for_failure(proc, "No such file or directory")
    unused_port.listen(8)
    http_server.answers["/ready"] = 200
    proc.err.wait_for(lambda line: "probe passed" in line and "http://" in line, 10)
    assert not marker.exists() and proc.poll() is None
    flag.write_text("x")
    assert proc.wait(10) == 0, "\n".join(proc.err.lines)
    assert marker.exists()
    record = graveyard.record("app")
    assert list(record) == ["Born", "Died", "ExitCode", "Restarts", "RestartPolicy"]
    assert record["ExitCode"] == 0


@pytest.mark.parametrize("kind", ["tcp", "http", "file", "exec"])
def test_wait_for_timeout(run_kubexit, graveyard, tmp_path, unused_port, http_server, kind):
    marker = tmp_path / "cmd-ran"
    message = tmp_path / "termination-log"
    http_server.answers["/ready"] = 503
    probe = {"tcp": "tcp://127.0.0.1:%d" % unused_port.getsockname()[1],
             "http": http_server.url("/ready"),
             "file": "file:%s" % (tmp_path / "missing"),
             "exec": "exec:false"}[kind]
    started = time.monotonic()
    result = run_kubexit(wait_for_env(graveyard, probe, KUBEXIT_BIRTH_TIMEOUT="1s",
                                      KUBEXIT_TERMINATION_LOG=str(message)),
                         ["touch", marker])
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert 1.0 <= elapsed < 4, elapsed
    assert not marker.exists()
    record = graveyard.record("app")
    assert list(record) == ["Died", "ExitCode", "Restarts", "RestartPolicy"]
    assert record["ExitCode"] == 1
    text = message.read_text()
    assert text.startswith("wait-for probes not passing after 1s: %s (" % probe), text
    assert "Traceback" not in result.stderr


def test_wait_for_slow_probe_times_out_within_the_birth_timeout(run_kubexit, graveyard,
                                                                 http_server, tmp_path):
    http_server.answers["/ready"] = "hang"
    started = time.monotonic()
    result = run_kubexit(wait_for_env(graveyard, http_server.url("/ready"),
                                      KUBEXIT_BIRTH_TIMEOUT="1500ms"), ["true"])
    assert result.returncode == 1, result.stderr
    assert 1.5 <= time.monotonic() - started < 4
    assert "no answer after 1s" in result.stderr


def test_sigterm_during_wait_for(start_kubexit, graveyard, unused_port, tmp_path):
    marker = tmp_path / "cmd-ran"
    probe = "tcp://127.0.0.1:%d" % unused_port.getsockname()[1]
    proc = start_kubexit(wait_for_env(graveyard, probe), ["touch", marker])
    wait_for_failure(proc, "Connection refused")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 128 + signal.SIGTERM
    assert not marker.exists()
    assert graveyard.record("app")["ExitCode"] == 128 + signal.SIGTERM


def test_cmd_leftovers_are_stopped_after_an_exec_wait_for(start_kubexit, graveyard):
    """An exec probe's relay shell reaped before CMD starts must not make kubexit believe,
    after CMD exits, that nothing was left behind."""
    proc = start_kubexit(wait_for_env(graveyard, "exec:true", KUBEXIT_BIRTH_DEPS="proxy",
                                      KUBEXIT_BIRTH_CONDITION="started"),
                         ["sh", "-c", "exec 1>&- 2>&-; sleep 3.75 & exit 0"])
    try:
        proc.err.wait_for(lambda line: "reaped orphan" in line, 10)
        graveyard.bear("proxy")  # CMD starts only once the relay shell has been reaped
        assert proc.wait(10) == 0
        assert "CMD left processes behind" in proc.err.text()
        assert not processes_running("sleep 3.75")
    finally:
        for pid in processes_running("sleep 3.75"):
            os.kill(pid, signal.SIGKILL)


# --- malformed probes and URLs ---------------------------------------------------------

BAD_PROBES = [
    "localhost:8080", "tcp://", "tcp://127.0.0.1", "tcp://:80", "tcp://127.0.0.1:0",
    "tcp://127.0.0.1:65536", "tcp://127.0.0.1:http", "tcp://127.0.0.1:80/path",
    "tcp://::1:80", "tcp://[::1:80", "tcp://[::1]x80", "tcp://bad host:80",
    "http://", "http://:80/", "http://127.0.0.1:99999/", "http://user@127.0.0.1:80/",
    "http://127.0.0.1:80/a b", "https://", "ftp://127.0.0.1/", "file:", "file://",
    "exec:", "exec:   ", "udp://127.0.0.1:53",
]


@pytest.mark.parametrize("value", BAD_PROBES)
@pytest.mark.parametrize("variable", ["KUBEXIT_READINESS_PROBE", "KUBEXIT_WAIT_FOR"])
def test_malformed_probe(run_kubexit, graveyard, tmp_path, variable, value):
    assert_config_error(run_kubexit, graveyard, tmp_path, variable, value)


@pytest.mark.parametrize("value", ["tcp://127.0.0.1:80", "ftp://127.0.0.1/quit",
                                   "http://127.0.0.1:0/quit", "127.0.0.1:15020/quitquitquit",
                                   "http://127.0.0.1:80/quit, file:/x"])
def test_malformed_quit_url(run_kubexit, graveyard, tmp_path, value):
    assert_config_error(run_kubexit, graveyard, tmp_path, "KUBEXIT_QUIT_URLS", value)


@pytest.mark.parametrize("value", ["0", "1", "-1s", "soon"])
def test_malformed_readiness_period(run_kubexit, graveyard, tmp_path, value):
    assert_config_error(run_kubexit, graveyard, tmp_path, "KUBEXIT_READINESS_PERIOD", value,
                        KUBEXIT_READINESS_PROBE="tcp://127.0.0.1:1")


def test_one_bad_item_in_a_list_is_an_error(run_kubexit, graveyard, tmp_path):
    assert_config_error(run_kubexit, graveyard, tmp_path, "KUBEXIT_WAIT_FOR",
                        "tcp://127.0.0.1:1,,file:/tmp/x, http://127.0.0.1:1/ok,tcp://x")


def assert_config_error(run_kubexit, graveyard, tmp_path, variable, value, **extra):
    marker = tmp_path / "cmd-ran"
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard), variable: value}
    env.update(extra)
    result = run_kubexit(env, ["touch", marker])
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kubexit: "), result.stderr
    assert variable in lines[0], lines[0]
    assert not marker.exists()
    assert_failed_start_record(graveyard, "app")


@pytest.mark.parametrize("value", [
    "tcp://localhost:5432", "tcp://[::1]:5432", "TCP://127.0.0.1:1", "http://127.0.0.1",
    "http://[::1]:8080/healthz?full=1", "file:relative/path", "file:///var/run/ready",
    "exec:pg_isready -h 127.0.0.1 && echo ok", "https://127.0.0.1:15021/healthz/ready",
    "HTTPS://[::1]/ready",
])
def test_wellformed_probes_are_accepted(run_kubexit, graveyard, value):
    result = run_kubexit({"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
                          "KUBEXIT_READINESS_PROBE": value}, ["true"])
    assert result.returncode == 0, result.stderr
    assert graveyard.record("app")["ExitCode"] == 0


# --- start-up cost ---------------------------------------------------------------------

HEAVY_MODULES = {"socket", "http", "http.client", "urllib", "ssl", "json", "subprocess",
                 "threading", "kubexit.probe", "kubexit.quit", "kubexit.apiclient",
                 "kubexit.podwatch", "kubexit.pod", "kubexit.manifests", "kubexit.inject",
                 "kubexit.check", "kubexit.webhook", "shlex", "difflib"}


def imported_modules(graveyard, env):
    environ = clean_environment({"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)})
    environ.update(env)
    result = subprocess.run([KUBEXIT_PYTHON, "-X", "importtime", str(PYZ), "true"], env=environ,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:")}


@pytest.mark.parametrize("env", [
    {"KUBEXIT_DEATH_DEPS": "job"},
    {"KUBEXIT_BIRTH_DEPS": "proxy", "KUBEXIT_BIRTH_CONDITION": "started",
     "KUBEXIT_BIRTH_TIMEOUT": "20ms"},
], ids=["death-deps", "graveyard-births"])
def test_no_network_modules_without_probes(graveyard, env):
    if "KUBEXIT_BIRTH_DEPS" in env:
        graveyard.bear("proxy")
    assert imported_modules(graveyard, env) & HEAVY_MODULES == set()


def test_probe_modules_load_when_used(graveyard):
    """The check above can fail: a probe does bring its modules in."""
    graveyard.bear("proxy")
    modules = imported_modules(graveyard, {"KUBEXIT_WAIT_FOR": "file:%s" % (graveyard / "proxy"),
                                           "KUBEXIT_QUIT_URLS": "http://127.0.0.1:9/quit"})
    assert {"threading", "kubexit.probe", "kubexit.quit", "socket", "http.client"} <= modules
