"""Exit statuses (contract section 5): kubexit exits as CMD did, and the tombstone agrees."""

import os
import signal
import subprocess

import pytest
from conftest import clean_environment, kubexit_argv, signal_child_argv

EXIT_STATUSES = range(256)

# Signals whose default action ends the process (some with a core dump).
FATAL_SIGNALS = [
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGILL, signal.SIGABRT,
    signal.SIGFPE, signal.SIGKILL, signal.SIGUSR1, signal.SIGSEGV, signal.SIGUSR2,
    signal.SIGPIPE, signal.SIGALRM, signal.SIGTERM, signal.SIGXCPU, signal.SIGSYS,
    signal.SIGRTMIN, signal.SIGRTMAX,
]


def run_concurrently(graveyard, commands, batch=12):
    """Run kubexit once per (name, argv) pair, a batch at a time; return name -> result."""
    results = {}
    items = list(commands.items())
    for start in range(0, len(items), batch):
        running = []
        for name, argv in items[start:start + batch]:
            env = clean_environment({"KUBEXIT_NAME": name, "KUBEXIT_GRAVEYARD": str(graveyard)})
            proc = subprocess.Popen(
                kubexit_argv(argv), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            running.append((name, proc))
        for name, proc in running:
            stdout, stderr = proc.communicate(timeout=30)
            results[name] = (proc.returncode, stderr)
    return results


def test_exit_statuses_pass_through(pyz, graveyard):
    commands = {"exit-%d" % n: ["sh", "-c", "exit %d" % n] for n in EXIT_STATUSES}
    results = run_concurrently(graveyard, commands)
    for n in EXIT_STATUSES:
        status, stderr = results["exit-%d" % n]
        assert status == n, (n, stderr)
        record = graveyard.record("exit-%d" % n)
        assert record["ExitCode"] == n
        assert "Born" in record and "Died" in record


def test_killed_by_signal_exits_128_plus_signal(pyz, graveyard):
    commands = {"sig-%d" % s: signal_child_argv("die-by", int(s)) for s in FATAL_SIGNALS}
    results = run_concurrently(graveyard, commands)
    for s in FATAL_SIGNALS:
        status, stderr = results["sig-%d" % s]
        assert status == 128 + s, (s, stderr)
        assert graveyard.record("sig-%d" % s)["ExitCode"] == 128 + s
        assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "cmd", ["kubexit-test-no-such-command", "/nonexistent/dir/cmd"], ids=["path", "absolute"]
)
def test_command_not_found_is_127(run_kubexit, graveyard, cmd):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    result = run_kubexit(env, [cmd, "arg"])
    assert result.returncode == 127, result
    assert "Traceback" not in result.stderr
    assert cmd in result.stderr, "the error should name the command"
    # No lock file either: the lock is taken once CMD runs, before Born.
    assert graveyard.names() == ["app"], "temporary files left behind"
    record = graveyard.record("app")
    assert "Died" in record
    assert record["ExitCode"] == 127


def test_command_not_executable_is_126(run_kubexit, graveyard, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o644)
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    for cmd in (str(script), str(tmp_path)):
        result = run_kubexit(env, [cmd])
        assert result.returncode == 126, result
        assert "Traceback" not in result.stderr
        record = graveyard.record("app")
        assert "Died" in record
        assert record["ExitCode"] == 126


def test_cmd_found_on_path(run_kubexit, graveyard, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "kubexit-test-tool"
    tool.write_text("#!/bin/sh\nexit 5\n")
    os.chmod(tool, 0o755)
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "PATH": "%s:%s" % (bin_dir, os.environ["PATH"])}
    result = run_kubexit(env, ["kubexit-test-tool"])
    assert result.returncode == 5, result
