"""Birth deps through the graveyard (issue 5): no Kubernetes API in the environment at all.

A dep kubexit with a readiness probe writes Ready into its tombstone; a dependent
kubexit with KUBEXIT_BIRTH_DEPS starts its CMD only after that, in both watch modes.
"""

import os
import signal
import time

import pytest
from conftest import (
    assert_still_running,
    process_state,
    signal_child_argv,
    tombstone_text,
    wait_until,
)
from test_probes import tombstone_time


def dependent_env(graveyard, watch_env, deps="proxy", **extra):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_BIRTH_DEPS": deps, "KUBEXIT_LOG_LEVEL": "debug"}
    env.update(watch_env)
    env.update(extra)
    return env


def start_dependent(start_kubexit, graveyard, watch_env, marker, **extra):
    """kubexit "app" whose CMD leaves `marker` and exits 0; it must be waiting."""
    proc = start_kubexit(dependent_env(graveyard, watch_env, **extra),
                         ["sh", "-c", 'touch "$0"', str(marker)])
    proc.err.wait_for(lambda line: "waiting for birth deps" in line, 10)
    return proc


def assert_waiting(proc, marker):
    """Still waiting: alive, CMD not run, with the event loop answering signals."""
    def answered():
        return sum("ignoring signal signal=SIGWINCH" in line for line in proc.err.lines)

    seen = answered()
    proc.send_signal(signal.SIGWINCH)  # ignored before CMD starts, logged at debug
    wait_until(lambda: answered() > seen, 5, message="kubexit's loop did not answer")
    assert proc.poll() is None and not marker.exists()


def test_dep_ready_through_its_readiness_probe(start_kubexit, graveyard, watch_env, tmp_path):
    marker = tmp_path / "cmd-ran"
    flag = tmp_path / "proxy-ready"
    app = start_dependent(start_kubexit, graveyard, watch_env, marker)
    proxy = start_kubexit({"KUBEXIT_NAME": "proxy", "KUBEXIT_GRAVEYARD": str(graveyard),
                           "KUBEXIT_READINESS_PROBE": "file:%s" % flag,
                           "KUBEXIT_READINESS_PERIOD": "20ms"}, signal_child_argv("wait"))
    proxy.out.wait_for("ready")
    wait_until(lambda: "Born" in graveyard.record("proxy"))
    assert_waiting(app, marker)
    flag.write_text("up")
    assert app.wait(10) == 0, "\n".join(app.err.lines)
    assert marker.exists()
    ready = tombstone_time(graveyard.record("proxy")["Ready"])
    assert tombstone_time(graveyard.record("app")["Born"]) >= ready
    assert "Kubernetes" not in "\n".join(app.err.lines)
    assert_still_running(proxy)
    proxy.stdin.close()
    assert proxy.wait(10) == 0


@pytest.mark.parametrize("record", [
    'Born: "2026-01-01T00:00:00.1Z"\nReady: "2026-01-01T00:00:00.5Z"\n',
    "born: 2026-01-01T00:00:00.1Z\nready: '2026-01-01T00:00:00.5Z'\nexitcode: null\n",
    '{"Born": "2026-01-01T00:00:00.1Z", "READY": "2026-01-01T00:00:00.5Z", "Died": null}',
], ids=["kubexit", "hand-written", "json"])
def test_dep_already_ready_before_start(run_kubexit, graveyard, watch_env, record):
    graveyard.write_atomic("proxy", record)
    result = run_kubexit(dependent_env(graveyard, watch_env), ["true"])
    assert result.returncode == 0, result.stderr
    assert "birth deps are ready" in result.stderr


@pytest.mark.parametrize("record", ['Born: "2026-01-01T00:00:00.1Z"\nReady: ""\n',
                                    'Born: "2026-01-01T00:00:00.1Z"\nReady: null\n', ""],
                         ids=["empty", "null", "empty-file"])
def test_ready_absent_in_any_spelling(run_kubexit, graveyard, watch_env, record):
    graveyard.write_atomic("proxy", record)
    result = run_kubexit(dependent_env(graveyard, watch_env, KUBEXIT_BIRTH_TIMEOUT="300ms"),
                         ["true"])
    assert result.returncode == 1, result.stderr
    assert "birth deps not ready after 0.3s: proxy (born, but its tombstone has no Ready" \
        in result.stderr


def test_the_timeout_says_a_dep_is_waiting_for_its_restart(run_kubexit, graveyard, watch_env):
    graveyard.write_atomic("proxy", tombstone_text(died=True, exit_code=1)
                           + 'Restarts: 3\nRestartPolicy: "OnFailure"\n')
    result = run_kubexit(dependent_env(graveyard, watch_env, KUBEXIT_BIRTH_TIMEOUT="300ms"),
                         ["true"])
    assert result.returncode == 1, result.stderr
    assert ("birth deps not ready after 0.3s: proxy (died with exit code 1, restartPolicy "
            "OnFailure; waiting for its restart)") in result.stderr


