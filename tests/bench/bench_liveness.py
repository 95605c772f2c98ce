"""Liveness lock: a dep's kubexit SIGKILLed with its CMD, to SIGTERM arriving in the watcher's CMD.

A dep kubexit (CMD `sleep`) and a watcher kubexit (CMD the signal probe) share a graveyard;
once the watcher has settled with its lock-wait thread blocked in flock, the test kills the
dep's kubexit and then its CMD, so that no `Died` is ever written, and takes the time from
the first kill to the probe's SIGTERM (same CLOCK_MONOTONIC). The baseline, in the same run
and alternating with it, is the watcher's reaction to an ordinary `Died` renamed into place.
Then idle: context switches of a watcher blocked on a live dep's lock over 5 s, all threads.
"""

import os
import signal
import time

import harness

RUNS = 20
BOUND_MS = 1000.0
WINDOW = 5.0


def start_dep(python, pyz, graveyard, name):
    """A kubexit with a long-lived CMD, once its Born is written (it holds its lock then)."""
    pid = harness.spawn([python, pyz, "sleep", "1000"], harness.kubexit_env(graveyard, name))
    harness.wait_until(lambda: harness.tombstone_has(graveyard, name, "born"), 10.0,
                       "the Born record of " + name)
    return pid


def kill_with_supervisor(pid):
    """SIGKILL the dep's kubexit first, then its CMD: nobody is left to write Died."""
    with open("/proc/%d/task/%d/children" % (pid, pid)) as children:
        cmds = [int(child) for child in children.read().split()]
    os.kill(pid, signal.SIGKILL)
    for cmd in cmds:
        os.kill(cmd, signal.SIGKILL)
    harness.wait_exit(pid)


def watch(python, pyz, space, probe, dep):
    """A settled watcher of `dep`, whose kubexit is already running."""
    watcher = harness.kubexit_reaction(python, pyz, space.graveyard, probe, dep, "bench",
                                       space.root)
    dep_pid = start_dep(python, pyz, space.graveyard, dep)
    watcher.wait_ready()
    harness.wait_until(lambda: len(os.listdir("/proc/%d/task" % watcher.pid)) == 2, 10.0,
                       "the watcher's lock-wait thread")
    harness.wait_quiet(watcher.pid, 10.0)
    return watcher, dep_pid


def crash(watcher, dep_pid):
    """Kill the dep with its supervisor; the ms until SIGTERM arrived in the watcher's CMD."""
    start = time.monotonic_ns()
    kill_with_supervisor(dep_pid)
    arrived = int(harness.read_line(watcher.read_fd, 10.0, "SIGTERM to arrive in the probe"))
    harness.wait_exit(watcher.pid)
    os.close(watcher.read_fd)
    os.unlink(watcher.staged)
    os.unlink(os.path.join(watcher.graveyard, watcher.dep))
    return (arrived - start) / 1e6


def measure(python, pyz, space, probe):
    crashes, renames = [], []
    for run in range(RUNS):
        watcher, dep_pid = watch(python, pyz, space, probe, "dep-%d" % run)
        crashes.append(crash(watcher, dep_pid))
        renamed = harness.kubexit_reaction(python, pyz, space.graveyard, probe,
                                           "dep-renamed-%d" % run, "bench", space.root)
        renamed.wait_ready()
        renames.append(renamed.trigger() / 1e6)
    return crashes, renames


def idle(python, pyz, space, probe):
    """Switches of a watcher blocked on a live dep's lock, and of the baseline script."""
    watcher, dep_pid = watch(python, pyz, space, probe, "dep-idle")
    baseline = harness.baseline_reaction(python, space.graveyard, probe, "dep-baseline",
                                         space.root)
    baseline.wait_ready()
    harness.wait_quiet(watcher.pid, 10.0)
    before = [harness.context_switches(pid) for pid in (watcher.pid, baseline.pid)]
    time.sleep(WINDOW)
    after = [harness.context_switches(pid) for pid in (watcher.pid, baseline.pid)]
    crash(watcher, dep_pid)
    baseline.trigger()
    return [a - b for a, b in zip(after, before)]


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_liveness", args.python)
    with harness.Workspace() as space:
        probe, probe_name = harness.signal_probe(space.root, args.python)
        crashes, renames = measure(args.python, args.pyz, space, probe)
        switches, base = idle(args.python, args.pyz, space, probe)
    value, rename = harness.median(crashes), harness.median(renames)
    harness.report(
        "crash detection median", value, "ms", "Died renamed", rename, "<=%g ms" % BOUND_MS,
        value <= BOUND_MS, value / rename,
        note="p90 %.3f ms, max %.3f ms, %d crashes, %s" % (
            harness.percentile(crashes, 0.9), max(crashes), len(crashes), probe_name))
    harness.report(
        "idle switches, lock wait", switches, "", "inotify script", base, "0 in %g s" % WINDOW,
        switches == 0, note="watcher blocked on a live dep's lock, all threads")


if __name__ == "__main__":
    main()
