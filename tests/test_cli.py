"""Invocation (contract section 1): options, usage errors, inspection."""

import json
import os
import re
import subprocess

import pytest
from conftest import (
    KUBEXIT_PYTHON,
    ROOT,
    assert_failed_start_record,
    clean_environment,
    signal_child_argv,
    tombstone_text,
)

SECTION_2_VARIABLES = [
    "KUBEXIT_NAME",
    "KUBEXIT_GRAVEYARD",
    "KUBEXIT_DEATH_DEPS",
    "KUBEXIT_GRACE_PERIOD",
    "KUBEXIT_BIRTH_DEPS",
    "KUBEXIT_BIRTH_TIMEOUT",
    "KUBEXIT_POD_NAME",
    "KUBEXIT_NAMESPACE",
]


def assert_usage_error(result):
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kubexit: "), result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_variable(run_kubexit):
    result = run_kubexit({}, ["--help"])
    assert result.returncode == 0, result
    for variable in SECTION_2_VARIABLES:
        assert variable in result.stdout, variable


def test_the_readme_documents_every_variable_help_lists(run_kubexit):
    """The README's configuration table is the reference: every variable --help lists is a
    row there, and every fork alias is named in the migration section."""
    help_text = run_kubexit({}, ["--help"]).stdout
    own, _, aliases = help_text.partition("the variables of kubexit forks")
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `(KUBEXIT_[A-Z_]+)` \|", readme, re.M))
    own_variables = set(re.findall(r"^  (KUBEXIT_[A-Z_]+)", own, re.M))
    assert len(own_variables) >= 25, help_text
    assert own_variables - table == set()
    for alias in re.findall(r"^  (KUBEXIT_[A-Z_]+)", aliases, re.M):
        assert "`%s`" % alias in readme, alias


def test_version_prints_a_version(run_kubexit):
    result = run_kubexit({}, ["--version"])
    assert result.returncode == 0, result
    assert re.search(r"\d+\.\d+", result.stdout), result.stdout
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout


def test_unknown_option_is_a_usage_error(run_kubexit, graveyard, tmp_path):
    marker = tmp_path / "ran"
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    result = run_kubexit(env, ["--no-such-option", "touch", marker])
    assert_usage_error(result)
    assert not marker.exists()
    assert_failed_start_record(graveyard, "app")


def test_missing_cmd_is_a_usage_error(run_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_RESTART_POLICY": "onfailure"}
    assert_usage_error(run_kubexit(env, []))
    assert_failed_start_record(graveyard, "app", restart_policy="OnFailure")
    assert_usage_error(run_kubexit(env, ["--"]))
    assert_failed_start_record(graveyard, "app", restarts=1, restart_policy="OnFailure")


def test_arguments_after_cmd_reach_cmd_untouched(run_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    args = ["--help", "-v", "--", "--version", "plain", ""]
    result = run_kubexit(env, signal_child_argv("environ", *args))
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["argv"] == args


def test_double_dash_ends_kubexit_options(run_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    result = run_kubexit(env, ["--"] + signal_child_argv("environ", "--help"))
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["argv"] == ["--help"]


def test_pyz_is_executable_with_env_python3_shebang(pyz, graveyard):
    with open(pyz, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"
    assert os.access(pyz, os.X_OK)
    result = subprocess.run(
        [str(pyz), "--version"], capture_output=True, text=True, timeout=20,
        env=clean_environment(),
    )
    assert result.returncode == 0, result


def test_runs_from_source_checkout_as_module(graveyard):
    env = clean_environment({"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)})
    result = subprocess.run(
        [KUBEXIT_PYTHON, "-m", "kubexit", "sh", "-c", "exit 7"],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 7, result
    assert graveyard.record("app")["ExitCode"] == 7


def inspect_rows(stdout):
    lines = [line.split() for line in stdout.splitlines() if line.strip()]
    assert lines[0] == ["NAME", "STATE", "RESTARTS", "BORN", "DIED", "EXIT"], stdout
    return {row[0]: row for row in lines[1:]}


@pytest.fixture
def populated_graveyard(graveyard):
    graveyard.write_atomic("alive", tombstone_text())
    graveyard.write_atomic("gone", tombstone_text(died=True, exit_code=3))
    graveyard.write_atomic("empty", "")
    graveyard.write_atomic("failing", tombstone_text(died=True, exit_code=1)
                           + 'Restarts: 4\nRestartPolicy: "OnFailure"\n')
    graveyard.write_atomic("completed", tombstone_text(died=True, exit_code=0)
                           + 'Restarts: 1\nRestartPolicy: "OnFailure"\n')
    graveyard.write_atomic(".alive.tmp-123", tombstone_text(died=True, exit_code=0))
    return graveyard


def check_inspection(rows):
    assert set(rows) == {"alive", "gone", "empty", "failing", "completed"}, rows
    assert rows["alive"][1:3] == ["running", "-"]
    assert rows["empty"][1] == "running"
    assert rows["gone"][1] == "dead"
    assert rows["gone"][-1] == "3"
    assert rows["failing"][1:3] == ["restarting", "4"] and rows["failing"][-1] == "1"
    assert rows["completed"][1:3] == ["dead", "1"]


def test_inspect_lists_tombstones(run_kubexit, populated_graveyard):
    result = run_kubexit({}, ["--inspect", str(populated_graveyard)])
    assert result.returncode == 0, result
    check_inspection(inspect_rows(result.stdout))


def test_inspect_defaults_to_kubexit_graveyard(run_kubexit, populated_graveyard):
    result = run_kubexit({"KUBEXIT_GRAVEYARD": str(populated_graveyard)}, ["--inspect"])
    assert result.returncode == 0, result
    check_inspection(inspect_rows(result.stdout))


def test_inspect_never_blocks_on_odd_files(run_kubexit, graveyard):
    os.mkfifo(graveyard / "fifo")
    (graveyard / "directory").mkdir()
    graveyard.write_atomic("gone", tombstone_text(died=True, exit_code=0))
    result = run_kubexit({}, ["--inspect", str(graveyard)], timeout=10)
    assert result.returncode == 0, result
    rows = inspect_rows(result.stdout)
    assert rows["gone"][1] == "dead"
    for odd in ("fifo", "directory"):
        if odd in rows:
            assert rows[odd][1] == "unreadable", rows[odd]
