"""Stop and exit policies (issue 4): exit status after a death-dep stop, the forks'
variables, the stop signal, `all` deaths, whole-tree shutdown, the termination message
and the terminal's foreground group. Black box, through dist/kubexit.pyz."""

import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
import time

import pytest
from conftest import (
    KUBEXIT_PYTHON,
    PYZ,
    assert_still_running,
    clean_environment,
    kubexit_argv,
    signal_child_argv,
    tombstone_text,
    wait_until,
)

GRACE = "300ms"
# CMD's reaction to the stop signal -> its exit status under the `child` policy.
CMD_BEHAVIOUR = {"exit=0": 0, "exit=3": 3, "default": 128 + 15, "print": 128 + 9}


def env_for(graveyard, **extra):
    env = {"KUBEXIT_NAME": "side", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_DEATH_DEPS": "main", "KUBEXIT_GRACE_PERIOD": GRACE}
    env.update(extra)
    return env


def stopped_status(start_kubexit, graveyard, on_term, main_exit_code=5, **extra):
    proc = start_kubexit(env_for(graveyard, **extra), signal_child_argv("wait", "--on-term",
                                                                        on_term))
    proc.out.wait_for("ready")
    graveyard.bury("main", exit_code=main_exit_code)
    status = proc.wait(10)
    assert graveyard.record("side")["ExitCode"] == status
    return status, proc


@pytest.mark.parametrize("on_term", sorted(CMD_BEHAVIOUR))
@pytest.mark.parametrize("policy", ["zero", "child", "dependency", "7", None])
def test_death_exit_code_policy(start_kubexit, graveyard, policy, on_term):
    extra = {} if policy is None else {"KUBEXIT_DEATH_EXIT_CODE": policy}
    status, proc = stopped_status(start_kubexit, graveyard, on_term, **extra)
    expected = {"zero": 0, None: 0, "child": CMD_BEHAVIOUR[on_term], "dependency": 5,
                "7": 7}[policy]
    assert status == expected, "\n".join(proc.err.lines)


@pytest.mark.parametrize("policy, expected", [
    ("zero", 0), ("child", 128 + 15), ("dependency", 5), ("42", 42)])
def test_never_started_under_each_policy(run_kubexit, graveyard, tmp_path, policy, expected):
    graveyard.bury("main", exit_code=5)
    marker = tmp_path / "ran"
    result = run_kubexit(env_for(graveyard, KUBEXIT_DEATH_EXIT_CODE=policy),
                         ["touch", str(marker)])
    assert result.returncode == expected, result.stderr
    assert not marker.exists()
    record = graveyard.record("side")
    assert record["ExitCode"] == expected and "Born" not in record


@pytest.mark.parametrize("variable", ["KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS",
                                      "KUBEXIT_SUPPRESS_STOPPED_EXITCODE"])
@pytest.mark.parametrize("value, expected", [("true", 0), ("false", 128 + 15)])
def test_fork_boolean_aliases(start_kubexit, graveyard, variable, value, expected):
    status, proc = stopped_status(start_kubexit, graveyard, "default", **{variable: value})
    assert status == expected
    assert "unknown variable" not in "\n".join(proc.err.lines)


@pytest.mark.parametrize("variable", ["KUBEXIT_EXIT_CODE_OVERRIDE", "KUBEXIT_CUSTOM_EXIT_CODE"])
def test_fork_override_aliases_fix_every_exit_status(run_kubexit, start_kubexit, graveyard,
                                                    variable):
    plain = {"KUBEXIT_NAME": "solo", "KUBEXIT_GRAVEYARD": str(graveyard), variable: "9"}
    assert run_kubexit(plain, ["sh", "-c", "exit 3"]).returncode == 9
    assert graveyard.record("solo")["ExitCode"] == 9
    assert run_kubexit(plain, ["/nonexistent/cmd"]).returncode == 9
    status, _ = stopped_status(start_kubexit, graveyard, "exit=3", **{variable: "9"})
    assert status == 9


@pytest.mark.parametrize("first, second", [
    ({"KUBEXIT_DEATH_EXIT_CODE": "zero"}, {"KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS": "false"}),
    ({"KUBEXIT_DEATH_EXIT_CODE": "child"}, {"KUBEXIT_SUPPRESS_STOPPED_EXITCODE": "true"}),
    ({"KUBEXIT_DEATH_EXIT_CODE": "zero"}, {"KUBEXIT_EXIT_CODE_OVERRIDE": "3"}),
    ({"KUBEXIT_EXIT_CODE_OVERRIDE": "3"}, {"KUBEXIT_CUSTOM_EXIT_CODE": "4"}),
    ({"KUBEXIT_STOP_SIGNAL": "SIGTERM"}, {"KUBEXIT_STOPSIGNAL": "SIGINT"}),
])
def test_conflicting_settings_name_both_variables(run_kubexit, graveyard, tmp_path, first,
                                                  second):
    marker = tmp_path / "ran"
    result = run_kubexit(env_for(graveyard, **first, **second), ["touch", str(marker)])
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kubexit: "), lines
    for variable in list(first) + list(second):
        assert variable in lines[0]
    assert not marker.exists()


def test_agreeing_aliases_are_no_conflict(start_kubexit, graveyard):
    status, _ = stopped_status(start_kubexit, graveyard, "default",
                               KUBEXIT_DEATH_EXIT_CODE="zero",
                               KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS="true")
    assert status == 0


@pytest.mark.parametrize("variable", ["KUBEXIT_STOP_SIGNAL", "KUBEXIT_STOPSIGNAL"])
@pytest.mark.parametrize("spelling", ["SIGUSR2", "usr2", str(int(signal.SIGUSR2))])
def test_stop_signal_by_name_and_number(start_kubexit, graveyard, variable, spelling):
    proc = start_kubexit(env_for(graveyard, **{variable: spelling}),
                         signal_child_argv("catch-all"))
    proc.out.wait_for("ready")
    graveyard.bury("main")
    proc.out.wait_for("signal %d" % signal.SIGUSR2)
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert "signal 15" not in proc.out.lines


@pytest.mark.parametrize("bad", ["SIGNOPE", "0", "99", "SIGKIL", "STOP"])
def test_bad_stop_signal_is_a_config_error(run_kubexit, graveyard, bad):
    result = run_kubexit(env_for(graveyard, KUBEXIT_STOP_SIGNAL=bad), ["true"])
    assert result.returncode == 2 and "KUBEXIT_STOP_SIGNAL" in result.stderr


def test_death_policy_all_waits_for_every_dep(start_kubexit, graveyard):
    proc = start_kubexit(env_for(graveyard, KUBEXIT_DEATH_DEPS="a,b,c",
                                 KUBEXIT_DEATH_POLICY="all"),
                         signal_child_argv("wait", "--on-term", "exit=0"))
    proc.out.wait_for("ready")
    graveyard.bury("a")
    assert_still_running(proc)
    graveyard.write_atomic("b", tombstone_text(died=True, exit_code=1))
    assert_still_running(proc)
    graveyard.bury("c")
    assert proc.wait(10) == 0
    assert "signal 15" in proc.out.lines


def test_death_policy_any_is_the_default(start_kubexit, graveyard):
    proc = start_kubexit(env_for(graveyard, KUBEXIT_DEATH_DEPS="a,b"),
                         signal_child_argv("wait"))
    proc.out.wait_for("ready")
    graveyard.bury("b")
    assert proc.wait(10) == 0


def start_time(pid):
    """The process's start time, which tells a live process from a reused pid."""
    try:
        with open("/proc/%d/stat" % pid) as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


PIPELINE = """
yes | tail -f /dev/null &
(trap '' TERM; exec sleep 100) &
setsid sh -c 'trap "" TERM; sleep 100 & echo $$ $! > "$0.escapee"; wait' "$1" &
group=$(ps -o pgid= -p $$ | tr -d ' ')
i=0
until [ "$(pgrep -g "$group" | wc -l)" -ge 5 ] || [ $i -ge 500 ]; do i=$((i+1)); sleep 0.01; done
pgrep -g "$group" > "$1.tmp"; mv "$1.tmp" "$1"
trap '' TERM
sleep 100
"""


@pytest.mark.parametrize("group", ["true", "false"])
def test_whole_tree_is_gone_within_the_grace_period(start_kubexit, graveyard, tmp_path, group):
    """A CMD that spawns a pipeline and a setsid escapee, all ignoring SIGTERM where they
    can: nothing survives, and kubexit exits within grace + 1 s of the death."""
    pids_file, escapee_file = tmp_path / "pids", tmp_path / "pids.escapee"
    proc = start_kubexit(env_for(graveyard, KUBEXIT_GRACE_PERIOD="1s",
                                 KUBEXIT_SIGNAL_GROUP=group),
                         ["sh", "-c", PIPELINE, "sh", str(pids_file)])
    wait_until(lambda: pids_file.exists() and escapee_file.exists()
               and len(escapee_file.read_text().split()) == 2, 10)
    pids = [int(p) for p in pids_file.read_text().split() + escapee_file.read_text().split()]
    tree = {pid: start_time(pid) for pid in pids}
    tree = {pid: started for pid, started in tree.items() if started is not None}
    assert len(tree) >= 6, tree  # sh, yes, tail, sleep, the escapee and its sleep
    started = time.monotonic()
    graveyard.bury("main")
    assert proc.wait(10) == 0, "\n".join(proc.err.lines)
    assert time.monotonic() - started < 1 + 1.0
    assert [pid for pid, when in tree.items() if start_time(pid) == when] == []
    assert graveyard.is_dead("side")


def test_leftovers_of_a_cmd_that_exits_on_its_own_are_stopped(start_kubexit, graveyard,
                                                              tmp_path):
    pid_file = tmp_path / "pid"
    proc = start_kubexit({"KUBEXIT_NAME": "solo", "KUBEXIT_GRAVEYARD": str(graveyard),
                          "KUBEXIT_GRACE_PERIOD": "500ms"},
                         ["sh", "-c", 'setsid sleep 100 & echo $! > "$1"; exit 4', "sh",
                          str(pid_file)])
    assert proc.wait(10) == 4
    assert start_time(int(pid_file.read_text())) is None
    assert graveyard.record("solo")["ExitCode"] == 4


def test_termination_message(start_kubexit, run_kubexit, graveyard, tmp_path):
    message = tmp_path / "termination-log"
    status, _ = stopped_status(start_kubexit, graveyard, "default",
                               KUBEXIT_TERMINATION_LOG=str(message))
    assert status == 0
    text = message.read_text()
    assert text.startswith('stopped: death dependency "main" died with exit code 5')
    assert text.count("\n") == 1

    result = run_kubexit({"KUBEXIT_NAME": "solo", "KUBEXIT_GRAVEYARD": str(graveyard),
                          "KUBEXIT_TERMINATION_LOG": str(message)}, ["sh", "-c", "exit 3"])
    assert result.returncode == 3
    assert message.read_text() == "CMD exited with status 3\n"

    silent = tmp_path / "never"
    run_kubexit({"KUBEXIT_NAME": "solo", "KUBEXIT_GRAVEYARD": str(graveyard),
                 "KUBEXIT_TERMINATION_LOG": ""}, ["true"])
    assert not silent.exists()


FOREGROUND_CHILD = """
import os, signal, sys
print("foreground" if os.tcgetpgrp(0) == os.getpgrp() else "background", flush=True)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
print("ready", flush=True)
signal.sigwait({signal.SIGINT})
print("SIGINT", flush=True)
sys.stdin.readline()
"""


def test_ctrl_c_on_a_terminal_reaches_cmd_once(pyz, graveyard):
    """CMD's group gets the terminal (as tini does): one Ctrl-C, one SIGINT in CMD."""
    master, slave = pty.openpty()

    def controlling_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        kubexit_argv([sys.executable, "-c", FOREGROUND_CHILD]),
        env=clean_environment({"KUBEXIT_NAME": "tty", "KUBEXIT_GRAVEYARD": str(graveyard),
                               "KUBEXIT_LOG_LEVEL": "off"}),
        stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal)
    os.close(slave)
    output = b""

    def seen(text):
        nonlocal output
        while text.encode() not in output:
            output += os.read(master, 1024)
        return True

    try:
        wait_until(lambda: seen("ready"), 10)
        assert b"foreground" in output
        os.write(master, b"\x03")
        wait_until(lambda: seen("SIGINT"), 10)
        os.write(master, b"done\n")
        assert proc.wait(10) == 0
        assert output.count(b"SIGINT") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_help_lists_the_fork_aliases(run_kubexit):
    result = run_kubexit({}, ["--help"])
    assert result.returncode == 0
    for variable in ("KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS", "KUBEXIT_SUPPRESS_STOPPED_EXITCODE",
                     "KUBEXIT_EXIT_CODE_OVERRIDE", "KUBEXIT_CUSTOM_EXIT_CODE",
                     "KUBEXIT_STOPSIGNAL"):
        assert variable in result.stdout