def test_every_dep_must_be_ready(start_kubexit, graveyard, watch_env, tmp_path):
    marker = tmp_path / "cmd-ran"
    ready = tombstone_text() + 'Ready: "2026-01-01T00:00:00.5Z"\n'
    graveyard.write_atomic("db", ready)
    app = start_dependent(start_kubexit, graveyard, watch_env, marker, deps="db,proxy")
    app.err.wait_for(lambda line: "birth dep is ready" in line and "dep=db" in line, 5)
    graveyard.bear("proxy")
    assert_waiting(app, marker)
    graveyard.write_in_place("proxy", ready)  # as a Go-style writer would
    assert app.wait(10) == 0, "\n".join(app.err.lines)
    assert marker.exists()


@pytest.mark.parametrize("policy,code", [("Always", 0), ("OnFailure", 1)])
def test_ready_then_died_counts_again_only_when_ready_again(start_kubexit, graveyard, watch_env,
                                                            tmp_path, policy, code):
    marker = tmp_path / "cmd-ran"
    graveyard.write_atomic("proxy", 'Born: "2026-01-01T00:00:00.1Z"\n'
                           'Ready: "2026-01-01T00:00:00.5Z"\nDied: "2026-01-01T00:00:01Z"\n'
                           'ExitCode: %d\nRestarts: 0\nRestartPolicy: "%s"\n' % (code, policy))
    app = start_dependent(start_kubexit, graveyard, watch_env, marker)
    assert_waiting(app, marker)
    graveyard.bear("proxy")  # restarted: a fresh record, born but not ready
    assert_waiting(app, marker)
    graveyard.write_atomic("proxy", tombstone_text() + 'Ready: "2026-01-01T00:00:02Z"\n')
    assert app.wait(10) == 0
    assert marker.exists()


@pytest.mark.parametrize("died", [
    'Died: "2026-01-01T00:00:01Z"\nExitCode: 0\n',
    'Died: "2026-01-01T00:00:01Z"\nExitCode: 3\nRestartPolicy: "never"\n',
    'Died: "2026-01-01T00:00:01Z"\nExitCode: 0\nRestartPolicy: "OnFailure"\n',
], ids=["go-format", "never", "onfailure-success"])
@pytest.mark.parametrize("when", ["before-start", "while-waiting"])
def test_a_final_death_ends_the_wait_at_once(start_kubexit, graveyard, watch_env, tmp_path,
                                             died, when):
    marker = tmp_path / "cmd-ran"
    record = 'Born: "2026-01-01T00:00:00.1Z"\n' + died
    if when == "before-start":
        graveyard.write_atomic("proxy", record)
    app = start_kubexit(dependent_env(graveyard, watch_env, KUBEXIT_BIRTH_TIMEOUT="60s"),
                        ["touch", marker])
    if when == "while-waiting":
        app.err.wait_for(lambda line: "waiting for birth deps" in line, 10)
        graveyard.bear("proxy")
        assert_waiting(app, marker)
        graveyard.write_atomic("proxy", record)
    assert app.wait(10) == 1, "\n".join(app.err.lines)
    assert not marker.exists()
    (line,) = [line for line in app.err.lines if "exiting with status 1" in line]
    assert 'birth dependency "proxy" died for good (with exit code' in line, line
    assert line.endswith("it will never be ready")
    assert graveyard.record("app")["ExitCode"] == 1


def test_started_condition(start_kubexit, graveyard, watch_env, tmp_path):
    marker = tmp_path / "cmd-ran"
    app = start_dependent(start_kubexit, graveyard, watch_env, marker,
                          KUBEXIT_BIRTH_CONDITION="started")
    assert_waiting(app, marker)
    proxy = start_kubexit({"KUBEXIT_NAME": "proxy", "KUBEXIT_GRAVEYARD": str(graveyard)},
                          signal_child_argv("wait"))
    assert app.wait(10) == 0, "\n".join(app.err.lines)
    born = tombstone_time(graveyard.record("proxy")["Born"])
    assert tombstone_time(graveyard.record("app")["Born"]) >= born
    assert "Ready" not in graveyard.record("proxy")
    proxy.stdin.close()
    assert proxy.wait(10) == 0


def test_timeout_without_api(run_kubexit, graveyard, watch_env, tmp_path):
    marker = tmp_path / "cmd-ran"
    message = tmp_path / "termination-log"
    graveyard.bear("proxy")
    started = time.monotonic()
    result = run_kubexit(dependent_env(graveyard, watch_env, KUBEXIT_BIRTH_TIMEOUT="1s",
                                       KUBEXIT_TERMINATION_LOG=str(message)),
                         ["touch", marker])
    assert result.returncode == 1, result.stderr
    assert 1.0 <= time.monotonic() - started < 4
    assert not marker.exists()
    assert message.read_text() == (
        "birth deps not ready after 1s: proxy (born, but its tombstone has no Ready: give its "
        "kubexit a KUBEXIT_READINESS_PROBE, or set KUBEXIT_BIRTH_CONDITION=started here)\n")
    record = graveyard.record("app")
    assert list(record) == ["Died", "ExitCode", "Restarts", "RestartPolicy"]
    assert record["ExitCode"] == 1
    assert "KUBERNETES" not in result.stderr and "Traceback" not in result.stderr


