"""Liveness locks (issue 5): a dep killed together with its kubexit still counts as dead.

Every kubexit holds an flock on `<graveyard>/.<name>.lock` from before `Born` until
after `Died`; a death watcher blocks on a born-not-died dep's lock, and the lock coming
free without `Died` means the dep's kubexit was killed. The deps here are real kubexits,
killed with SIGKILL together with their CMD, as an OOM kill of the container does.
"""

import fcntl
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    assert_still_running,
    descendants,
    kubexit_argv,
    signal_child_argv,
    tombstone_text,
    wait_until,
)

CRASH_STATUS = 137  # KUBEXIT_DEATH_EXIT_CODE=dependency for a dep killed without Died
DETECTION_BOUND = 1.0


def lock_file(graveyard, name):
    return graveyard / (".%s.lock" % name)


def lock_is_held(path):
    """Whether some process holds the flock; a free lock is released again at once."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def dep_env(graveyard, name="job"):
    return {"KUBEXIT_NAME": name, "KUBEXIT_GRAVEYARD": str(graveyard)}


def watcher_env(graveyard, deps="job", **extra):
    env = {
        "KUBEXIT_NAME": "app",
        "KUBEXIT_GRAVEYARD": str(graveyard),
        "KUBEXIT_DEATH_DEPS": deps,
        "KUBEXIT_DEATH_EXIT_CODE": "dependency",
        "KUBEXIT_GRACE_PERIOD": "2s",
    }
    env.update(extra)
    return env


def start_dep(start_kubexit, graveyard, name="job", argv=None):
    """A dep kubexit whose CMD runs, with its Born written and its lock held."""
    proc = start_kubexit(dep_env(graveyard, name), None,
                         argv=argv or kubexit_argv(signal_child_argv("wait")))
    proc.out.wait_for("ready")
    wait_until(lambda: "Born" in graveyard.read(name) if (graveyard / name).exists() else False)
    assert lock_is_held(lock_file(graveyard, name)), "the dep does not hold its lock"
    return proc


def kill_with_supervisor(proc):
    """SIGKILL the dep's kubexit, then everything below it: nobody is left to write Died."""
    pids = [proc.pid] + descendants(proc.pid)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    proc.wait(5)