def test_a_bug_in_kubexit_leaves_nothing_unsupervised(start_kubexit, graveyard):
    """A failure of kubexit's own (here a death handler that raises, run from the pyz as a
    source checkout would be) kills CMD's tree, records Died with 70 (EX_SOFTWARE), and
    prints the traceback for the bug report: no orphaned CMD, no sibling left waiting."""
    inject = ("import sys; sys.path.insert(0, %r); import kubexit.lifecycle as lifecycle; "
              "lifecycle.Lifecycle._on_death = lambda *args: 1 / 0; "
              "from kubexit.cli import main; sys.exit(main(sys.argv[1:]))" % str(PYZ))
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_DEATH_DEPS": "job"}
    proc = start_kubexit(env, None, argv=[KUBEXIT_PYTHON, "-c", inject]
                         + signal_child_argv("wait", "--on-term", "print"))
    proc.out.wait_for("ready")
    started = proc.err.wait_for(lambda line: "started CMD pid=" in line)
    cmd_pid = int(started.split("pid=")[1].split()[0])
    graveyard.bury("job")
    assert proc.wait(10) == 70
    assert not os.path.exists("/proc/%d" % cmd_pid), "CMD outlived its supervisor"
    record = graveyard.record("app")
    assert record["ExitCode"] == 70 and "Died" in record
    assert any(line.startswith("ZeroDivisionError") for line in proc.err.lines)
    assert "kubexit failed (a bug; please report it" in proc.err.lines[-1]
