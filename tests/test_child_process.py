"""What CMD gets from kubexit (contract section 4): signals, a clean start, its inheritance."""

import json
import os
import signal

import pytest
from conftest import signal_child_argv

# Every catchable signal except SIGCHLD; 32 and 33 are glibc's own and never valid.
FORWARDED_SIGNALS = sorted(
    int(s) for s in signal.valid_signals()
    if 1 <= s <= 64 and s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, 32, 33)
)


@pytest.fixture
def env(graveyard):
    return {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}


def test_signal_list_is_complete():
    assert len(FORWARDED_SIGNALS) == 31 - 3 + 31, FORWARDED_SIGNALS


def test_every_catchable_signal_is_forwarded(start_kubexit, env, graveyard):
    proc = start_kubexit(env, signal_child_argv("catch-all"))
    proc.out.wait_for("ready")
    for signum in FORWARDED_SIGNALS:
        proc.send_signal(signum)
        proc.out.wait_for("signal %d" % signum, timeout=5)
        assert proc.poll() is None, "kubexit exited after signal %d" % signum
    proc.stdin.close()
    assert proc.wait(10) == 0, "\n".join(proc.err.lines)
    received = [line for line in proc.out.lines if line.startswith("signal ")]
    assert received == ["signal %d" % s for s in FORWARDED_SIGNALS]
    assert graveyard.record("app")["ExitCode"] == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT])
def test_signal_that_kills_cmd_sets_128_plus_n(start_kubexit, env, graveyard, signum):
    proc = start_kubexit(env, ["sh", "-c", "ulimit -c 0; echo ready; exec sleep 30"])
    proc.out.wait_for("ready")
    proc.send_signal(signum)
    assert proc.wait(10) == 128 + signum, "\n".join(proc.err.lines)
    assert graveyard.record("app")["ExitCode"] == 128 + signum


def block_and_ignore_signals():
    """What a shell does to a background job, and more: kubexit inherits all of it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM,
                                              signal.SIGALRM, signal.SIGRTMIN + 3})
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTOU, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)


# Signals 32 and 33 are glibc's own (SIGCANCEL, SIGSETXID): sigaction() refuses them, so
# no supervisor using libc (tini, dumb-init, kubexit) can change what it inherited for
# them, and glibc's posix_spawn (GNU make runs recipes with it) leaves them ignored.
GLIBC_INTERNAL = (1 << 31) | (1 << 32)


def proc_status_masks(text):
    masks = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("SigBlk", "SigIgn"):
            masks[key] = int(value.strip(), 16) & ~GLIBC_INTERNAL
    return masks


@pytest.mark.parametrize("inherited", ["clean", "blocked-and-ignored"])
def test_cmd_starts_with_no_blocked_or_ignored_signals(start_kubexit, env, inherited):
    preexec = block_and_ignore_signals if inherited != "clean" else None
    proc = start_kubexit(env, ["cat", "/proc/self/status"], preexec_fn=preexec)
    assert proc.wait(10) == 0, "\n".join(proc.err.lines)
    masks = proc_status_masks(proc.out.text())
    assert masks == {"SigBlk": 0, "SigIgn": 0}, {k: hex(v) for k, v in masks.items()}


def test_stdin_and_stdout_pass_through(start_kubexit, env):
    proc = start_kubexit(env, ["cat"], stream=False)
    data = "".join("line %d with tab\tand ünïcode\n" % i for i in range(2000))
    out, err = proc.communicate(data.encode(), timeout=20)
    assert proc.returncode == 0, err
    assert out.decode() == data, "stdout must carry CMD's output and nothing else"


def test_cmd_stderr_passes_through(start_kubexit, env):
    proc = start_kubexit(env, ["sh", "-c", "echo to-stderr >&2"], stream=False)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out == b""
    assert "to-stderr" in err.decode().splitlines()


def test_cmd_inherits_environment_and_cwd(start_kubexit, env, tmp_path):
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    env.update({"KUBEXIT_TEST_SPACES": " a b ", "PLAIN_VAR": "value=with=equals",
                "UNICODE_VAR": "grüße", "EMPTY_VAR": ""})
    proc = start_kubexit(env, signal_child_argv("environ"), cwd=str(workdir))
    assert proc.wait(10) == 0, "\n".join(proc.err.lines)
    seen = json.loads(proc.out.text())
    assert seen["cwd"] == str(workdir)
    expected = dict(env, PATH=os.environ["PATH"])
    for key, value in expected.items():
        assert seen["env"].get(key) == value, key


def test_no_kubexit_file_descriptors_leak_into_cmd(start_kubexit, env, graveyard):
    env.update({"KUBEXIT_DEATH_DEPS": "job"})
    graveyard.bear("job")
    proc = start_kubexit(env, signal_child_argv("fds"))
    assert proc.wait(10) == 0, "\n".join(proc.err.lines)
    fds = json.loads(proc.out.text())
    assert [fd for fd, _ in fds] == [0, 1, 2], fds


def test_no_file_descriptors_leak_in_poll_mode(start_kubexit, env, graveyard):
    env.update({"KUBEXIT_DEATH_DEPS": "job", "KUBEXIT_WATCH": "poll",
                "KUBEXIT_POLL_INTERVAL": "50ms"})
    proc = start_kubexit(env, signal_child_argv("fds"))
    assert proc.wait(10) == 0, "\n".join(proc.err.lines)
    fds = json.loads(proc.out.text())
    assert [fd for fd, _ in fds] == [0, 1, 2], fds
