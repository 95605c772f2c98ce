"""Idle: context switches of a waiting kubexit (inotify mode) over 5 s, beside the baseline script.

Both supervisors wait on a death dep in the same window, once settled (CMD ready, Born
written, no switch for a while). Counted over every thread of the supervisor itself.
"""

import time

import harness

WINDOW = 5.0


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_idle", args.python)
    with harness.Workspace() as space:
        probe, _ = harness.signal_probe(space.root, args.python)
        kubexit = harness.kubexit_reaction(
            args.python, args.pyz, space.graveyard, probe, "dep-kubexit", "bench", space.root
        )
        baseline = harness.baseline_reaction(
            args.python, space.graveyard, probe, "dep-baseline", space.root
        )
        for supervisor in (kubexit, baseline):
            supervisor.wait_ready()
        before = [harness.context_switches(s.pid) for s in (kubexit, baseline)]
        time.sleep(WINDOW)
        after = [harness.context_switches(s.pid) for s in (kubexit, baseline)]
        for supervisor in (kubexit, baseline):
            supervisor.trigger()
    switches, base = (a - b for a, b in zip(after, before))
    harness.report(
        "idle context switches",
        switches,
        "",
        "inotify script",
        base,
        "0 in %g s" % WINDOW,
        switches == 0,
        note="voluntary+involuntary, all threads",
    )


if __name__ == "__main__":
    main()
