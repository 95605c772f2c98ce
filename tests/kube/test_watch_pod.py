"""Death deps seen through the pod's status (KUBEXIT_WATCH_POD), end to end: dist/kubexit.pyz
as a process against the faithful test API server, CMD a signal_child.py that reports SIGTERM.

A dep with no tombstone (a container whose image has no Python) dies when its container
status says terminated, with its exitCode; a dep with a tombstone is judged by it alone;
the option off makes no request and loads no network module; set without the API it is a
configuration error; an API that refuses mid-supervision is one warning, never CMD's end.
"""

import os
import socket
from pathlib import Path

import pytest
from conftest import (
    KUBEXIT_PYTHON,
    PYTHON38,
    PYZ,
    assert_failed_start_record,
    assert_still_running,
    signal_child_argv,
    tombstone_text,
    wait_until,
)

NETWORK_MODULES = {"ssl", "json", "threading", "socket", "kubexit.apiclient"}


@pytest.fixture
def supervise(start_kubexit, api, tmp_path):
    """start(deps="job", **env): kubexit as container "app" of pod "web", CMD waiting; with
    importtime=True, stderr also lists every module imported."""
    graveyard = tmp_path / "graveyard"
    graveyard.mkdir()

    def start(deps="job", importtime=False, api_env=True, python=KUBEXIT_PYTHON, **env):
        environ = {
            "KUBEXIT_NAME": "app",
            "KUBEXIT_GRAVEYARD": str(graveyard),
            "KUBEXIT_DEATH_DEPS": deps,
            "KUBEXIT_WATCH_POD": "true",
            "KUBEXIT_LOG_LEVEL": "debug",
            "KUBEXIT_TERMINATION_LOG": str(tmp_path / "termination-log"),
        }
        if api_env:
            environ.update(api.env("web"))
        else:  # not even the address the kubelet sets: kubexit outside any pod
            environ["KUBERNETES_SERVICE_HOST"] = None
        environ.update(env)
        argv = [python] + (["-X", "importtime"] if importtime else []) + [str(PYZ)]
        return start_kubexit(environ, None, argv=argv + signal_child_argv("wait"))

    start.graveyard = graveyard
    start.termination_log = tmp_path / "termination-log"
    return start


def finish(proc, timeout=10):
    status = proc.wait(timeout)
    proc.err.join(5)
    assert not any("Traceback" in line for line in proc.err.lines), proc.err.lines
    return status


def lines_with(proc, text):
    return [line for line in proc.err.lines if text in line.replace('\\"', '"')]


def imported(proc):
    return {line.split("|")[-1].strip() for line in proc.err.lines
            if line.startswith("import time:")}


def tombstone(graveyard, name="app"):
    return dict(line.split(": ", 1) for line in (graveyard / name).read_text().splitlines())


