"""Tombstones kubexit reads (contract section 3): Go-written ones, and any junk at all."""

import os

import pytest
from conftest import (
    assert_still_running,
    rfc3339_now,
    signal_child_argv,
    tombstone_text,
    write_tombstone_atomic,
)

SIGTERM_STATUS = 128 + 15


def dep_env(graveyard, watch_env):
    env = {
        "KUBEXIT_NAME": "app",
        "KUBEXIT_GRAVEYARD": str(graveyard),
        "KUBEXIT_DEATH_DEPS": "job",
        "KUBEXIT_DEATH_EXIT_CODE": "child",
        "KUBEXIT_GRACE_PERIOD": "300ms",
    }
    env.update(watch_env)
    return env


def start_waiting(start_kubexit, graveyard, watch_env):
    proc = start_kubexit(dep_env(graveyard, watch_env), signal_child_argv("wait"))
    proc.out.wait_for("ready")
    return proc


def assert_stopped_by_death(proc, graveyard):
    assert proc.wait(10) == SIGTERM_STATUS, "\n".join(proc.err.lines)
    assert graveyard.record("app")["ExitCode"] == SIGTERM_STATUS
    assert "Traceback" not in "\n".join(proc.err.lines)


def test_go_tombstone_written_in_place(start_kubexit, graveyard, watch_env):
    graveyard.write_in_place("job", tombstone_text())
    proc = start_waiting(start_kubexit, graveyard, watch_env)
    assert_still_running(proc)
    graveyard.write_in_place("job", tombstone_text(died=True, exit_code=0))
    assert_stopped_by_death(proc, graveyard)


def test_go_tombstone_caught_empty_and_half_written(start_kubexit, graveyard, watch_env):
    graveyard.write_in_place("job", tombstone_text())
    proc = start_waiting(start_kubexit, graveyard, watch_env)
    full = tombstone_text(died=True, exit_code=0).encode()
    cut = full.index(b"Died") + 2
    fd = os.open(graveyard / "job", os.O_WRONLY | os.O_TRUNC)
    try:
        assert_still_running(proc)  # caught between Go's truncate and its write
        os.write(fd, full[:cut])
        assert_still_running(proc)  # caught half-written: `Born: "..."\nDi`
        os.write(fd, full[cut:])
    finally:
        os.close(fd)
    assert_stopped_by_death(proc, graveyard)


def test_empty_tombstone_means_born(start_kubexit, graveyard, watch_env):
    graveyard.write_in_place("job", "")
    proc = start_waiting(start_kubexit, graveyard, watch_env)
    graveyard.write_atomic("job", "")
    assert_still_running(proc)
    graveyard.bury("job")
    assert_stopped_by_death(proc, graveyard)


def with_times(template):
    """A tombstone text from a template with %(born)s and %(died)s, made when used."""
    return lambda: template % {"born": rfc3339_now(), "died": rfc3339_now()}


DEATH_SPELLINGS = {
    "lowercase-keys": with_times('born: "%(born)s"\ndied: "%(died)s"\nexitcode: 0\n'),
    "upper-keys": with_times('BORN: "%(born)s"\nDIED: "%(died)s"\nEXITCODE: 1\n'),
    "json-object": with_times('{"Born": "%(born)s", "Died": "%(died)s", "ExitCode": 0}'),
    "unquoted": with_times("Born: %(born)s\nDied: %(died)s\nExitCode: 0\n"),
    "single-quoted": with_times("Born: '%(born)s'\nDied: '%(died)s'\n"),
    "unknown-keys": with_times(
        'Born: "%(born)s"\nReason: "OOMKilled"\nDied: "%(died)s"\nExitCode: 137\nX: 1\n'
    ),
    "no-final-newline": with_times('Born: "%(born)s"\nDied: "%(died)s"'),
    "crlf": with_times('Born: "%(born)s"\r\nDied: "%(died)s"\r\nExitCode: 0\r\n'),
    "died-only": with_times('Died: "%(died)s"\n'),
}


@pytest.mark.parametrize("spelling", sorted(DEATH_SPELLINGS))
def test_tolerant_reading_of_a_death(start_kubexit, graveyard, spelling):
    proc = start_waiting(start_kubexit, graveyard, {})
    graveyard.write_in_place("job", DEATH_SPELLINGS[spelling]())
    assert_stopped_by_death(proc, graveyard)


def make_fifo_elsewhere(path):
    target = path.parent.parent / "elsewhere-fifo"
    if not target.exists():
        os.mkfifo(target)
    os.symlink(target, path)


# Each makes `path` something that is not a death, and must never crash or block the watcher.
JUNK = {
    "garbage": lambda p: p.write_text("this is: not\n}{ a tombstone ::\n\tDiedX: maybe\n"),
    "binary": lambda p: p.write_bytes(bytes(range(256)) * 16),
    # Atomic: written in place, a reader could rightly catch the first page, a death.
    "over-64KiB": lambda p: write_tombstone_atomic(
        p, tombstone_text(died=True, exit_code=0) + "#" * 70000
    ),
    "directory": lambda p: p.mkdir(),
    "fifo": lambda p: os.mkfifo(p),
    "dangling-symlink": lambda p: os.symlink(p.parent / "no-such-file", p),
    "symlink-loop": lambda p: os.symlink(p.name, p),
    "symlink-to-fifo": make_fifo_elsewhere,
    "symlink-to-dev-zero": lambda p: os.symlink("/dev/zero", p),
    "symlink-to-directory": lambda p: os.symlink("/", p),
}


def remove(path):
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()


@pytest.mark.parametrize("junk", sorted(JUNK))
def test_junk_dep_tombstone_never_breaks_the_watcher(start_kubexit, graveyard, watch_env, junk):
    proc = start_waiting(start_kubexit, graveyard, watch_env)
    path = graveyard / "job"
    JUNK[junk](path)
    assert_still_running(proc)
    remove(path)
    graveyard.bury("job")
    assert_stopped_by_death(proc, graveyard)


@pytest.mark.parametrize("junk", ["binary", "garbage", "over-64KiB"])
def test_junk_replaced_by_a_death_in_place(start_kubexit, graveyard, junk):
    """Go rewrites in place: a junk regular file that becomes a death counts again."""
    proc = start_waiting(start_kubexit, graveyard, {})
    JUNK[junk](graveyard / "job")
    assert_still_running(proc)
    graveyard.write_in_place("job", tombstone_text(died=True, exit_code=0))
    assert_stopped_by_death(proc, graveyard)


def test_junk_already_there_at_start(start_kubexit, graveyard, watch_env):
    """The initial scan meets every kind of junk, under other names and the dep's own."""
    for junk, make in JUNK.items():
        make(graveyard / ("other-" + junk))
    os.mkfifo(graveyard / "job")
    proc = start_waiting(start_kubexit, graveyard, watch_env)
    assert_still_running(proc)
    remove(graveyard / "job")
    graveyard.bury("job")
    assert_stopped_by_death(proc, graveyard)
