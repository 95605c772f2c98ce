"""Bad input (contract section 2): one clear line, exit 2, CMD not started; only the
Died record written, so that siblings learn of it."""

import os
import subprocess

import pytest
from conftest import (
    assert_failed_start_record,
    clean_environment,
    kubexit_argv,
    signal_child_argv,
)


def assert_config_error(result, variable, marker, graveyard=None, name="app"):
    """One line, exit 2, CMD not run; in a valid graveyard, a valid `name` left only its
    Died record (None: no valid name, so nothing written)."""
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, "want exactly one line, got %r" % result.stderr
    assert lines[0].startswith("kubexit: "), lines[0]
    assert variable in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not marker.exists(), "CMD ran despite the configuration error"
    if graveyard is not None and os.path.isdir(graveyard):
        assert_failed_start_record(graveyard, name)


@pytest.fixture
def marker(tmp_path):
    """A file that CMD (`touch marker`) would create if it ran."""
    return tmp_path / "cmd-ran"


def test_missing_name(run_kubexit, graveyard, marker):
    result = run_kubexit({"KUBEXIT_GRAVEYARD": str(graveyard)}, ["touch", marker])
    assert_config_error(result, "KUBEXIT_NAME", marker, graveyard, name=None)


@pytest.mark.parametrize(
    "name", ["a/b", "/abs", "..", ".", ".hidden", "x" * 300, "", "a b", "a\nb"],
    ids=["slash", "absolute", "dotdot", "dot", "leading-dot", "300-chars", "empty",
         "space", "newline"],
)
def test_bad_own_name(run_kubexit, graveyard, marker, name):
    env = {"KUBEXIT_NAME": name, "KUBEXIT_GRAVEYARD": str(graveyard)}
    result = run_kubexit(env, ["touch", marker])
    assert_config_error(result, "KUBEXIT_NAME", marker, graveyard, name=None)


@pytest.mark.parametrize("deps", ["ok,../etc", "ok,a/b", "." * 2, ".x", "y" * 300])
@pytest.mark.parametrize("variable", ["KUBEXIT_DEATH_DEPS", "KUBEXIT_BIRTH_DEPS"])
def test_bad_dependency_name(run_kubexit, graveyard, marker, variable, deps):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard), variable: deps}
    assert_config_error(run_kubexit(env, ["touch", marker]), variable, marker, graveyard)


def test_longest_valid_name_is_accepted(run_kubexit, graveyard):
    name = "n" * 253
    result = run_kubexit({"KUBEXIT_NAME": name, "KUBEXIT_GRAVEYARD": str(graveyard)}, ["true"])
    assert result.returncode == 0, result
    assert graveyard.record(name)["ExitCode"] == 0


@pytest.mark.parametrize("value", ["30", "abc", "-1s", "1x", "s", ""])
@pytest.mark.parametrize("variable", ["KUBEXIT_GRACE_PERIOD", "KUBEXIT_BIRTH_TIMEOUT"])
def test_bad_duration(run_kubexit, graveyard, marker, variable, value):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard), variable: value}
    result = run_kubexit(env, ["touch", marker])
    if value == "" and result.returncode == 0:
        return  # an empty variable may mean "default"; if refused, it must be refused properly
    assert_config_error(result, variable, marker, graveyard)
    if value == "30":
        assert "30s" in result.stderr, "the message should suggest the unit"


@pytest.mark.parametrize("value", ["0", "300ms", "1.5s", "2m", "1h2m3s", "10us"])
def test_go_durations_are_accepted(run_kubexit, graveyard, value):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_GRACE_PERIOD": value, "KUBEXIT_BIRTH_TIMEOUT": value}
    result = run_kubexit(env, ["true"])
    assert result.returncode == 0, result


@pytest.mark.parametrize(
    "variable,value",
    [("KUBEXIT_LOG_FORMAT", "xml"), ("KUBEXIT_LOG_LEVEL", "loud"),
     ("KUBEXIT_WATCH", "sometimes"), ("KUBEXIT_POLL_INTERVAL", "abc")],
)
def test_bad_enumerated_setting(run_kubexit, graveyard, marker, variable, value):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard), variable: value}
    assert_config_error(run_kubexit(env, ["touch", marker]), variable, marker, graveyard)


def test_graveyard_that_is_a_file(run_kubexit, tmp_path, marker):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("I am a file\n")
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(not_a_dir)}
    assert_config_error(run_kubexit(env, ["touch", marker]), "KUBEXIT_GRAVEYARD", marker)
    assert not_a_dir.read_text() == "I am a file\n"


def test_graveyard_under_a_file(run_kubexit, tmp_path, marker):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(not_a_dir / "graveyard")}
    assert_config_error(run_kubexit(env, ["touch", marker]), "KUBEXIT_GRAVEYARD", marker)


def test_read_only_graveyard(pyz, tmp_path, marker):
    """Root ignores permission bits, so make the graveyard a read-only mount."""
    graveyard = tmp_path / "ro-graveyard"
    graveyard.mkdir()
    env = clean_environment({"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)})
    mount_then_exec = 'mount -t tmpfs -o ro kubexit-test "$KUBEXIT_GRAVEYARD" && exec "$@"'
    argv = ["unshare", "--mount", "sh", "-c", mount_then_exec, "sh"]
    argv += kubexit_argv(["touch", str(marker)])
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20,
                            stdin=subprocess.DEVNULL)
    assert_config_error(result, "KUBEXIT_GRAVEYARD", marker)


def test_missing_graveyard_is_created(run_kubexit, tmp_path):
    graveyard = tmp_path / "does" / "not" / "exist"
    result = run_kubexit({"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)},
                         ["true"])
    assert result.returncode == 0, result
    assert "Died" in (graveyard / "app").read_text()


def test_unknown_variable_warns_with_closest_name_and_runs_on(run_kubexit, graveyard, marker):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_GRACE_PERIDO": "5s"}
    result = run_kubexit(env, ["touch", marker])
    assert result.returncode == 0, result
    warnings = [line for line in result.stderr.splitlines() if "KUBEXIT_GRACE_PERIDO" in line]
    assert len(warnings) == 1, result.stderr
    assert "KUBEXIT_GRACE_PERIOD" in warnings[0], warnings[0]
    assert marker.exists()


def test_empty_list_items_are_dropped(start_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_DEATH_DEPS": " a,,b , ,", "KUBEXIT_DEATH_EXIT_CODE": "child"}
    proc = start_kubexit(env, signal_child_argv("wait"))
    proc.out.wait_for("ready")
    graveyard.bury("b")
    assert proc.wait(10) == 128 + 15, proc.err.text()
    assert graveyard.record("app")["ExitCode"] == 128 + 15
