"""kubexit as PID 1 of a new PID namespace reaps orphans and keeps CMD's status exact."""

import os
import shutil
import subprocess

import pytest
from conftest import clean_environment, kubexit_argv, signal_child_argv, wait_until

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")


def as_pid1(args):
    return ["unshare", "--pid", "--fork", "--mount-proc"] + kubexit_argv(args)


def children(pid):
    """(pid, state) of the processes whose parent is `pid`, seen from the host."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


def test_orphans_are_reaped_while_cmd_runs(start_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    proc = start_kubexit(env, None, argv=as_pid1(signal_child_argv("orphans", 8, 42, "--wait")))
    proc.out.wait_for(lambda line: line.startswith("orphans-exited"), timeout=15)
    kubexit_pid = wait_until(lambda: [pid for pid, _ in children(proc.pid)], timeout=5)[0]
    with open("/proc/%d/status" % kubexit_pid) as f:
        nspid = [line.split()[1:] for line in f if line.startswith("NSpid:")][0]
    assert nspid[-1] == "1", "kubexit is not PID 1 in its namespace: %r" % nspid

    def only_cmd_left():
        kids = children(kubexit_pid)
        return len(kids) == 1 and kids[0][1] != "Z"

    wait_until(only_cmd_left, timeout=5,
               message="zombies remain under kubexit: %r" % (children(kubexit_pid),))
    assert proc.poll() is None
    proc.stdin.close()
    assert proc.wait(10) == 42, "\n".join(proc.err.lines)
    assert graveyard.record("app")["ExitCode"] == 42


def test_cmd_status_exact_when_orphans_exit_with_it(run_kubexit, graveyard):
    """CMD exits right after leaving orphans that exit too: reaping them must not
    swallow CMD's own status."""
    for attempt in range(5):
        name = "app-%d" % attempt
        env = clean_environment({"KUBEXIT_NAME": name, "KUBEXIT_GRAVEYARD": str(graveyard)})
        code = 40 + attempt
        result = subprocess.run(as_pid1(signal_child_argv("orphans", 16, code)), env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == code, result
        assert graveyard.record(name)["ExitCode"] == code


def test_signal_status_exact_as_pid1(graveyard):
    env = clean_environment({"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)})
    result = subprocess.run(as_pid1(signal_child_argv("die-by", 10)), env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 128 + 10, result
    assert graveyard.record("app")["ExitCode"] == 128 + 10