def start_watcher(start_kubexit, graveyard, **extra):
    proc = start_kubexit(watcher_env(graveyard, **extra), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    wait_until(lambda: (graveyard / "app").exists())
    return proc


def assert_detects_crash(watcher, dep, graveyard):
    """Kill the dep with its supervisor; the watcher must stop CMD within the bound."""
    assert_still_running(watcher)
    killed_at = time.monotonic()
    kill_with_supervisor(dep)
    status = watcher.wait(5)
    elapsed = time.monotonic() - killed_at
    assert status == CRASH_STATUS, "\n".join(watcher.err.lines)
    assert elapsed < DETECTION_BOUND, "crash detected after %.3fs" % elapsed
    assert "Died" not in graveyard.record("job"), "the killed dep wrote Died"
    assert graveyard.record("app")["ExitCode"] == CRASH_STATUS
    assert any("without writing Died" in line for line in watcher.err.lines), watcher.err.lines


@pytest.mark.parametrize("order", ["dep-first", "watcher-first"])
def test_dep_killed_with_its_supervisor_is_detected(start_kubexit, graveyard, watch_env, order):
    if order == "dep-first":
        dep = start_dep(start_kubexit, graveyard)
        watcher = start_watcher(start_kubexit, graveyard, **watch_env)
    else:  # the lock file appears after the watcher started
        watcher = start_watcher(start_kubexit, graveyard, **watch_env)
        dep = start_dep(start_kubexit, graveyard)
    assert_detects_crash(watcher, dep, graveyard)


def test_crash_detected_across_mount_namespaces(start_kubexit, graveyard, tmp_path):
    """The dep sees the graveyard at another path, in a mount namespace of its own."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bind = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    argv = ["unshare", "--mount", "sh", "-c", bind, "sh", str(graveyard), str(elsewhere)]
    argv += kubexit_argv(signal_child_argv("wait"))
    dep = start_kubexit(dep_env(elsewhere), None, argv=argv)
    dep.out.wait_for("ready")
    wait_until(lambda: (graveyard / "job").exists())
    assert os.listdir(elsewhere) == [], "the bind mount leaked into the test's namespace"
    assert lock_is_held(lock_file(graveyard, "job"))
    watcher = start_watcher(start_kubexit, graveyard)
    assert_detects_crash(watcher, dep, graveyard)


def test_crash_counts_as_one_death_under_the_all_policy(start_kubexit, graveyard):
    deps = [start_dep(start_kubexit, graveyard, name) for name in ("job", "other")]
    watcher = start_watcher(start_kubexit, graveyard, deps="job,other",
                            KUBEXIT_DEATH_POLICY="all")
    kill_with_supervisor(deps[0])
    wait_until(lambda: any("without writing Died" in line for line in watcher.err.lines))
    assert_still_running(watcher)
    deps[1].stdin.close()
    assert deps[1].wait(5) == 0
    assert watcher.wait(5) == 0, "\n".join(watcher.err.lines)  # the last death's code


def test_dep_restarted_after_a_normal_exit_is_alive(start_kubexit, graveyard):
    first = start_dep(start_kubexit, graveyard)
    first.stdin.close()
    assert first.wait(5) == 0
    assert graveyard.is_dead("job")
    assert not lock_is_held(lock_file(graveyard, "job"))
    start_dep(start_kubexit, graveyard)
    assert not graveyard.is_dead("job"), "the restart did not write a fresh record"
    watcher = start_watcher(start_kubexit, graveyard)
    assert_still_running(watcher)


def test_dep_restarted_after_a_crash_is_alive(start_kubexit, graveyard):
    kill_with_supervisor(start_dep(start_kubexit, graveyard))
    second = start_dep(start_kubexit, graveyard, argv=kubexit_argv(
        signal_child_argv("wait", "--on-term", "exit=3")))
    watcher = start_watcher(start_kubexit, graveyard)
    assert_still_running(watcher)
    second.send_signal(signal.SIGTERM)
    assert second.wait(5) == 3
    assert watcher.wait(5) == 3, "\n".join(watcher.err.lines)  # the dep's own exit code
    assert not any("without writing Died" in line for line in watcher.err.lines)


def test_restart_after_the_watcher_saw_the_crash(start_kubexit, graveyard):
    """The dep's fresh record, written while CMD stops, does not undo the crash."""
    dep = start_dep(start_kubexit, graveyard)
    watcher = start_kubexit(watcher_env(graveyard), signal_child_argv("wait", "--on-term", "print"))
    watcher.out.wait_for("ready")
    kill_with_supervisor(dep)
    watcher.out.wait_for("signal 15")
    start_dep(start_kubexit, graveyard)
    watcher.stdin.close()
    assert watcher.wait(5) == CRASH_STATUS, "\n".join(watcher.err.lines)


def test_restart_that_takes_the_lock_first_is_not_a_death(start_kubexit, graveyard):
    """The watcher is stopped while the dep crashes and restarts: when it runs again the
    lock is the new dep's, which is alive, so the watcher keeps waiting."""
    first = start_dep(start_kubexit, graveyard)
    watcher = start_watcher(start_kubexit, graveyard)
    wait_until(lambda: len(os.listdir("/proc/%d/task" % watcher.pid)) == 2)
    watcher.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: set(thread_states(watcher.pid)) == {"T"})
        kill_with_supervisor(first)
        second = start_dep(start_kubexit, graveyard, argv=kubexit_argv(
            signal_child_argv("wait", "--on-term", "exit=3")))
    finally:
        watcher.send_signal(signal.SIGCONT)
    assert_still_running(watcher)
    second.send_signal(signal.SIGTERM)
    assert second.wait(5) == 3
    assert watcher.wait(5) == 3, "\n".join(watcher.err.lines)


def thread_states(pid):
    states = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as stat:
            states.append(stat.read().rsplit(")", 1)[1].split()[0])
    return states


def test_watcher_cmd_inherits_no_lock_wait_files(start_kubexit, graveyard):
    start_dep(start_kubexit, graveyard)
    watcher = start_kubexit(watcher_env(graveyard), signal_child_argv("fds"))
    fds = json.loads(watcher.out.wait_for(lambda line: line.startswith("[")))
    assert [fd for fd, _ in fds] == [0, 1, 2], fds
    assert watcher.wait(5) == 0


