"""A pod's whole life (contract section 8): restarts, final deaths, shutdown order.

A restart is what the kubelet does: a new kubexit of the same name on the same graveyard
after the previous one exited (or was SIGKILLed with its CMD). The sidecar is a real
kubexit whose CMD reports every SIGTERM; it must be stopped exactly on the main's final
death and at no other time.
"""

import signal
import time

import pytest
from conftest import (
    assert_still_running,
    signal_child_argv,
    tombstone_text,
    wait_until,
)
from test_liveness import kill_with_supervisor, lock_file, lock_is_held, start_dep

NON_FINAL = "death dep died, and the kubelet restarts it: CMD keeps running"


def main_env(graveyard, policy, **extra):
    env = {"KUBEXIT_NAME": "main", "KUBEXIT_GRAVEYARD": str(graveyard)}
    if policy is not None:
        env["KUBEXIT_RESTART_POLICY"] = policy
    env.update(extra)
    return env


def start_sidecar(start_kubexit, graveyard, on_term="default", **extra):
    env = {"KUBEXIT_NAME": "sidecar", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_DEATH_DEPS": "main", "KUBEXIT_GRACE_PERIOD": "5s"}
    env.update(extra)
    proc = start_kubexit(env, signal_child_argv("wait", "--on-term", on_term))
    proc.out.wait_for("ready")
    wait_until(lambda: (graveyard / "sidecar").exists())
    return proc


def non_final_deaths(proc):
    return sum(NON_FINAL in line for line in proc.err.lines)


def run_main(run_kubexit, graveyard, policy, code, sidecar=None):
    """One run of the main container; a sidecar, if given, must see it and go on."""
    seen = non_final_deaths(sidecar) if sidecar is not None else 0
    result = run_kubexit(main_env(graveyard, policy), ["sh", "-c", "exit %d" % code])
    assert result.returncode == code, result.stderr
    if sidecar is not None:
        wait_until(lambda: non_final_deaths(sidecar) > seen, 5,
                   message="the sidecar did not log the non-final death: %s"
                   % sidecar.err.lines)
        assert_still_running(sidecar)


def assert_stopped_by(sidecar, exit_code):
    assert sidecar.wait(5) == 0, "\n".join(sidecar.err.lines)
    assert any('death dependency "main" died with exit code %d: stopping CMD' % exit_code
               in line for line in sidecar.err.lines), sidecar.err.lines


@pytest.mark.parametrize("policy", ["Never", "OnFailure", "Always"])
def test_a_main_that_fails_then_succeeds(start_kubexit, run_kubexit, graveyard, policy):
    sidecar = start_sidecar(start_kubexit, graveyard)
    if policy == "Never":
        run_main(run_kubexit, graveyard, policy, 1)
        assert_stopped_by(sidecar, 1)
        return
    run_main(run_kubexit, graveyard, policy, 1, sidecar)
    if policy == "OnFailure":
        run_main(run_kubexit, graveyard, policy, 0)
        assert_stopped_by(sidecar, 0)
    else:  # Always: even success is restarted, so nothing stops the sidecar
        run_main(run_kubexit, graveyard, policy, 0, sidecar)
        sidecar.stdin.close()
        assert sidecar.wait(5) == 0
    assert graveyard.record("main")["Restarts"] == 1


@pytest.mark.parametrize("policy,final", [("Never", True), ("OnFailure", True),
                                          ("Always", False)])
def test_a_main_that_succeeds_at_once(start_kubexit, run_kubexit, graveyard, policy, final):
    sidecar = start_sidecar(start_kubexit, graveyard)
    run_main(run_kubexit, graveyard, policy, 0, None if final else sidecar)
    if final:
        assert_stopped_by(sidecar, 0)


@pytest.mark.parametrize("policy", ["Never", "OnFailure", "Always"])
def test_a_main_killed_with_its_supervisor(start_kubexit, run_kubexit, graveyard, policy):
    sidecar = start_sidecar(start_kubexit, graveyard)
    main = start_kubexit(main_env(graveyard, policy), signal_child_argv("wait"))
    main.out.wait_for("ready")
    wait_until(lambda: (graveyard / "main").exists())   # Born, written after the lock
    assert lock_is_held(lock_file(graveyard, "main"))
    kill_with_supervisor(main)
    wait_until(lambda: any("without writing Died" in line for line in sidecar.err.lines), 5)
    if policy == "Never":
        assert sidecar.wait(5) == 0
        return
    wait_until(lambda: non_final_deaths(sidecar) == 1, 5)
    assert_still_running(sidecar)
    run_main(run_kubexit, graveyard, policy, 0, None if policy == "OnFailure" else sidecar)
    if policy == "OnFailure":
        assert_stopped_by(sidecar, 0)
    assert graveyard.record("main")["Restarts"] == 1


def test_the_start_up_scan_ignores_a_stale_non_final_death(start_kubexit, graveyard):
    graveyard.write_atomic("main", tombstone_text(died=True, exit_code=1)
                           + 'Restarts: 2\nRestartPolicy: "OnFailure"\n')
    sidecar = start_sidecar(start_kubexit, graveyard)
    wait_until(lambda: non_final_deaths(sidecar) == 1, 5)
    assert_still_running(sidecar)


def test_a_go_tombstone_without_the_new_keys_stays_final(run_kubexit, graveyard, tmp_path):
    graveyard.write_atomic("main", tombstone_text(died=True, exit_code=1))
    marker = tmp_path / "cmd-ran"
    result = run_kubexit({"KUBEXIT_NAME": "sidecar", "KUBEXIT_GRAVEYARD": str(graveyard),
                          "KUBEXIT_DEATH_DEPS": "main"}, ["touch", marker])
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert 'not started: death dependency "main" had died with exit code 1' in result.stderr


def test_fifty_rapid_restarts_never_read_as_a_death(start_kubexit, run_kubexit, graveyard):
    """A watcher holds on through 50 runs of a crash-looping dep (exit 1, OnFailure), some
    of them SIGKILLed with their supervisor; none is final, so CMD never gets a signal."""
    sidecar = start_sidecar(start_kubexit, graveyard, on_term="print")
    env = main_env(graveyard, "OnFailure")
    for run in range(50):
        if run % 10 == 9:
            main = start_kubexit(env, signal_child_argv("wait"))
            main.out.wait_for("ready")
            # CMD can print before its kubexit writes Born: killed in between, this run
            # would leave no trace and the count below would be one short.
            wait_until(lambda: "Died" not in graveyard.record("main"))
            kill_with_supervisor(main)
        else:
            assert run_kubexit(env, ["sh", "-c", "exit 1"]).returncode == 1
    assert_still_running(sidecar)
    assert not any("stopping CMD" in line for line in sidecar.err.lines)
    assert graveyard.record("main")["Restarts"] == 49
    assert run_kubexit(env, ["true"]).returncode == 0
    sidecar.out.wait_for("signal 15")
    assert graveyard.record("main")["Restarts"] == 50


def test_a_free_lock_of_an_earlier_run_is_no_crash_of_a_lockless_writer(start_kubexit,
                                                                       graveyard):
    """The dep crashed once under kubexit; now a Go kubexit (no lock) writes its Born."""
    kill_with_supervisor(start_dep(start_kubexit, graveyard, name="main"))
    assert not lock_is_held(lock_file(graveyard, "main"))
    graveyard.write_in_place("main", tombstone_text())
    sidecar = start_sidecar(start_kubexit, graveyard, KUBEXIT_LOG_LEVEL="debug")
    assert_still_running(sidecar)
    assert not any("without writing Died" in line for line in sidecar.err.lines)
    graveyard.write_in_place("main", tombstone_text(died=True, exit_code=0))
    assert_stopped_by(sidecar, 0)


def test_a_configuration_error_in_the_main_stops_its_sidecar(start_kubexit, run_kubexit,
                                                            graveyard):
    sidecar = start_sidecar(start_kubexit, graveyard)
    result = run_kubexit(main_env(graveyard, None, KUBEXIT_GRACE_PERIOD="30"), ["true"])
    assert result.returncode == 2
    assert_stopped_by(sidecar, 2)


def test_a_configuration_error_in_a_birth_dep_ends_the_wait(start_kubexit, run_kubexit,
                                                           graveyard, tmp_path):
    marker = tmp_path / "cmd-ran"
    app = start_kubexit({"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
                         "KUBEXIT_BIRTH_DEPS": "main", "KUBEXIT_BIRTH_TIMEOUT": "60s"},
                        ["touch", marker])
    app.err.wait_for(lambda line: "waiting for birth deps" in line)
    assert run_kubexit(main_env(graveyard, None, KUBEXIT_BIRTH_DEPS="../x"),
                       ["true"]).returncode == 2
    assert app.wait(5) == 1
    assert not marker.exists()
    assert any('birth dependency "main" died for good (with exit code 2' in line
               for line in app.err.lines), app.err.lines


# -- shutdown order ------------------------------------------------------------------


def start_main(start_kubexit, graveyard, policy="Never", on_term="slow-exit=1"):
    main = start_kubexit(main_env(graveyard, policy),
                         signal_child_argv("wait", "--on-term", on_term))
    main.out.wait_for("ready")
    wait_until(lambda: lock_is_held(lock_file(graveyard, "main")))
    return main


def held_sidecar(start_kubexit, graveyard, **extra):
    return start_sidecar(start_kubexit, graveyard, on_term="died?=%s" % (graveyard / "main"),
                         KUBEXIT_SHUTDOWN_ORDER="after-death-deps", **extra)


@pytest.mark.parametrize("policy", ["Never", "Always"])
def test_after_death_deps_the_sidecar_outlives_its_main(start_kubexit, graveyard, policy):
    """Pod deletion: SIGTERM to both at once; the main's CMD takes 1 s to exit. Under
    Always the main's death is final too: the pod is going away."""
    main = start_main(start_kubexit, graveyard, policy)
    sidecar = held_sidecar(start_kubexit, graveyard)
    main.send_signal(signal.SIGTERM)
    sidecar.send_signal(signal.SIGTERM)
    sidecar.err.wait_for(lambda line: "holding SIGTERM back from CMD" in line)
    main.out.wait_for("signal 15")
    assert main.wait(5) == 0
    assert sidecar.wait(5) == 0, "\n".join(sidecar.err.lines)
    assert sidecar.out.lines == ["ready", "signal 15 after Died"]
    assert any("no longer holding SIGTERM back: the death deps have died" in line
               for line in sidecar.err.lines), sidecar.err.lines


def test_the_shutdown_timeout_forwards_the_held_signal(start_kubexit, graveyard):
    main = start_main(start_kubexit, graveyard, on_term="print")  # outlives SIGTERM
    sidecar = held_sidecar(start_kubexit, graveyard, KUBEXIT_SHUTDOWN_TIMEOUT="500ms")
    sent = time.monotonic()
    sidecar.send_signal(signal.SIGTERM)
    assert sidecar.wait(5) == 0
    assert time.monotonic() - sent >= 0.5
    assert sidecar.out.lines == ["ready", "signal 15 before Died"]
    assert any("forwarding the held SIGTERM: the shutdown timeout of 0.5s is over" in line
               for line in sidecar.err.lines), sidecar.err.lines
    assert_still_running(main)


def test_a_second_terminating_signal_forwards_at_once(start_kubexit, graveyard):
    main = start_main(start_kubexit, graveyard, on_term="print")
    sidecar = held_sidecar(start_kubexit, graveyard, KUBEXIT_SHUTDOWN_TIMEOUT="60s")
    sidecar.send_signal(signal.SIGTERM)
    sidecar.err.wait_for(lambda line: "holding SIGTERM back from CMD" in line)
    assert_still_running(sidecar)
    sidecar.send_signal(signal.SIGTERM)
    assert sidecar.wait(5) == 0
    assert sidecar.out.lines[-1] == "signal 15 before Died"
    assert any("no longer holding SIGTERM back: a second SIGTERM arrived" in line
               for line in sidecar.err.lines), sidecar.err.lines
    assert_still_running(main)


def test_no_death_dep_alive_forwards_at_once(start_kubexit, run_kubexit, graveyard):
    sidecar = held_sidecar(start_kubexit, graveyard)
    run_main(run_kubexit, graveyard, "OnFailure", 1, sidecar)  # dead, restarting
    sidecar.send_signal(signal.SIGTERM)
    assert sidecar.wait(5) == 0
    assert sidecar.out.lines[-1] == "signal 15 after Died"
    assert not any("holding" in line for line in sidecar.err.lines)


def test_after_death_deps_without_death_deps_forwards_at_once(start_kubexit, graveyard):
    proc = start_kubexit({"KUBEXIT_NAME": "sidecar", "KUBEXIT_GRAVEYARD": str(graveyard),
                          "KUBEXIT_SHUTDOWN_ORDER": "after-death-deps"},
                         signal_child_argv("wait", "--on-term", "exit=0"))
    proc.out.wait_for("ready")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0, "\n".join(proc.err.lines)
    assert proc.out.lines == ["ready", "signal 15"]
    assert not any("Traceback" in line for line in proc.err.lines)


def test_together_forwards_at_once(start_kubexit, graveyard):
    main = start_main(start_kubexit, graveyard, on_term="print")
    sidecar = start_sidecar(start_kubexit, graveyard, on_term="died?=%s" % (graveyard / "main"))
    sidecar.send_signal(signal.SIGTERM)
    assert sidecar.wait(5) == 0
    assert sidecar.out.lines == ["ready", "signal 15 before Died"]
    assert_still_running(main)


# -- combinations that cannot end well -------------------------------------------------


@pytest.mark.parametrize("env,warning", [
    ({"KUBEXIT_RESTART_POLICY": "OnFailure", "KUBEXIT_DEATH_DEPS": "main",
      "KUBEXIT_DEATH_EXIT_CODE": "child"},
     "KUBEXIT_RESTART_POLICY=OnFailure, and a CMD stopped by its death deps exits non-zero "
     "here (KUBEXIT_DEATH_EXIT_CODE=child)"),
    ({"KUBEXIT_RESTART_POLICY": "OnFailure", "KUBEXIT_DEATH_DEPS": "main",
      "KUBEXIT_EXIT_CODE_OVERRIDE": "3"},
     "KUBEXIT_RESTART_POLICY=OnFailure, and a CMD stopped by its death deps exits non-zero "
     "here (exit code override 3)"),
    ({"KUBEXIT_RESTART_POLICY": "Always", "KUBEXIT_DEATH_DEPS": "main"},
     "KUBEXIT_RESTART_POLICY=Always with KUBEXIT_DEATH_DEPS"),
    ({"KUBEXIT_SHUTDOWN_ORDER": "after-death-deps"},
     "KUBEXIT_SHUTDOWN_ORDER=after-death-deps does nothing without KUBEXIT_DEATH_DEPS"),
])
def test_combinations_that_cannot_end_well_are_warned_of(run_kubexit, graveyard, env, warning):
    env = dict(env, KUBEXIT_NAME="sidecar", KUBEXIT_GRAVEYARD=str(graveyard))
    result = run_kubexit(env, ["true"])
    assert result.returncode == int(env.get("KUBEXIT_EXIT_CODE_OVERRIDE", 0)), result.stderr
    (line,) = [line for line in result.stderr.splitlines() if " warn: " in line]
    assert warning in line, line


@pytest.mark.parametrize("env", [
    {"KUBEXIT_RESTART_POLICY": "OnFailure", "KUBEXIT_DEATH_DEPS": "main"},
    {"KUBEXIT_RESTART_POLICY": "OnFailure", "KUBEXIT_DEATH_DEPS": "main",
     "KUBEXIT_DEATH_EXIT_CODE": "dependency"},
    {"KUBEXIT_RESTART_POLICY": "Never", "KUBEXIT_DEATH_DEPS": "main",
     "KUBEXIT_DEATH_EXIT_CODE": "child", "KUBEXIT_SHUTDOWN_ORDER": "after-death-deps"},
    {"KUBEXIT_RESTART_POLICY": "Always", "KUBEXIT_DEATH_DEPS": "main",
     "KUBEXIT_SHUTDOWN_ORDER": "after-death-deps"},
])
def test_sound_combinations_get_no_warning(run_kubexit, graveyard, env):
    env = dict(env, KUBEXIT_NAME="sidecar", KUBEXIT_GRAVEYARD=str(graveyard))
    result = run_kubexit(env, ["true"])
    assert result.returncode == 0 and " warn: " not in result.stderr, result.stderr


def test_bad_shutdown_settings_are_configuration_errors(run_kubexit, graveyard):
    for variable, value in (("KUBEXIT_SHUTDOWN_ORDER", "sidecar-last"),
                            ("KUBEXIT_SHUTDOWN_TIMEOUT", "20")):
        result = run_kubexit({"KUBEXIT_NAME": "x", "KUBEXIT_GRAVEYARD": str(graveyard),
                              variable: value}, ["true"])
        assert result.returncode == 2 and result.stderr.startswith("kubexit: " + variable)
