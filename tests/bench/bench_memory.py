"""Memory: peak RSS (VmHWM) of kubexit waiting on a death dep, against an idle interpreter."""


import harness

BOUND_MIB = 12.0

def kubexit_peak(python, pyz, graveyard, workdir):
    probe, _ = harness.signal_probe(workdir, python)
    supervisor = harness.kubexit_reaction(python, pyz, graveyard, probe, "dep", "bench", workdir)
    supervisor.wait_ready()
    peak = harness.peak_rss_mib(supervisor.pid)
    supervisor.trigger()
    return peak


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_memory", args.python)
    with harness.Workspace() as space:
        peak = kubexit_peak(args.python, args.pyz, space.graveyard, space.root)
    base = harness.idle_peak(args.python)
    harness.report(
        "memory peak RSS (waiting)",
        peak,
        "MiB",
        "idle python",
        base,
        "<=%g MiB" % BOUND_MIB,
        peak <= BOUND_MIB,
        peak / base,
        note="VmHWM, kubexit's own process",
    )


if __name__ == "__main__":
    main()
