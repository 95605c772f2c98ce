"""Readiness in the graveyard: how soon Ready is recorded, and how soon a dependent starts.

- readiness latency: a tcp:// readiness probe with a 100 ms period; the port starts
  listening at a random moment, and the figure is the time until Ready is in the tombstone
  (the bench polls it every 0.5 ms). The period bounds it: on average half a period.
- graveyard birth reaction: a kubexit with KUBEXIT_BIRTH_DEPS (no API) waits; the dep's
  tombstone gains Ready by rename, and the figure is the time until the dependent's Born
  is on disk (CMD started). Baseline: the same rename seen by a bare inotify wait in this
  process, the least any watcher pays.
"""

import os
import random
import socket
import time

import harness

RUNS = 20
PERIOD = 0.1
READY_RECORD = 'Born: "2026-01-01T00:00:00.1Z"\nReady: "2026-01-01T00:00:00.2Z"\n'


def wait_for_key(graveyard, name, key, timeout=5.0):
    """Monotonic time at which the tombstone first shows `key` (polled every 0.5 ms)."""
    deadline = time.monotonic() + timeout
    while not harness.tombstone_has(graveyard, name, key):
        if time.monotonic() > deadline:
            raise TimeoutError("no %s in %s's tombstone" % (key, name))
        time.sleep(0.0005)
    return time.monotonic()


def read_text(path):
    with open(path) as file:
        return file.read()


def readiness_latency(python, pyz, space, run):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    name = "proxy-%d" % run
    env = harness.kubexit_env(
        space.graveyard, name, KUBEXIT_READINESS_PROBE="tcp://127.0.0.1:%d" % (
            listener.getsockname()[1]), KUBEXIT_READINESS_PERIOD="%gms" % (PERIOD * 1000))
    pid = harness.spawn([python, pyz, "sleep", "30"], env)
    try:
        wait_for_key(space.graveyard, name, "born")
        time.sleep(random.uniform(0.3, 0.3 + PERIOD))  # a random phase within the period
        opened = time.monotonic()
        listener.listen(8)
        return (wait_for_key(space.graveyard, name, "ready") - opened) * 1000
    finally:
        os.kill(pid, 15)
        harness.wait_exit(pid)
        listener.close()


def birth_reaction(python, pyz, space, run):
    dep, name = "dep-%d" % run, "app-%d" % run
    env = harness.kubexit_env(space.graveyard, name, KUBEXIT_BIRTH_DEPS=dep,
                              KUBEXIT_LOG_LEVEL="debug")
    log = os.path.join(space.root, "%s.stderr" % name)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o644)
    pid = harness.spawn([python, pyz, "true"], env, stderr=fd)
    os.close(fd)
    try:
        harness.wait_until(lambda: "waiting for birth deps" in read_text(log), 5, "the wait")
        harness.wait_quiet(pid, 5)  # settled: asleep in epoll
        written = time.monotonic()
        harness.write_atomically(space.graveyard, dep, READY_RECORD)
        return (wait_for_key(space.graveyard, name, "born") - written) * 1000
    finally:
        harness.wait_exit(pid)


def bare_inotify_reaction(space, run):
    """A rename into the graveyard seen by a plain inotify read in this process."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    libc.inotify_add_watch(fd, space.graveyard.encode(), 0x80)  # IN_MOVED_TO
    try:
        written = time.monotonic()
        harness.write_atomically(space.graveyard, "bare-%d" % run, READY_RECORD)
        os.read(fd, 4096)
        return (time.monotonic() - written) * 1000
    finally:
        os.close(fd)


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_probes", args.python)
    with harness.Workspace() as space:
        latency = [readiness_latency(args.python, args.pyz, space, run) for run in range(RUNS)]
        births = [birth_reaction(args.python, args.pyz, space, run) for run in range(RUNS)]
        bare = [bare_inotify_reaction(space, run) for run in range(RUNS)]
    bound = PERIOD * 1000 + 20
    harness.report(
        "readiness latency (port open -> Ready)", harness.median(latency), "ms",
        "half a period", PERIOD * 500, "<=%g ms (period + 20)" % bound,
        harness.percentile(latency, 0.9) <= bound, harness.median(latency) / (PERIOD * 500),
        note="p90 %.1f ms, max %.1f ms, %d runs, tcp:// probe, period %g ms"
        % (harness.percentile(latency, 0.9), max(latency), RUNS, PERIOD * 1000))
    harness.report(
        "graveyard birth (Ready -> CMD born)", harness.median(births), "ms",
        "bare inotify read", harness.median(bare), "<=5 ms", harness.median(births) <= 5,
        harness.median(births) / harness.median(bare),
        note="p90 %.3f ms, %d runs, no API" % (harness.percentile(births, 0.9), RUNS))


if __name__ == "__main__":
    main()
