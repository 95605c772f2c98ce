"""Logging (contract section 7): stderr only, recognisable, text or JSON, levels."""

import json

from conftest import signal_child_argv

CMD = ["sh", "-c", "echo child-out; echo child-err >&2; exit 3"]


def kubexit_lines(stderr):
    return [line for line in stderr.splitlines() if line != "child-err"]


def base_env(graveyard, **extra):
    env = {"KUBEXIT_NAME": "web", "KUBEXIT_GRAVEYARD": str(graveyard)}
    env.update(extra)
    return env


def test_text_lines_name_the_process(run_kubexit, graveyard):
    result = run_kubexit(base_env(graveyard), CMD)
    assert result.returncode == 3
    assert result.stdout == "child-out\n"
    lines = kubexit_lines(result.stderr)
    assert lines, "kubexit logged nothing at the default level"
    for line in lines:
        assert "kubexit[web]" in line, line


def test_json_lines_are_objects(start_kubexit, graveyard):
    env = base_env(graveyard, KUBEXIT_LOG_FORMAT="json", KUBEXIT_LOG_LEVEL="debug",
                   KUBEXIT_DEATH_DEPS="job", KUBEXIT_GRACE_PERIDO="1s")
    proc = start_kubexit(env, CMD, stream=False)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 3, err
    assert out.decode() == "child-out\n"
    lines = kubexit_lines(err.decode())
    assert len(lines) >= 2, lines
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "msg"} <= set(record), line
    assert any("KUBEXIT_GRACE_PERIOD" in line for line in lines), "typo warning missing"


def test_level_off_silences_kubexit(run_kubexit, graveyard):
    env = base_env(graveyard, KUBEXIT_LOG_LEVEL="off", KUBEXIT_GRACE_PERIDO="1s")
    result = run_kubexit(env, CMD)
    assert result.returncode == 3
    assert result.stdout == "child-out\n"
    assert result.stderr == "child-err\n"


def test_level_error_hides_warnings_and_info(run_kubexit, graveyard):
    env = base_env(graveyard, KUBEXIT_LOG_LEVEL="error", KUBEXIT_GRACE_PERIDO="1s")
    result = run_kubexit(env, CMD)
    assert result.returncode == 3
    assert result.stderr == "child-err\n"


def test_level_warn_shows_the_typo_warning(run_kubexit, graveyard):
    env = base_env(graveyard, KUBEXIT_LOG_LEVEL="warn", KUBEXIT_GRACE_PERIDO="1s")
    result = run_kubexit(env, CMD)
    assert result.returncode == 3
    lines = kubexit_lines(result.stderr)
    assert any("KUBEXIT_GRACE_PERIOD" in line for line in lines), result.stderr


def test_death_dep_stop_is_logged_on_stderr_only(start_kubexit, graveyard):
    env = base_env(graveyard, KUBEXIT_DEATH_DEPS="job", KUBEXIT_DEATH_EXIT_CODE="child")
    proc = start_kubexit(env, signal_child_argv("wait"))
    proc.out.wait_for("ready")
    graveyard.bury("job")
    assert proc.wait(10) == 128 + 15
    assert proc.out.text() == "ready\n"
    lines = proc.err.lines
    assert any("job" in line for line in lines), "the stop should name the dep: %r" % lines
    for line in lines:
        assert "kubexit[web]" in line, line


def test_a_broken_stderr_neither_stops_kubexit_nor_signals_cmd(start_kubexit, graveyard):
    """Writing to a pipe nobody reads raises SIGPIPE in the writer: kubexit's own log lines
    must not pass that on to CMD, which would die of it (exit 141)."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = start_kubexit(base_env(graveyard, KUBEXIT_LOG_LEVEL="debug"),
                             signal_child_argv("catch-all"), stderr=write_end)
    finally:
        os.close(write_end)
    proc.out.wait_for("ready")
    proc.stdin.close()   # CMD exits 0 at EOF, after any signal it got
    assert proc.wait(10) == 0
    assert proc.out.text() == "ready\n", "CMD got a signal from kubexit"
    assert "ExitCode: 0" in graveyard.read("web")