def test_dep_crashed_before_the_watcher_started_counts(start_kubexit, run_kubexit, graveyard,
                                                       tmp_path):
    kill_with_supervisor(start_dep(start_kubexit, graveyard))
    marker = tmp_path / "cmd-ran"
    result = run_kubexit(watcher_env(graveyard), ["touch", marker])
    assert result.returncode == CRASH_STATUS, result.stderr
    assert not marker.exists(), "CMD started although its death dep had crashed"
    assert graveyard.record("app")["ExitCode"] == CRASH_STATUS


def test_starting_kubexit_waits_while_a_watcher_holds_its_lock(start_kubexit, graveyard):
    """A watcher holds the lock for a moment; the restarting dep writes no Born until it has
    taken it. (CMD is started first: the lock guards the record, not the exec.)"""
    path = lock_file(graveyard, "job")
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        dep = start_kubexit(dep_env(graveyard), signal_child_argv("wait"))
        window_end = time.monotonic() + 0.3
        while time.monotonic() < window_end:
            assert not (graveyard / "job").exists(), "Born written without the lock"
            time.sleep(0.01)
    finally:
        os.close(fd)
    dep.out.wait_for("ready")
    wait_until(lambda: (graveyard / "job").exists())
    assert lock_is_held(path)
    assert not any("liveness lock" in line for line in dep.err.lines), dep.err.lines


def test_lock_held_by_another_process_for_good(start_kubexit, graveyard):
    """Another live kubexit of the same name: warn once, run CMD without the lock."""
    path = lock_file(graveyard, "job")
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        dep = start_kubexit(dep_env(graveyard), signal_child_argv("wait"))
        dep.out.wait_for("ready", timeout=10)
        assert time.monotonic() - started < 5
        dep.stdin.close()
        assert dep.wait(5) == 0
    finally:
        os.close(fd)
    warnings = [line for line in dep.err.lines if "liveness lock" in line]
    assert len(warnings) == 1 and "warn" in warnings[0], dep.err.lines
    assert graveyard.is_dead("job")


def test_go_style_tombstone_without_lock_file(start_kubexit, graveyard, watch_env):
    """No lock file: the tombstone alone tells, and no thread is started."""
    graveyard.bear("job")
    watcher = start_watcher(start_kubexit, graveyard, **watch_env)
    assert_still_running(watcher)
    assert len(os.listdir("/proc/%d/task" % watcher.pid)) == 1, "a thread for a Go dep"
    graveyard.write_in_place("job", tombstone_text(died=True, exit_code=4))
    assert watcher.wait(5) == 4, "\n".join(watcher.err.lines)


def test_lock_wait_thread_only_while_a_dep_lives(start_kubexit, graveyard):
    watcher = start_watcher(start_kubexit, graveyard)
    assert len(os.listdir("/proc/%d/task" % watcher.pid)) == 1
    start_dep(start_kubexit, graveyard)
    wait_until(lambda: len(os.listdir("/proc/%d/task" % watcher.pid)) == 2,
               message="no lock-wait thread for a live dep")
    # Signals must reach the main thread (the one that acts on them), never the waiter.
    (waiter,) = [tid for tid in os.listdir("/proc/%d/task" % watcher.pid)
                 if int(tid) != watcher.pid]
    with open("/proc/%d/task/%s/status" % (watcher.pid, waiter)) as status:
        blocked = int(dict(line.split(":\t", 1) for line in status)["SigBlk"], 16)
    assert all(blocked & (1 << (signum - 1)) for signum in (signal.SIGTERM, signal.SIGUSR1,
                                                             signal.SIGCHLD, signal.SIGPIPE))
    assert_still_running(watcher)


