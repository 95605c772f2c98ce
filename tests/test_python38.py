"""The runtime floor: the zipapp works on CPython 3.8 whatever interpreter runs the suite.

The whole suite can run on 3.8 with KUBEXIT_TEST_PYTHON; this smoke test always does.
"""

import pytest
from conftest import PYTHON38, signal_child_argv

needs_38 = pytest.mark.skipif(not PYTHON38.exists(), reason="no CPython 3.8 at %s" % PYTHON38)


@needs_38
def test_version_and_help_on_38(run_kubexit):
    assert run_kubexit({}, ["--version"], python=str(PYTHON38)).returncode == 0
    result = run_kubexit({}, ["--help"], python=str(PYTHON38))
    assert result.returncode == 0 and "KUBEXIT_DEATH_DEPS" in result.stdout, result


@needs_38
def test_exit_status_and_tombstone_on_38(run_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    result = run_kubexit(env, ["sh", "-c", "exit 9"], python=str(PYTHON38))
    assert result.returncode == 9, result
    assert "Traceback" not in result.stderr
    record = graveyard.record("app")
    assert record["ExitCode"] == 9 and "Born" in record and "Died" in record


@needs_38
def test_config_error_on_38(run_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "../x", "KUBEXIT_GRAVEYARD": str(graveyard)}
    result = run_kubexit(env, ["true"], python=str(PYTHON38))
    assert result.returncode == 2, result
    assert result.stderr.startswith("kubexit: ") and "Traceback" not in result.stderr


@needs_38
@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_death_dep_on_38(start_kubexit, graveyard, watch):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_DEATH_DEPS": "job", "KUBEXIT_DEATH_EXIT_CODE": "child",
           "KUBEXIT_GRACE_PERIOD": "300ms"}
    if watch == "poll":
        env.update({"KUBEXIT_WATCH": "poll", "KUBEXIT_POLL_INTERVAL": "50ms"})
    proc = start_kubexit(env, signal_child_argv("wait"), python=str(PYTHON38))
    proc.out.wait_for("ready")
    graveyard.bury("job")
    assert proc.wait(10) == 128 + 15, "\n".join(proc.err.lines)
    assert graveyard.record("app")["ExitCode"] == 128 + 15


@needs_38
def test_signal_forwarding_and_clean_child_on_38(start_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    proc = start_kubexit(env, signal_child_argv("catch-all"), python=str(PYTHON38))
    proc.out.wait_for("ready")
    for signum in (1, 10, 12, 15, 28, 34, 64):
        proc.send_signal(signum)
        proc.out.wait_for("signal %d" % signum)
    proc.stdin.close()
    assert proc.wait(10) == 0, "\n".join(proc.err.lines)


OLD_PYTHONS = sorted(PYTHON38.parent.parent.parent.glob("[23].[0-7].*/bin/python"))


@pytest.mark.skipif(not OLD_PYTHONS, reason="no CPython older than 3.8 under ~/.pyenv")
@pytest.mark.parametrize("python", OLD_PYTHONS, ids=[p.parent.parent.name for p in OLD_PYTHONS])
def test_older_pythons_get_one_line_and_exit_2(run_kubexit, graveyard, python):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    result = run_kubexit(env, ["true"], python=str(python))
    assert result.returncode == 2, result
    assert result.stderr.startswith("kubexit: needs CPython 3.8 or newer, but "), result
    assert len(result.stderr.splitlines()) == 1, result.stderr