def test_terminated_container_stops_cmd_with_its_exit_code(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    proc = supervise(KUBEXIT_DEATH_EXIT_CODE="dependency", importtime=True)
    proc.out.wait_for("ready")
    api.watching()
    api.run_container("web", "job")
    assert_still_running(proc)
    api.terminate("web", "job", exit_code=3)
    assert finish(proc) == 3
    assert lines_with(proc, "death dep died, says the pod's status dep=job exit_code=3")
    reason = 'stopped: death dependency "job" died with exit code 3; CMD was killed by SIGTERM'
    assert lines_with(proc, "exiting with status 3: " + reason)
    assert supervise.termination_log.read_text() == reason + "\n"
    assert tombstone(supervise.graveyard)["ExitCode"] == "3"
    assert [r.kind for r in api.requests] == ["list", "watch"]
    assert {"ssl", "kubexit.apiclient"} <= imported(proc)


def test_native_sidecar_in_init_container_statuses_always_restarts(supervise, api):
    api.add_pod("web", containers=["app"], sidecars=["proxy"], restart_policy="Never")
    proc = supervise(deps="proxy", KUBEXIT_DEATH_EXIT_CODE="dependency")
    proc.out.wait_for("ready")
    api.watching()
    api.ready("web", "proxy")
    api.terminate("web", "proxy", exit_code=137)
    proc.err.wait_for(lambda line: "the kubelet restarts it dep=proxy exit_code=137 "
                      "restart_policy=Always restarts=1" in line)
    assert_still_running(proc)
    assert "signal 15" not in proc.out.lines


@pytest.mark.parametrize("policy,code,final", [
    ("Never", 1, True), ("OnFailure", 0, True), ("OnFailure", 1, False), ("Always", 0, False)])
def test_the_pods_restart_policy_decides_which_terminations_count(supervise, api, policy, code,
                                                                  final):
    api.add_pod("web", containers=["app", "job"], restart_policy=policy)
    proc = supervise(KUBEXIT_DEATH_EXIT_CODE="dependency")
    proc.out.wait_for("ready")
    api.watching()
    api.run_container("web", "job")
    api.terminate("web", "job", exit_code=code)
    if final:
        assert finish(proc) == code
        assert lines_with(proc, "death dep died, says the pod's status dep=job exit_code=%d"
                          % code)
        return
    proc.err.wait_for(lambda line: "the kubelet restarts it dep=job exit_code=%d "
                      "restart_policy=%s restarts=1" % (code, policy) in line)
    api.restart("web", "job")
    api.terminate("web", "job", exit_code=code)
    proc.err.wait_for(lambda line: "restart_policy=%s restarts=2" % policy in line)
    assert_still_running(proc)
    (supervise.graveyard / "job").write_text(tombstone_text(died=True, exit_code=0))
    assert finish(proc) == 0


@pytest.mark.parametrize("birth_deps", ["", "proxy"], ids=["no-birth-deps", "birth-deps"])
@pytest.mark.parametrize("restart_policy", [None, "Never"], ids=["policy-from-spec", "policy-set"])
def test_one_list_and_one_watch_whatever_reads_the_pod(supervise, api, birth_deps,
                                                       restart_policy):
    api.add_pod("web", containers=["app", "proxy", "job"], restart_policy="Never")
    proc = supervise(KUBEXIT_BIRTH_DEPS=birth_deps or None,
                     KUBEXIT_RESTART_POLICY=restart_policy, KUBEXIT_BIRTH_TIMEOUT="20s")
    api.watching()
    if birth_deps:
        assert proc.out.lines == []
        api.ready("web", "proxy")
    proc.out.wait_for("ready")
    assert_still_running(proc)
    api.terminate("web", "job", exit_code=0)
    assert finish(proc) == 0
    assert [r.kind for r in api.requests] == ["list", "watch"]
    assert tombstone(supervise.graveyard)["RestartPolicy"] == '"Never"'


def test_the_pod_spec_fills_the_restart_policy_after_born(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="OnFailure")
    proc = supervise()
    proc.out.wait_for("ready")
    wait_until(lambda: tombstone(supervise.graveyard).get("RestartPolicy") == '"OnFailure"')
    assert "Born" in tombstone(supervise.graveyard)
    assert lines_with(proc, "restart policy from the pod's spec restart_policy=OnFailure")


def test_a_restart_seen_only_in_last_state_is_logged(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="OnFailure")
    proc = supervise()
    proc.out.wait_for("ready")
    api.watching()
    api.run_container("web", "job")
    with api._cond:  # the kubelet restarted it between two status updates
        status = api._pods[("default", "web")]["status"]["containerStatuses"][1]
        status["state"] = {"terminated": {"exitCode": 2, "finishedAt": "2026-01-01T00:00:00Z"}}
    api.restart("web", "job")
    proc.err.wait_for(lambda line: "the kubelet restarts it dep=job exit_code=2 "
                      "restart_policy=OnFailure restarts=1" in line)
    assert_still_running(proc)


def test_dep_terminated_before_start_keeps_cmd_from_starting(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    api.terminate("web", "job", exit_code=4)
    proc = supervise(KUBEXIT_DEATH_EXIT_CODE="dependency", KUBEXIT_BIRTH_DEPS="job",
                     KUBEXIT_BIRTH_TIMEOUT="20s")
    assert finish(proc) == 4
    assert proc.out.lines == []
    assert lines_with(proc, 'not started: death dependency "job" had died with exit code 4')
    assert "Born" not in tombstone(supervise.graveyard)


def test_dep_with_a_tombstone_is_judged_by_its_tombstone(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    (supervise.graveyard / "job").write_text(tombstone_text())
    proc = supervise(KUBEXIT_DEATH_EXIT_CODE="dependency")
    proc.out.wait_for("ready")
    api.watching()
    api.terminate("web", "job", exit_code=3)
    proc.err.wait_for(lambda line: "its tombstone decides dep=job" in line)
    assert_still_running(proc)
    (supervise.graveyard / ".job.tmp").write_text(tombstone_text(died=True, exit_code=5))
    os.rename(supervise.graveyard / ".job.tmp", supervise.graveyard / "job")
    assert finish(proc) == 5
    assert lines_with(proc, 'death dependency "job" died with exit code 5: stopping CMD')
    assert not lines_with(proc, "says the pod's status")


def test_death_policy_all_counts_both_sources(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    proc = supervise(deps="job,db", KUBEXIT_DEATH_POLICY="all",
                     KUBEXIT_DEATH_EXIT_CODE="dependency")
    proc.out.wait_for("ready")
    api.watching()
    api.terminate("web", "job", exit_code=3)
    proc.err.wait_for(lambda line: "says the pod's status dep=job" in line)
    assert_still_running(proc)
    (supervise.graveyard / "db").write_text(tombstone_text(died=True, exit_code=6))
    assert finish(proc) == 6
    assert lines_with(proc, 'death dependency "db" died with exit code 6')


def test_off_by_default_makes_no_request_and_loads_no_network_module(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    api.terminate("web", "job", exit_code=3)
    proc = supervise(KUBEXIT_WATCH_POD=None, importtime=True)
    proc.out.wait_for("ready")
    assert_still_running(proc)
    (supervise.graveyard / "job").write_text(tombstone_text(died=True, exit_code=0))
    assert finish(proc) == 0
    assert api.requests == []
    assert imported(proc) & NETWORK_MODULES == set()


@pytest.mark.parametrize("missing", ["KUBERNETES_SERVICE_HOST", "token"])
def test_on_without_the_api_is_a_configuration_error(supervise, api, missing):
    if missing == "token":
        os.unlink(os.path.join(api.sa_dir, "token"))
        proc = supervise()
    else:
        proc = supervise(api_env=False)
    assert finish(proc) == 2
    assert proc.out.lines == []
    assert_failed_start_record(supervise.graveyard, "app")
    (line,) = proc.err.lines
    assert line.startswith("kubexit: KUBEXIT_WATCH_POD") and missing in line
    assert api.requests == []


@pytest.mark.parametrize("setting", ["yes please", "2"])
def test_a_value_that_is_not_a_boolean_is_a_configuration_error(supervise, api, setting):
    proc = supervise(KUBEXIT_WATCH_POD=setting)
    assert finish(proc) == 2
    assert proc.err.lines == ["kubexit: KUBEXIT_WATCH_POD=%r is not a boolean; use true or false"
                              % setting]


def test_on_without_death_deps_is_a_warning_and_no_request(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    proc = supervise(deps="")
    proc.out.wait_for("ready")
    proc.stdin.close()
    assert finish(proc) == 0
    assert lines_with(proc, "warn: KUBEXIT_WATCH_POD=true does nothing without KUBEXIT_DEATH_DEPS")
    assert api.requests == []


@pytest.mark.parametrize("verb", ["list", "watch"])
def test_forbidden_while_supervising_is_one_warning(supervise, api, verb):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    api.denied_verbs = {verb}
    proc = supervise()
    proc.out.wait_for("ready")
    proc.err.wait_for(lambda line: "stopped following the pod's status" in line)
    assert_still_running(proc)
    api.terminate("web", "job", exit_code=3)
    (supervise.graveyard / "job").write_text(tombstone_text(died=True, exit_code=3))
    assert finish(proc) == 0
    (warning,) = [line for line in proc.err.lines if " warn: " in line]
    assert "may not %s pods in namespace default (403 Forbidden)" % verb in warning
    assert lines_with(proc, 'stopped: death dependency "job" died with exit code 3')
    assert [r.kind for r in api.requests] == {"list": ["list"], "watch": ["list", "watch"]}[verb]


def test_pod_being_deleted_ends_following_with_one_warning(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    proc = supervise()
    proc.out.wait_for("ready")
    api.watching()
    api.mark_deleting("web")
    proc.err.wait_for(lambda line: "stopped following the pod's status" in line)
    assert_still_running(proc)
    (warning,) = [line for line in proc.err.lines if " warn: " in line]
    assert "is being deleted" in warning and "while watching death deps" in warning
    (supervise.graveyard / "job").write_text(tombstone_text(died=True, exit_code=0))
    assert finish(proc) == 0


def test_a_stream_that_breaks_while_supervising_heals(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    api.inject("cut_mid_line", on="watch")
    proc = supervise(KUBEXIT_DEATH_EXIT_CODE="dependency")
    proc.out.wait_for("ready")
    api.watching()
    api.run_container("web", "job")  # the event the fault cuts in half
    api.watching(count=2)
    api.terminate("web", "job", exit_code=3)
    assert finish(proc) == 3


@pytest.mark.skipif(not PYTHON38.exists(), reason="no CPython 3.8 at %s" % PYTHON38)
def test_python38(supervise, api):
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    proc = supervise(python=str(PYTHON38), KUBEXIT_DEATH_EXIT_CODE="dependency")
    proc.out.wait_for("ready")
    api.watching()
    api.terminate("web", "job", exit_code=3)
    assert finish(proc) == 3


def test_the_watch_is_closed_when_kubexit_ends(supervise, api):
    """Seen while kubexit still runs after Died: its quit call to an endpoint that never
    answers keeps it alive for up to 5 s."""
    api.add_pod("web", containers=["app", "job"], restart_policy="Never")
    with socket.socket() as hanging:
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(8)
        proc = supervise(KUBEXIT_QUIT_URLS="http://127.0.0.1:%d/quit" % hanging.getsockname()[1])
        proc.out.wait_for("ready")
        api.watching()
        proc.stdin.close()  # CMD exits 0 at the end of its stdin
        wait_until(lambda: "Died" in tombstone(supervise.graveyard))
        api.wait_until(lambda s: s.open_watches == 0, 1.0)
        assert proc.poll() is None
    assert finish(proc) == 0


def thread_stats(pid):
    """{tid: (state, voluntary context switches)} of kubexit's threads."""
    stats = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        fields = dict(line.split(":", 1) for line in
                      Path("/proc/%d/task/%s/status" % (pid, tid)).read_text().splitlines())
        stats[int(tid)] = (fields["State"].split()[0], int(fields["voluntary_ctxt_switches"]))
    return stats


def receive_queue(pid, server_port):
    """Bytes waiting unread in kubexit's connections to the API server."""
    waiting = 0
    for line in Path("/proc/%d/net/tcp" % pid).read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        if remote_port == server_port and local_port != server_port:
            waiting += int(fields[4].split(":")[1], 16)
    return waiting


def test_events_that_change_no_dep_do_not_wake_the_event_loop(supervise, api):
    """The follower thread reads every event; the main thread sleeps through them all."""
    api.add_pod("web", containers=["app", "job", "proxy"], restart_policy="Never")
    proc = supervise()
    proc.out.wait_for("ready")
    api.watching()
    wait_until(lambda: len(thread_stats(proc.pid)) == 2 and all(
        state == "S" for state, _ in thread_stats(proc.pid).values()))
    main_before = thread_stats(proc.pid)[proc.pid][1]
    for _ in range(3):
        api.run_container("web", "proxy")
        api.ready("web", "proxy")
        api.run_container("web", "job")
        api.bookmark()
    api.bookmark()  # sent once every event before it has been written to the stream
    wait_until(lambda: len(api.events_sent) == 13)
    wait_until(lambda: receive_queue(proc.pid, api.port) == 0 and all(
        state == "S" for state, _ in thread_stats(proc.pid).values()))
    stats = thread_stats(proc.pid)
    assert stats[proc.pid][1] == main_before
    (follower,) = [switches for tid, (_, switches) in stats.items() if tid != proc.pid]
    assert follower > 0
    api.terminate("web", "job", exit_code=3)
    assert finish(proc) == 0
