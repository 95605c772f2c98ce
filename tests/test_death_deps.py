"""Death dependencies (contract sections 4 and 5), in both watch modes."""

import signal
import time

from conftest import (
    Graveyard,
    assert_still_running,
    kubexit_argv,
    process_state,
    signal_child_argv,
    wait_until,
)

SIGTERM_STATUS = 128 + 15
SIGKILL_STATUS = 128 + 9


def death_env(graveyard, watch_env, deps, **extra):
    env = {
        "KUBEXIT_NAME": "app",
        "KUBEXIT_GRAVEYARD": str(graveyard),
        "KUBEXIT_DEATH_DEPS": deps,
        "KUBEXIT_DEATH_EXIT_CODE": "child",
        "KUBEXIT_GRACE_PERIOD": "300ms",
    }
    env.update(watch_env)
    env.update(extra)
    return env


def assert_exited_as_recorded(proc, graveyard, status, timeout=10):
    assert proc.wait(timeout) == status, "\n".join(proc.err.lines)
    record = graveyard.record("app")
    assert "Born" in record and "Died" in record, record
    assert record["ExitCode"] == status


def test_one_dep_dying_stops_cmd(start_kubexit, graveyard, watch_env):
    graveyard.bear("sidecar-of")
    proc = start_kubexit(death_env(graveyard, watch_env, "sidecar-of"), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    assert_still_running(proc)
    graveyard.bury("sidecar-of")
    assert_exited_as_recorded(proc, graveyard, SIGTERM_STATUS)


def test_any_of_several_deps_stops_cmd(start_kubexit, graveyard, watch_env):
    for name in ("a", "c"):
        graveyard.bear(name)
    proc = start_kubexit(death_env(graveyard, watch_env, "a,b,c"), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    graveyard.bear("b")
    assert_still_running(proc)
    graveyard.bury("b")
    assert_exited_as_recorded(proc, graveyard, SIGTERM_STATUS)
    assert not graveyard.is_dead("a") and not graveyard.is_dead("c")


def test_dep_whose_tombstone_appears_dead(start_kubexit, graveyard, watch_env):
    proc = start_kubexit(death_env(graveyard, watch_env, "job"), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    graveyard.bury("job", exit_code=3)
    assert_exited_as_recorded(proc, graveyard, SIGTERM_STATUS)


def test_unrelated_deaths_do_not_stop_cmd(start_kubexit, graveyard, watch_env):
    proc = start_kubexit(death_env(graveyard, watch_env, "job"), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    for name in ("other", "job-2", "jo", "JOB"):
        graveyard.bury(name)
    graveyard.bury(".job")
    assert_still_running(proc)
    proc.stdin.close()
    assert_exited_as_recorded(proc, graveyard, 0)


def test_dep_already_dead_before_start_prevents_cmd(start_kubexit, graveyard, watch_env, tmp_path):
    marker = tmp_path / "cmd-ran"
    graveyard.bury("job")
    proc = start_kubexit(death_env(graveyard, watch_env, "other,job"), ["touch", marker])
    status = proc.wait(10)
    assert not marker.exists(), "CMD started although a death dep was already dead"
    record = graveyard.record("app")
    assert "Died" in record, record
    assert record["ExitCode"] == status


def test_dep_dying_in_a_graveyard_kubexit_created(start_kubexit, tmp_path, watch_env):
    graveyard = Graveyard(tmp_path / "new" / "graveyard")
    proc = start_kubexit(death_env(graveyard, watch_env, "job"), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    graveyard.bury("job")
    assert_exited_as_recorded(proc, graveyard, SIGTERM_STATUS)


def test_sigkill_after_grace_period(start_kubexit, graveyard, watch_env):
    env = death_env(graveyard, watch_env, "job", KUBEXIT_GRACE_PERIOD="300ms")
    proc = start_kubexit(env, signal_child_argv("wait", "--on-term", "print"))
    proc.out.wait_for("ready")
    died_at = time.monotonic()
    graveyard.bury("job")
    proc.out.wait_for("signal 15")
    assert proc.wait(10) == SIGKILL_STATUS, "\n".join(proc.err.lines)
    elapsed = time.monotonic() - died_at
    assert elapsed >= 0.3, "SIGKILL came %.3fs after the death, before the grace period" % elapsed
    assert elapsed < 5, "SIGKILL came %.3fs after the death" % elapsed
    assert graveyard.record("app")["ExitCode"] == SIGKILL_STATUS


def test_no_sigkill_when_cmd_exits_within_grace(start_kubexit, graveyard, watch_env):
    env = death_env(graveyard, watch_env, "job", KUBEXIT_GRACE_PERIOD="30s")
    proc = start_kubexit(env, signal_child_argv("wait", "--on-term", "exit=7"))
    proc.out.wait_for("ready")
    died_at = time.monotonic()
    graveyard.bury("job")
    assert_exited_as_recorded(proc, graveyard, 7)
    assert time.monotonic() - died_at < 5, "kubexit waited for the grace period"


def test_automatic_fallback_to_polling_without_inotify(start_kubexit, graveyard):
    """In a user namespace allowed no inotify instance, kubexit warns once and polls."""
    env = death_env(graveyard, {"KUBEXIT_POLL_INTERVAL": "50ms"}, "job")
    no_inotify = 'echo 0 > /proc/sys/user/max_inotify_instances && exec "$@"'
    argv = ["unshare", "--user", "--map-root-user", "sh", "-c", no_inotify, "sh"]
    proc = start_kubexit(env, None, argv=argv + kubexit_argv(signal_child_argv("wait")))
    proc.out.wait_for("ready")
    graveyard.bury("job")
    assert_exited_as_recorded(proc, graveyard, SIGTERM_STATUS)
    warnings = [line for line in proc.err.lines if "inotify" in line]
    assert len(warnings) == 1, proc.err.lines
    assert "warn" in warnings[0].lower(), warnings[0]


def test_inotify_queue_overflow_triggers_a_rescan(start_kubexit, graveyard):
    """The dep's death is lost in an overflowing queue; the rescan must still find it."""
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        queue_size = int(f.read())
    proc = start_kubexit(death_env(graveyard, {}, "job"), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: process_state(proc.pid) == "T")
        for i in range(queue_size + 10):
            # Alternate names: inotify merges identical consecutive events.
            with open(graveyard / ("noise-%d" % (i % 2)), "w"):
                pass
        graveyard.bury("job")
    finally:
        proc.send_signal(signal.SIGCONT)
    assert_exited_as_recorded(proc, graveyard, SIGTERM_STATUS)
