"""Birth deps end to end: dist/kubexit.pyz as a process against the faithful test API server.

Every path of issue 3: ready at start or later, native sidecars, the started condition,
each injected fault healing (or failing fast where waiting cannot help), the timeout,
SIGTERM and a death during the wait, RBAC, the token, a missing pod, an unknown dep.
"""

import itertools
import os
import re
import signal
import subprocess
import sys
import time

import pytest

KUBEXIT_PYTHON = os.environ.get("KUBEXIT_TEST_PYTHON") or sys.executable
PYTHON38 = os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python3")


RUNS = itertools.count()


class Kubexit:
    """One kubexit process waiting on birth deps, its CMD leaving a marker file when it starts."""

    def __init__(self, pyz, api, tmp_path, deps="proxy", pod="web", python=None, **env):
        self.graveyard = tmp_path / "graveyard"
        self.marker = tmp_path / "cmd-started"
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KUBEXIT_NAME": "app",
            "KUBEXIT_GRAVEYARD": str(self.graveyard),
            "KUBEXIT_BIRTH_DEPS": deps,
            "KUBEXIT_LOG_LEVEL": "debug",
        }
        environ.update(api.env(pod))
        environ.update(env)
        cmd = ["sh", "-c", 'echo started > "$0"; echo cmd-ran', str(self.marker)]
        self.started_at = time.monotonic()
        self.stderr_path = tmp_path / ("stderr-%d" % next(RUNS))
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [python or KUBEXIT_PYTHON, pyz] + cmd,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.stdout = self.stderr = None

    def wait_for_stderr(self, text, timeout=10):
        """While it runs: wait until kubexit has logged a line containing `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr_path.read_text():
            assert time.monotonic() < deadline, "no %r in %s" % (
                text, self.stderr_path.read_text())
            time.sleep(0.005)

    def finish(self, timeout=15):
        """(exit status, seconds it ran); stdout/stderr kept for assertions."""
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise AssertionError(
                "kubexit still running after %ss: %s" % (timeout, self.stderr_path.read_text())
            ) from None
        self.stdout, self.stderr = out.decode(), self.stderr_path.read_text()
        assert "Traceback" not in self.stderr, self.stderr
        return self.process.returncode, time.monotonic() - self.started_at

    def cmd_started(self):
        return self.marker.exists()

    def tombstone(self):
        text = (self.graveyard / "app").read_text()
        return dict(re.findall(r"^(\w+): (.*)$", text, re.M))

    def lines_with(self, text):
        """stderr lines that say `text` (quotes inside a logged field come escaped)."""
        return [line for line in self.stderr.replace('\\"', '"').splitlines() if text in line]


@pytest.fixture
def run(pyz, api, tmp_path):
    made = []

    def start(server=None, **kwargs):
        kubexit = Kubexit(pyz, server or api, tmp_path, **kwargs)
        made.append(kubexit)
        return kubexit

    yield start
    for kubexit in made:
        if kubexit.process.poll() is None:
            kubexit.process.kill()
            kubexit.process.communicate()


def web_pod(api, ready_proxy=False):
    api.add_pod("web", containers=["app", "proxy"])
    if ready_proxy:
        api.ready("web", "proxy")


def assert_started_cmd(kubexit, status):
    assert status == 0, kubexit.stderr
    assert kubexit.cmd_started() and kubexit.stdout == "cmd-ran\n"
    record = kubexit.tombstone()
    assert set(record) == {"Born", "Died", "ExitCode", "Restarts", "RestartPolicy"}
    assert record["ExitCode"] == "0"


def assert_failed_without_cmd(kubexit, status, expected_status=1):
    assert status == expected_status, kubexit.stderr
    assert not kubexit.cmd_started() and kubexit.stdout == ""
    record = kubexit.tombstone()
    assert "Born" not in record and "Died" in record
    assert record["ExitCode"] == str(expected_status)


def test_ready_at_start(run, api):
    web_pod(api, ready_proxy=True)
    kubexit = run()
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)
    assert [r.kind for r in api.requests] == ["list"]


def test_ready_later_with_one_list_and_one_watch(run, api):
    web_pod(api)
    kubexit = run(deps="proxy,app")
    api.watching()
    api.ready("web", "proxy")
    api.run_container("web", "app")
    api.wait_until(lambda s: len(s.events_sent) == 2)
    assert kubexit.process.poll() is None and not kubexit.cmd_started()
    api.ready("web", "app")
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)
    assert [r.kind for r in api.requests] == ["list", "watch"]
    assert "birth deps are ready" in kubexit.stderr


def test_native_sidecar(run, api):
    api.add_pod("web", containers=["app"], sidecars=["proxy"])
    kubexit = run()
    api.watching()
    api.run_container("web", "proxy")
    api.wait_until(lambda s: len(s.events_sent) == 1)
    assert kubexit.process.poll() is None
    api.ready("web", "proxy")
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)


def test_started_condition(run, api):
    web_pod(api)
    kubexit = run(KUBEXIT_BIRTH_CONDITION="started")
    api.watching()
    api.run_container("web", "proxy")
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)


FAULTS = {
    "watch ERROR 410": lambda api: api.inject("expired_event", on="watch"),
    "watch HTTP 410": lambda api: api.inject("status", on="watch", code=410),
    "429 Retry-After": lambda api: api.inject("status", on="any", code=429, retry_after=1),
    "500": lambda api: api.inject("status", on="any", code=500, count=2),
    "503": lambda api: api.inject("status", on="any", code=503, count=2),
    "cut mid-line": lambda api: api.inject("cut_mid_line", on="watch"),
    "split chunks": lambda api: api.inject("split_chunks", on="watch", pieces=6),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_heals(run, api, fault):
    web_pod(api)
    FAULTS[fault](api)
    kubexit = run()
    api.wait_until(lambda s: s.open_watches >= 1 and not s.faults_pending())
    api.run_container("web", "proxy")
    api.ready("web", "proxy")
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)


def test_rotated_token_is_reread(run, api):
    web_pod(api)
    kubexit = run()
    api.watching()
    old = api.token
    api.rotate_token()
    api.watching(count=3)
    api.ready("web", "proxy")
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)
    assert [r.authorization for r in api.requests_of("watch")] == ["Bearer " + old] * 2 + [
        "Bearer " + api.token
    ]


def test_timeout(run, api):
    web_pod(api)
    kubexit = run(KUBEXIT_BIRTH_TIMEOUT="1s")
    status, elapsed = kubexit.finish()
    assert_failed_without_cmd(kubexit, status)
    assert 1 <= elapsed < 5
    assert ("birth deps not ready after 1s: proxy (no tombstone in %s (its kubexit has not "
            "started); not ready in the pod's status)" % kubexit.graveyard) in kubexit.stderr


def test_timeout_while_the_stream_is_stalled(run, api):
    web_pod(api)
    api.inject("stall", on="watch")
    kubexit = run(KUBEXIT_BIRTH_TIMEOUT="1500ms")
    api.watching()
    api.ready("web", "proxy")
    status, elapsed = kubexit.finish()
    assert_failed_without_cmd(kubexit, status)
    assert 1.5 <= elapsed < 5


@pytest.mark.parametrize("stalled", [False, True], ids=["waiting", "stalled-stream"])
def test_sigterm_during_the_wait(run, api, stalled):
    web_pod(api)
    if stalled:
        api.inject("stall", on="watch")
    kubexit = run()
    api.watching()
    sent = time.monotonic()
    kubexit.process.send_signal(signal.SIGTERM)
    status, _ = kubexit.finish()
    assert time.monotonic() - sent < 2
    assert_failed_without_cmd(kubexit, status, 128 + signal.SIGTERM)
    api.wait_until(lambda s: s.open_watches == 0, 3)


def test_death_during_the_wait(run, api, tmp_path):
    web_pod(api)
    kubexit = run(KUBEXIT_DEATH_DEPS="db")
    api.watching()
    (tmp_path / "graveyard" / ".db.tmp").write_text(
        'Born: "2024-01-01T00:00:00.1Z"\nDied: "2024-01-01T00:00:01.1Z"\nExitCode: 3\n'
    )
    os.rename(tmp_path / "graveyard" / ".db.tmp", tmp_path / "graveyard" / "db")
    status, elapsed = kubexit.finish()
    assert not kubexit.cmd_started() and elapsed < 10
    record = kubexit.tombstone()
    assert "Born" not in record and record["ExitCode"] == str(status)
    assert kubexit.lines_with('not started: death dependency "db" had died')


@pytest.mark.parametrize("verb", ["list", "watch"])
def test_rbac_denied_fails_fast(run, api, verb):
    web_pod(api)
    api.denied_verbs = {verb}
    kubexit = run(KUBEXIT_API="required")
    status, elapsed = kubexit.finish()
    assert_failed_without_cmd(kubexit, status)
    assert elapsed < 5
    (line,) = kubexit.lines_with("may not %s pods in namespace default (403 Forbidden)" % verb)
    assert 'verbs: ["get", "list", "watch"]' in line


def test_rejected_token_fails_fast(run, api):
    web_pod(api)
    api.valid_tokens = set()
    kubexit = run(KUBEXIT_API="required")
    status, elapsed = kubexit.finish()
    assert_failed_without_cmd(kubexit, status)
    assert "401 Unauthorized" in kubexit.stderr and len(api.requests) == 2


def test_no_token(run, api):
    web_pod(api)
    os.unlink(os.path.join(api.sa_dir, "token"))
    kubexit = run(KUBEXIT_API="required")
    status, _ = kubexit.finish()
    assert status == 2 and not kubexit.cmd_started()
    assert "automountServiceAccountToken" in kubexit.stderr
    assert api.requests == []


REFUSALS = {
    "no token": (lambda api: os.unlink(os.path.join(api.sa_dir, "token")),
                 "no service-account token at"),
    "rejected token": (lambda api: setattr(api, "valid_tokens", set()), "401 Unauthorized"),
    "403 on list": (lambda api: setattr(api, "denied_verbs", {"list"}), "403 Forbidden"),
}


def write_ready_tombstone(graveyard, name):
    """Once kubexit has made the graveyard: `name` born and ready, as its kubexit writes it."""
    deadline = time.monotonic() + 10
    while not graveyard.is_dir():
        assert time.monotonic() < deadline, "kubexit made no graveyard"
        time.sleep(0.005)
    temporary = graveyard / (".%s.tmp" % name)
    temporary.write_text('Born: "2026-01-01T00:00:00.1Z"\nReady: "2026-01-01T00:00:00.2Z"\n')
    os.rename(temporary, graveyard / name)


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_auto_goes_on_with_the_graveyard_when_the_api_refuses(run, api, refusal):
    web_pod(api)
    make_refuse, said = REFUSALS[refusal]
    make_refuse(api)
    kubexit = run(KUBEXIT_BIRTH_TIMEOUT="20s")
    kubexit.wait_for_stderr("graveyard alone")
    write_ready_tombstone(kubexit.graveyard, "proxy")
    status, elapsed = kubexit.finish()
    assert_started_cmd(kubexit, status)
    (warning,) = [line for line in kubexit.stderr.splitlines() if " warn: " in line]
    assert said in warning and ("graveyard alone" in warning), warning
    assert len(api.requests) <= 2


def test_auto_names_the_refusal_when_the_wait_times_out(run, api):
    web_pod(api)
    api.denied_verbs = {"list"}
    kubexit = run(KUBEXIT_BIRTH_TIMEOUT="1s")
    status, _ = kubexit.finish()
    assert_failed_without_cmd(kubexit, status)
    (line,) = kubexit.lines_with("exiting with status 1")
    assert "proxy (no tombstone in" in line
    assert "the API refused, so the pod's status was not read" in line and "403" in line


def test_off_makes_no_request(run, api):
    web_pod(api, ready_proxy=True)
    kubexit = run(KUBEXIT_API="off", KUBEXIT_BIRTH_TIMEOUT="20s")
    write_ready_tombstone(kubexit.graveyard, "proxy")
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)
    assert api.requests == [] and "via=graveyard\n" in kubexit.stderr
    assert " warn: " not in kubexit.stderr


def test_each_dep_is_ready_by_whichever_source_says_so_first(run, api):
    api.add_pod("web", containers=["app", "proxy", "sidecar"])
    kubexit = run(deps="proxy,sidecar")
    api.watching()
    write_ready_tombstone(kubexit.graveyard, "sidecar")  # a Python sidecar with kubexit
    api.run_container("web", "proxy")
    api.wait_until(lambda s: len(s.events_sent) == 1)
    assert kubexit.process.poll() is None and not kubexit.cmd_started()
    api.ready("web", "proxy")  # a Python-less sidecar, known only to the pod's status
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)
    assert [r.kind for r in api.requests] == ["list", "watch"]


@pytest.mark.parametrize("policy,code", [("Never", 0), ("OnFailure", 0), ("Never", 1)])
def test_a_dep_terminated_for_good_ends_the_wait_at_once(run, api, policy, code):
    api.add_pod("web", containers=["app", "proxy"], restart_policy=policy)
    kubexit = run(KUBEXIT_BIRTH_TIMEOUT="30s")
    api.watching()
    api.terminate("web", "proxy", exit_code=code)
    status, elapsed = kubexit.finish()
    assert_failed_without_cmd(kubexit, status)
    assert elapsed < 10
    assert kubexit.lines_with('birth dependency "proxy" died for good (its container '
                              "terminated with exit code %d, restartPolicy %s)" % (code, policy))


class SilentListener:
    """An API address that never gets as far as HTTP: `backlog-full` lets no connect
    complete (its accept queue is full, so SYNs are dropped); `no-handshake` accepts TCP
    and never answers the TLS ClientHello."""

    def __init__(self, kind):
        import socket

        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(0)
        self.port = self.server.getsockname()[1]
        self.fillers = []
        if kind == "backlog-full":
            while True:  # bounded by the kernel: a few connects fill a backlog of 0
                filler = socket.socket()
                filler.setblocking(False)
                self.fillers.append(filler)
                if filler.connect_ex(("127.0.0.1", self.port)) != 0 or len(self.fillers) > 8:
                    break

    def close(self):
        for sock in self.fillers + [self.server]:
            sock.close()


@pytest.fixture(params=["backlog-full", "no-handshake"])
def silent_api(request):
    listener = SilentListener(request.param)
    yield listener
    listener.close()


@pytest.mark.parametrize("ending", ["SIGTERM", "death dep"])
def test_a_silent_api_address_never_delays_a_signal_or_a_death(run, api, silent_api, ending):
    web_pod(api)
    kubexit = run(KUBERNETES_SERVICE_PORT=str(silent_api.port), KUBEXIT_DEATH_DEPS="db",
                  KUBEXIT_BIRTH_TIMEOUT="60s")
    kubexit.wait_for_stderr("waiting for birth deps")
    sent = time.monotonic()
    if ending == "SIGTERM":
        kubexit.process.send_signal(signal.SIGTERM)
    else:
        write_died_tombstone(kubexit.graveyard, "db")
    status, _ = kubexit.finish()
    assert time.monotonic() - sent < 1.0
    expected = 128 + signal.SIGTERM if ending == "SIGTERM" else 0
    assert_failed_without_cmd(kubexit, status, expected)
    assert "cannot reach" not in kubexit.stderr  # still in connect or handshake, not refused


def write_died_tombstone(graveyard, name):
    temporary = graveyard / (".%s.tmp" % name)
    temporary.write_text('Born: "2026-01-01T00:00:00.1Z"\nDied: "2026-01-01T00:00:01Z"\n'
                         "ExitCode: 0\n")
    os.rename(temporary, graveyard / name)


@pytest.mark.parametrize("name,policy", [("app", "OnFailure"), ("proxy", "Always")],
                         ids=["the-pods", "a-native-sidecars-own"])
def test_the_pod_spec_fills_an_unset_restart_policy(run, api, name, policy):
    api.add_pod("web", containers=["app", "db"], sidecars=["proxy"], restart_policy="OnFailure")
    api.ready("web", "db")
    kubexit = run(deps="db", KUBEXIT_NAME=name)
    status, _ = kubexit.finish()
    assert status == 0, kubexit.stderr
    text = (kubexit.graveyard / name).read_text()
    assert 'RestartPolicy: "%s"' % policy in text, text
    assert kubexit.lines_with("restart policy from the pod's spec restart_policy=" + policy)
    assert " warn: " not in kubexit.stderr


def test_a_restart_policy_the_pod_spec_contradicts_is_warned_of(run, api):
    api.add_pod("web", containers=["app", "proxy"], restart_policy="OnFailure")
    api.ready("web", "proxy")
    kubexit = run(KUBEXIT_RESTART_POLICY="Never")
    status, _ = kubexit.finish()
    assert status == 0
    assert kubexit.tombstone()["RestartPolicy"] == '"Never"'
    (line,) = kubexit.lines_with(" warn: ")
    assert "KUBEXIT_RESTART_POLICY=Never, but the pod's spec says OnFailure for container app" \
        in line


def test_pod_missing(run, api):
    web_pod(api)
    kubexit = run(pod="not-this-pod")
    status, _ = kubexit.finish()
    assert_failed_without_cmd(kubexit, status)
    assert kubexit.lines_with('pod "not-this-pod" not found in namespace "default"')


def test_unknown_dep_name(run, api):
    api.add_pod("web", containers=["app"], sidecars=["istio-proxy"])
    kubexit = run(deps="istio-proxy,cloudsql")
    status, _ = kubexit.finish()
    assert_failed_without_cmd(kubexit, status)
    assert "names cloudsql, which is no container of pod default/web " in kubexit.stderr
    assert "(its containers: istio-proxy, app)" in kubexit.stderr


@pytest.mark.parametrize("how", ["deletionTimestamp", "DELETED", "new UID"])
def test_pod_going_away_fails_fast(run, api, how):
    web_pod(api)
    if how == "new UID":
        api.inject("stall", on="watch")
    kubexit = run()
    api.watching()
    if how == "deletionTimestamp":
        api.mark_deleting("web")
    elif how == "DELETED":
        api.delete_pod("web")
    else:
        api.recreate_pod("web")
        api.compact()
        api.end_watches()
    status, elapsed = kubexit.finish()
    assert_failed_without_cmd(kubexit, status)
    assert elapsed < 5
    expected = {
        "deletionTimestamp": "is being deleted",
        "DELETED": "was deleted",
        "new UID": "was replaced",
    }
    assert expected[how] in kubexit.stderr


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_service_host(run, api6, host):
    web_pod(api6, ready_proxy=True)
    kubexit = run(server=api6, KUBERNETES_SERVICE_HOST=host)
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)


def test_namespace_from_the_service_account(run, api, tmp_path):
    web_pod(api, ready_proxy=True)
    kubexit = run(KUBEXIT_NAMESPACE="")
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)
    assert api.requests[0].path == "/api/v1/namespaces/default/pods"


@pytest.mark.skipif(not os.access(PYTHON38, os.X_OK), reason="no CPython 3.8 at " + PYTHON38)
def test_python38(run, api):
    web_pod(api)
    kubexit = run(python=PYTHON38)
    api.watching()
    api.inject("cut_mid_line", on="watch")
    api.end_watches()
    api.watching(count=2)
    api.ready("web", "proxy")
    status, _ = kubexit.finish()
    assert_started_cmd(kubexit, status)