def test_death_dep_dying_during_the_wait(start_kubexit, graveyard, watch_env, tmp_path):
    marker = tmp_path / "cmd-ran"
    app = start_dependent(start_kubexit, graveyard, watch_env, marker, KUBEXIT_DEATH_DEPS="job")
    graveyard.bury("job", exit_code=4)
    assert app.wait(10) == 0  # the default death exit policy: zero
    assert not marker.exists()
    assert "not started: death dependency" in app.err.text()


def test_birth_and_wait_for_together(start_kubexit, graveyard, watch_env, tmp_path):
    marker = tmp_path / "cmd-ran"
    flag = tmp_path / "flag"
    app = start_dependent(start_kubexit, graveyard, watch_env, marker,
                          KUBEXIT_WAIT_FOR="file:%s" % flag, KUBEXIT_READINESS_PERIOD="20ms")
    graveyard.write_atomic("proxy", tombstone_text() + 'Ready: "2026-01-01T00:00:00.5Z"\n')
    app.err.wait_for(lambda line: "birth dep is ready" in line, 5)
    assert_waiting(app, marker)
    flag.write_text("x")
    assert app.wait(10) == 0
    assert marker.exists()


def test_inspect_shows_ready(run_kubexit, graveyard):
    graveyard.write_atomic("proxy", tombstone_text() + 'Ready: "2026-01-01T00:00:00.5Z"\n')
    graveyard.bear("app")
    graveyard.write_atomic("job", 'Born: "2026-01-01T00:00:00.1Z"\n'
                           'Ready: "2026-01-01T00:00:00.5Z"\nDied: "2026-01-01T00:00:01Z"\n'
                           "ExitCode: 0\n")
    result = run_kubexit({}, ["--inspect", str(graveyard)])
    assert result.returncode == 0, result
    states = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert states == {"proxy": "ready", "app": "running", "job": "dead"}, result.stdout
    assert os.path.exists(graveyard / "proxy")


def test_graveyard_or_api_either_satisfies(start_kubexit, graveyard, tmp_path):
    """With the API configured, a dep ready in the graveyard starts CMD while the pod's
    status still says not ready (the API alone is covered by tests/kube)."""
    from kube.apiserver import ApiServer
    from kube.certs import make_certs

    api = ApiServer(make_certs(str(tmp_path / "certs")), str(tmp_path / "sa")).start()
    try:
        api.add_pod("web", containers=["app", "proxy"])
        marker = tmp_path / "cmd-ran"
        env = dependent_env(graveyard, {}, **api.env("web"))
        app = start_kubexit(env, ["touch", marker])
        api.watching()
        assert_waiting(app, marker)
        graveyard.write_atomic("proxy", tombstone_text() + 'Ready: "2026-01-01T00:00:00.5Z"\n')
        assert app.wait(10) == 0, "\n".join(app.err.lines)
        assert marker.exists()
        assert "via=graveyard,api" in app.err.text()
        api.wait_until(lambda s: s.open_watches == 0, 3)
    finally:
        api.stop()


# --- CMD's process, forked before the wait and held short of its exec -------------------

def held_children(proc):
    """kubexit's live children during the wait that are still its interpreter, not CMD."""
    from conftest import descendants

    def program(pid):
        try:
            return os.readlink("/proc/%d/exe" % pid)
        except OSError:
            return None  # gone, or a zombie

    mine = program(proc.pid)
    return [pid for pid in descendants(proc.pid) if program(pid) == mine]


def test_a_terminating_signal_in_the_wait_ends_the_held_child_unexecuted(
        start_kubexit, graveyard, tmp_path):
    from conftest import descendants

    marker = tmp_path / "cmd-ran"
    app = start_dependent(start_kubexit, graveyard, {}, marker)
    [held] = wait_until(lambda: held_children(app), 5)
    assert_waiting(app, marker)
    app.send_signal(signal.SIGTERM)
    assert app.wait(10) == 128 + 15
    assert not marker.exists()
    assert not os.path.exists("/proc/%d" % held), "the held child outlived kubexit"
    assert descendants(app.pid) == []
    assert graveyard.record("app")["ExitCode"] == 128 + 15


def test_a_held_child_killed_in_the_wait_is_replaced_when_the_deps_are_met(
        start_kubexit, graveyard, tmp_path):
    """Dead (a zombie, or reaped) before the dep is born: whether kubexit has reaped it or
    its go-ahead meets a broken pipe (whose SIGPIPE must not reach CMD), it forks afresh."""
    marker = tmp_path / "cmd-ran"
    app = start_dependent(start_kubexit, graveyard, {}, marker,
                          KUBEXIT_BIRTH_CONDITION="started")
    [held] = wait_until(lambda: held_children(app), 5)
    os.kill(held, signal.SIGKILL)
    wait_until(lambda: process_state(held) in ("Z", None), 5)   # its files all closed
    graveyard.bear("proxy")
    assert app.wait(10) == 0, "\n".join(app.err.lines)
    assert marker.exists()
