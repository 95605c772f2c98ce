"""Tombstones kubexit writes (contract section 3): format, atomicity, restarts."""

import ctypes
import ctypes.util
import json
import os
import re
import struct
from datetime import datetime

from conftest import RFC3339_UTC, signal_child_argv, wait_until

# What Go's time.Time.UnmarshalJSON accepts (time.RFC3339, fraction optional).
GO_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def go_read_tombstone(text):
    """What the Go kubexit's reader needs: sigs.k8s.io/yaml turns `Key: value` lines into
    JSON, then encoding/json fills Born/Died (*time.Time, an RFC 3339 JSON string) and
    ExitCode (*int), matching keys without regard to case, ignoring unknown ones."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(": ")
        assert sep and key == key.strip() and key, "not a YAML `key: value` line: %r" % line
        fields[key.lower()] = value
    record = {}
    for key in ("born", "died"):
        if key in fields:
            value = json.loads(fields[key])
            assert isinstance(value, str) and GO_RFC3339.fullmatch(value), fields[key]
            record[key] = value
    if "exitcode" in fields:
        value = json.loads(fields["exitcode"])
        assert isinstance(value, int) and not isinstance(value, bool), fields["exitcode"]
        record["exitcode"] = value
    return record


def parse_utc(stamp):
    """Seconds since the epoch of an RFC 3339 UTC time with up to 9 fraction digits."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.strptime(whole + "+0000", "%Y-%m-%dT%H:%M:%S%z").timestamp()
    return seconds + float("0." + (fraction or "0"))


def test_finished_tombstone_format(run_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    result = run_kubexit(env, ["sh", "-c", "exit 3"])
    assert result.returncode == 3, result
    text = graveyard.read("app")
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 5, text
    born = re.fullmatch(r'Born: "(.*)"', lines[0])
    died = re.fullmatch(r'Died: "(.*)"', lines[1])
    assert born and RFC3339_UTC.fullmatch(born.group(1)), lines[0]
    assert died and RFC3339_UTC.fullmatch(died.group(1)), lines[1]
    assert lines[2:] == ["ExitCode: 3", "Restarts: 0", 'RestartPolicy: "Never"']
    assert parse_utc(born.group(1)) <= parse_utc(died.group(1))
    assert go_read_tombstone(text) == {
        "born": born.group(1), "died": died.group(1), "exitcode": 3,
    }


def test_running_tombstone_is_born_only(start_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    proc = start_kubexit(env, signal_child_argv("wait"))
    proc.out.wait_for("ready")
    text = wait_until(lambda: (graveyard / "app").exists() and graveyard.read("app"))
    lines = text.splitlines()
    assert len(lines) == 3 and re.fullmatch(r'Born: "%s"' % RFC3339_UTC.pattern, lines[0]), text
    assert lines[1:] == ["Restarts: 0", 'RestartPolicy: "Never"'], text
    assert set(go_read_tombstone(text)) == {"born"}
    proc.stdin.close()
    assert proc.wait(10) == 0


def test_restart_writes_a_fresh_record(start_kubexit, run_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    assert run_kubexit(env, ["sh", "-c", "exit 4"]).returncode == 4
    first = graveyard.record("app")
    assert first["ExitCode"] == 4
    proc = start_kubexit(env, signal_child_argv("wait"))
    proc.out.wait_for("ready")
    record = wait_until(lambda: graveyard.record("app").get("Born") != first["Born"]
                        and graveyard.record("app"))
    assert set(record) == {"Born", "Restarts", "RestartPolicy"}, record
    assert parse_utc(record["Born"]) >= parse_utc(first["Died"])
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert graveyard.record("app")["ExitCode"] == 0


def test_restarts_count_up_across_restarts_and_keep_the_policy(run_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_RESTART_POLICY": "ONFAILURE"}
    for restarts in range(6):
        assert run_kubexit(env, ["sh", "-c", "exit 1"]).returncode == 1
        record = graveyard.record("app")
        assert (record["Restarts"], record["RestartPolicy"]) == (restarts, "OnFailure"), record


def test_a_go_tombstone_counts_as_the_previous_run(run_kubexit, graveyard):
    graveyard.write_atomic("app", 'Born: "2026-01-01T00:00:00Z"\nDied: "2026-01-01T00:00:01Z"\n'
                                  "ExitCode: 1\n")
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
    assert run_kubexit(env, ["true"]).returncode == 0
    assert graveyard.record("app")["Restarts"] == 1


def test_a_bad_restart_policy_is_a_configuration_error(run_kubexit, graveyard):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_RESTART_POLICY": "sometimes"}
    result = run_kubexit(env, ["true"])
    assert result.returncode == 2
    assert result.stderr == ("kubexit: KUBEXIT_RESTART_POLICY='sometimes' is not a restart "
                             "policy; use the pod's restartPolicy: Never, OnFailure or Always\n")


IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x40, 0x80, 0x100
IN_NONBLOCK = os.O_NONBLOCK


class InotifyRecorder:
    """Records every change in a directory, to see how kubexit writes its tombstone."""

    def __init__(self, directory):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(IN_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
        assert libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) >= 0

    def events(self):
        """(mask, name) pairs recorded so far."""
        data = b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            data += chunk
        events, offset = [], 0
        while offset < len(data):
            _, mask, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
            events.append((mask, name))
            offset += 16 + length
        return events

    def close(self):
        os.close(self.fd)


def test_tombstone_is_written_atomically(start_kubexit, graveyard):
    recorder = InotifyRecorder(graveyard)
    try:
        env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard)}
        proc = start_kubexit(env, signal_child_argv("wait"))
        proc.out.wait_for("ready")
        wait_until(lambda: (graveyard / "app").exists())
        proc.stdin.close()
        assert proc.wait(10) == 0
        events = recorder.events()
    finally:
        recorder.close()
    assert graveyard.names() == [".app.lock", "app"], "temporary files left behind"
    renamed_into_place = [mask for mask, name in events if name == "app"]
    assert renamed_into_place and all(mask & IN_MOVED_TO for mask in renamed_into_place), (
        "the tombstone was written in place, not renamed into place: %r" % events
    )
    assert len(renamed_into_place) >= 2, "want a rename for Born and one for Died: %r" % events
    others = {name for _, name in events if name != "app"}
    assert others and all(name.startswith(".") for name in others), others
