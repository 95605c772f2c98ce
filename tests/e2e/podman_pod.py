"""Runs one PodPlan with podman and reads what happened: exit statuses, logs, tombstones.

Every wait has a deadline; `podman wait` blocks on the container itself, and the only
polling (for a log line to appear) checks a condition every 50 ms up to a deadline.
"""

import calendar
import json
import re
import subprocess
import tempfile
import time

from job_to_pod import READER_CONTAINER, READER_MOUNT_ROOT, TEST_LABEL

PODMAN = "podman"
RFC3339 = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)"
TIMESTAMPED_LINE = re.compile("^" + RFC3339 + " (.*)$")
DUMP_TOMBSTONES = """
import json, os, sys
directory = sys.argv[1]
found = {}
for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as stream:
            found[name] = stream.read()
print(json.dumps(found))
"""


class PodmanError(Exception):
    pass


def podman(*args, timeout=60, check=True):
    result = subprocess.run((PODMAN,) + args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise PodmanError("podman %s failed (%d): %s" % (
            " ".join(args[:3]), result.returncode, result.stderr.strip()))
    return result


def rfc3339_ns(text):
    """Nanoseconds since the epoch of an RFC 3339 time (9 fraction digits kept, unlike datetime)."""
    match = re.match("^" + RFC3339 + "$", text)
    if not match:
        raise ValueError("not an RFC 3339 time: %r" % text)
    whole, fraction, zone = match.groups()
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return int(seconds) * 1_000_000_000 + int(((fraction or "") + "000000000")[:9])


def parse_tombstone(text):
    """The `Key: value` lines of a tombstone, keys lower-cased, quotes stripped."""
    record = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            record[key.strip().lower()] = value.strip().strip('"')
    return record


class LogLine:
    def __init__(self, time_ns, text):
        self.time_ns = time_ns
        self.text = text

    def __repr__(self):
        return "LogLine(%d, %r)" % (self.time_ns, self.text)


class PodmanPod:
    """One played pod; `remove()` deletes it and its volumes, whatever state it is in."""

    def __init__(self, plan, run_id):
        self.plan = plan
        self.run_id = run_id
        self.played = False

    def container(self, name):
        return "%s-%s" % (self.plan.name, name)

    def play(self):
        for claim, medium in self.plan.volumes.values():
            options = ["--opt", "type=tmpfs", "--opt", "device=tmpfs"] if medium == "Memory" else []
            podman("volume", "create", "--label", "%s=%s" % (TEST_LABEL, self.run_id),
                   *options, claim)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kubexit-e2e-") as stream:
            stream.write(self.plan.to_yaml())
            stream.flush()
            self.played = True
            # No network but the pod's own loopback, which its containers share.
            podman("kube", "play", "--network", "none", stream.name, timeout=120)

    def wait(self, names, timeout):
        """Exit status of each named container, once all have exited (PodmanError after timeout)."""
        deadline = time.monotonic() + timeout
        statuses = {}
        for name in names:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                result = podman("wait", "--interval", "50ms", self.container(name),
                                timeout=remaining)
            except subprocess.TimeoutExpired:
                raise PodmanError("%s still running after %gs: %s" % (
                    name, timeout, self.describe())) from None
            statuses[name] = int(result.stdout.strip())
        return statuses

    def wait_for_exit(self, name, code, timeout):
        """For a container the pod restarts: (restart count) once it has exited with `code`,
        checked every 50 ms (`podman wait` returns at the first exit)."""
        deadline = time.monotonic() + timeout
        while True:
            result = podman("inspect", "--format",
                            "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
                            self.container(name))
            state, exit_code, restarts = result.stdout.split()
            if state == "exited" and int(exit_code) == code:
                return int(restarts)
            if time.monotonic() > deadline:
                raise PodmanError("%s has not exited with %d after %gs (%s): %s" % (
                    name, code, timeout, result.stdout.strip(), self.describe()))
            time.sleep(0.05)

    def status(self, name):
        result = podman("inspect", "--format", "{{.State.Status}}", self.container(name))
        return result.stdout.strip()

    def logs(self, name):
        """Every line the container wrote (stdout and stderr as they came), with podman's time."""
        result = podman("logs", "--timestamps", self.container(name))
        lines = []
        for raw in (result.stdout + result.stderr).splitlines():
            match = TIMESTAMPED_LINE.match(raw)
            if match:
                stamp = "%s.%s%s" % (match.group(1), match.group(2) or "0", match.group(3))
                lines.append(LogLine(rfc3339_ns(stamp), match.group(4)))
        return sorted(lines, key=lambda line: line.time_ns)

    def wait_for_log(self, name, pattern, timeout):
        """The first line of `name` matching `pattern`, checked every 50 ms up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.logs(name):
                if re.search(pattern, line.text):
                    return line
            if time.monotonic() > deadline:
                raise PodmanError("no line matching %r from %s after %gs: %s" % (
                    pattern, name, timeout, self.describe()))
            time.sleep(0.05)

    def tombstones(self, volume="graveyard"):
        """{name: parsed record} for every tombstone, read through the reader container."""
        result = podman("exec", self.container(READER_CONTAINER), "python3", "-c",
                        DUMP_TOMBSTONES, "%s/%s" % (READER_MOUNT_ROOT, volume))
        found = json.loads(result.stdout)
        return {name: parse_tombstone(text) for name, text in found.items()}

    def wait_for_tombstone(self, name, key, timeout):
        """The tombstone `name` once it has `key` (e.g. "born"), checked every 50 ms."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.tombstones().get(name, {})
            if key in record:
                return record
            if time.monotonic() > deadline:
                raise PodmanError("tombstone %s has no %s after %gs: %s" % (
                    name, key, timeout, self.describe()))
            time.sleep(0.05)

    def kill(self, name, signal):
        podman("kill", "--signal", signal, self.container(name))

    def stop(self, names, timeout_seconds):
        """SIGTERM to each container's PID 1, SIGKILL after the timeout, as the kubelet does."""
        podman("stop", "--time", str(timeout_seconds), *[self.container(n) for n in names],
               timeout=timeout_seconds + 30)

    def shared_namespaces(self):
        result = podman("pod", "inspect", "--format", "{{json .SharedNamespaces}}", self.plan.name)
        return json.loads(result.stdout)

    def describe(self):
        """Each container's state and last log lines, for failure messages."""
        parts = []
        for name in self.plan.container_names():
            try:
                state = self.status(name)
                tail = [line.text for line in self.logs(name)[-8:]]
            except PodmanError as err:
                state, tail = "unknown (%s)" % err, []
            parts.append("\n--- %s: %s\n%s" % (name, state, "\n".join(tail)))
        return "".join(parts)

    def remove(self):
        if self.played:
            podman("pod", "rm", "--force", "--time", "0", self.plan.name, check=False, timeout=60)
        for claim, _ in self.plan.volumes.values():
            podman("volume", "rm", "--force", claim, check=False)
