"""Scale: 200 other tombstones rewritten 500 times a second while kubexit waits and reacts.

A writer process rewrites the other tombstones atomically (dot-file, then rename) on a
deadline schedule. Meanwhile: the CPU (utime+stime) a waiting kubexit and the baseline
script use over a window, then the reaction median with the same load, as in
bench_reaction.py. `bench_scale.py --writer DIR` is the writer itself.
"""

import os
import signal
import sys
import time

import bench_reaction
import harness

OTHERS = 200
RATE = 500
WINDOW = 5.0
RUNS = 50
BOUND_MS = 2.0
BOUND_CPU = 5.0


def write_forever(graveyard):
    """Rewrite the others at RATE per second until SIGTERM; then print how many writes were made."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    names = ["other-%03d" % number for number in range(OTHERS)]
    start, count = time.monotonic(), 0
    os.write(1, b"R\n")
    try:
        while True:
            harness.write_atomically(
                graveyard, names[count % OTHERS], 'Born: "%.6f"\n' % time.time()
            )
            count += 1
            delay = start + count / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        os.write(1, b"%d %.6f\n" % (count, time.monotonic() - start))


def start_writer(graveyard):
    for number in range(OTHERS):
        harness.write_atomically(graveyard, "other-%03d" % number, harness.BORN_RECORD)
    read_fd, write_fd = os.pipe()
    pid = harness.spawn(
        [sys.executable, os.path.abspath(__file__), "--writer", graveyard], stdout=write_fd
    )
    os.close(write_fd)
    harness.read_line(read_fd, 10.0, "the writer to start")
    return pid, read_fd


def stop_writer(pid, read_fd):
    os.kill(pid, signal.SIGTERM)
    count, elapsed = harness.read_line(read_fd, 10.0, "the writer's count").split()
    harness.wait_exit(pid)
    os.close(read_fd)
    return int(count) / float(elapsed)


def cpu_percent(python, pyz, space, probe):
    """Percent of one core used by a waiting kubexit and by the baseline, in the same window."""
    supervisors = [
        harness.kubexit_reaction(
            python, pyz, space.graveyard, probe, "dep-cpu-kubexit", "bench-cpu", space.root
        ),
        harness.baseline_reaction(python, space.graveyard, probe, "dep-cpu-baseline", space.root),
    ]
    for supervisor in supervisors:
        supervisor.wait_ready(settle=False)
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    before, start = [harness.cpu_ticks(s.pid) for s in supervisors], time.monotonic()
    time.sleep(WINDOW)
    after, elapsed = [harness.cpu_ticks(s.pid) for s in supervisors], time.monotonic() - start
    for supervisor in supervisors:
        supervisor.trigger()
    return [100.0 * (a - b) / ticks_per_second / elapsed for a, b in zip(after, before)]


def measure_reactions(python, pyz, space, probe):
    kubexit, baseline = [], []
    for run in range(RUNS):
        order = [
            (
                kubexit,
                lambda dep: harness.kubexit_reaction(
                    python, pyz, space.graveyard, probe, dep, "bench", space.root
                ),
            ),
            (
                baseline,
                lambda dep: harness.baseline_reaction(
                    python, space.graveyard, probe, dep, space.root
                ),
            ),
        ]
        if run % 2:
            order.reverse()
        for results, start in order:
            supervisor = start("dep-%d" % run)
            supervisor.wait_ready(settle=False)
            results.append(supervisor.trigger() / 1e6)
    return kubexit, baseline


def main():
    if sys.argv[1:2] == ["--writer"]:
        write_forever(sys.argv[2])
        return
    args = harness.parse_args(__doc__)
    harness.announce("bench_scale", args.python)
    with harness.Workspace() as space:
        probe, probe_name = harness.signal_probe(space.root, args.python)
        writer = start_writer(space.graveyard)
        try:
            cpu, cpu_base = cpu_percent(args.python, args.pyz, space, probe)
            kubexit, baseline = measure_reactions(args.python, args.pyz, space, probe)
        finally:
            rate = stop_writer(*writer)
    load = ", load %d tombstones at %.0f writes/s" % (OTHERS, rate)
    bench_reaction.report_reaction("scale reaction median", kubexit, baseline, BOUND_MS, note=load)
    harness.report(
        "scale supervisor CPU",
        cpu,
        "%",
        "inotify script",
        cpu_base,
        "<=%g%% of a core" % BOUND_CPU,
        cpu <= BOUND_CPU,
        cpu / cpu_base if cpu_base else None,
        note="utime+stime over %g s%s" % (WINDOW, load),
    )


if __name__ == "__main__":
    main()
