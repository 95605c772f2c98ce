"""Reaction: a death dep's tombstone renamed into place, to SIGTERM arriving in CMD.

kubexit and the baseline (inotify_kill.py, the least a supervisor can do) take turns, each
run with a fresh supervisor that has settled (asleep, no context switch for a while)
before the rename. CMD is a probe that blocks SIGTERM, waits for it with sigwaitinfo and
prints the CLOCK_MONOTONIC time it arrived; the rename is stamped with the same clock.
"""

import harness

RUNS = 50
BOUND_MS = 0.5
BOUND_RATIO = 1.6


def measure(python, pyz, runs, space, probe):
    kubexit, baseline = [], []
    for run in range(runs):
        order = [(kubexit, start_kubexit), (baseline, start_baseline)]
        if run % 2:
            order.reverse()
        for results, start in order:
            supervisor = start(python, pyz, space, probe, "dep-%d" % run)
            supervisor.wait_ready()
            results.append(supervisor.trigger() / 1e6)
    return kubexit, baseline


def start_kubexit(python, pyz, space, probe, dep):
    return harness.kubexit_reaction(python, pyz, space.graveyard, probe, dep, "bench", space.root)


def start_baseline(python, pyz, space, probe, dep):
    return harness.baseline_reaction(python, space.graveyard, probe, dep, space.root)


def report_reaction(figure, kubexit, baseline, bound_ms, bound_ratio=None, note=""):
    value, base = harness.median(kubexit), harness.median(baseline)
    ratio = value / base
    ok = value <= bound_ms and (bound_ratio is None or ratio <= bound_ratio)
    bound = "<=%g ms" % bound_ms + (" and <=%gx" % bound_ratio if bound_ratio else "")
    spread = "p90 %.3f ms vs %.3f ms, %d runs" % (
        harness.percentile(kubexit, 0.9),
        harness.percentile(baseline, 0.9),
        len(kubexit),
    )
    harness.report(
        figure, value, "ms", "inotify script", base, bound, ok, ratio, note=spread + note
    )


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_reaction", args.python)
    with harness.Workspace() as space:
        probe, probe_name = harness.signal_probe(space.root, args.python)
        kubexit, baseline = measure(args.python, args.pyz, RUNS, space, probe)
    report_reaction(
        "reaction median", kubexit, baseline, BOUND_MS, BOUND_RATIO, note=", " + probe_name
    )


if __name__ == "__main__":
    main()