def test_lock_file_is_a_dot_file_not_inherited_and_released_after_died(start_kubexit,
                                                                         graveyard):
    proc = start_kubexit(dep_env(graveyard), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    path = lock_file(graveyard, "job")
    wait_until(lambda: (graveyard / "job").exists())
    assert [name for name in graveyard.names() if not name.startswith(".")] == ["job"]
    assert lock_is_held(path)
    (cmd,) = descendants(proc.pid)
    fd_dir = "/proc/%d/fd" % cmd
    cmd_files = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
    assert str(path) not in cmd_files, "CMD inherited the lock: %r" % cmd_files
    kubexit_dir = "/proc/%d/fd" % proc.pid
    assert str(path) in [os.readlink(os.path.join(kubexit_dir, fd))
                         for fd in os.listdir(kubexit_dir)]
    # Wait as a watcher does; the lock must come free only once Died is in the tombstone.
    seen = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def wait_for_lock():
        fcntl.flock(fd, fcntl.LOCK_EX)
        seen.append(graveyard.record("job"))
        os.close(fd)

    waiter = threading.Thread(target=wait_for_lock, daemon=True)
    waiter.start()
    proc.stdin.close()
    assert proc.wait(5) == 0
    waiter.join(5)
    assert seen and "Died" in seen[0], "the lock came free before Died: %r" % seen
    assert not lock_is_held(path)


def test_longest_name_gets_a_lock_file_that_fits(start_kubexit, graveyard):
    names = ["a" * 253, "a" * 252 + "b"]  # the same long prefix: two different locks
    procs = [start_kubexit(dep_env(graveyard, name), signal_child_argv("wait")) for name in names]
    for proc, name in zip(procs, names):
        proc.out.wait_for("ready")
        wait_until(lambda name=name: (graveyard / name).exists())
    locks = [name for name in graveyard.names() if name.endswith(".lock")]
    assert len(locks) == 2 and all(len(name) <= 255 for name in locks), locks
    assert all(lock_is_held(graveyard / name) for name in locks)
    for proc in procs:
        assert not any("liveness lock" in line for line in proc.err.lines), proc.err.lines


# Runs argv[1:] with flock(2) failing with ENOLCK, as on a filesystem that refuses locks
# (NFS without a lock manager): a seccomp filter, inherited across exec.
REFUSE_FLOCK = r"""
import ctypes, errno, os, struct, sys
ARCH, NR_FLOCK = {"x86_64": (0xC000003E, 73), "aarch64": (0xC00000B7, 32)}[sys.argv[1]]
ALLOW, REFUSE = 0x7FFF0000, 0x00050000 | errno.ENOLCK
LOAD, JEQ, RET = 0x20, 0x15, 0x06
program = b"".join(struct.pack("HBBI", *insn) for insn in [
    (LOAD, 0, 0, 4), (JEQ, 1, 0, ARCH), (RET, 0, 0, ALLOW),
    (LOAD, 0, 0, 0), (JEQ, 0, 1, NR_FLOCK), (RET, 0, 0, REFUSE), (RET, 0, 0, ALLOW)])
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
libc = ctypes.CDLL(None, use_errno=True)
prog = Program(len(program) // 8, program)
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(prog), 0, 0):
    sys.exit("seccomp: %s" % os.strerror(ctypes.get_errno()))
os.execv(sys.argv[2], sys.argv[2:])
"""


def refusing_flock(argv):
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("no seccomp flock filter for %s" % platform.machine())
    return [sys.executable, "-c", REFUSE_FLOCK, platform.machine()] + argv


def test_seccomp_filter_refuses_flock():
    """The filter itself: flock fails with ENOLCK under it, other calls work."""
    probe = "import fcntl, sys; fcntl.flock(sys.stdin.fileno(), fcntl.LOCK_EX)"
    result = subprocess.run(refusing_flock([sys.executable, "-c", probe]),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert result.returncode != 0 and "No locks available" in result.stderr, result.stderr


def test_runs_without_lock_when_flock_is_refused(start_kubexit, graveyard):
    dep = start_kubexit(dep_env(graveyard), None,
                        argv=refusing_flock(kubexit_argv(signal_child_argv("wait"))))
    dep.out.wait_for("ready")
    wait_until(lambda: (graveyard / "job").exists())
    watcher = start_kubexit(watcher_env(graveyard), None, argv=refusing_flock(
        kubexit_argv(signal_child_argv("wait"))))
    watcher.out.wait_for("ready")
    assert_still_running(watcher)
    dep.stdin.close()
    assert dep.wait(5) == 0
    assert watcher.wait(5) == 0, "\n".join(watcher.err.lines)  # the dep's exit code
    for proc in (dep, watcher):
        warnings = [line for line in proc.err.lines if "running without a liveness lock" in line]
        assert len(warnings) == 1 and "warn" in warnings[0], proc.err.lines
        assert "No locks available" in warnings[0], warnings
    # The watcher also says, once, that it watches the dep by its tombstone alone.
    waits = [line for line in watcher.err.lines if "a dep's liveness lock" in line]
    assert len(waits) == 1 and "No locks available" in waits[0], watcher.err.lines
