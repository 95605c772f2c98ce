"""Memory: peak RSS (VmHWM) of kubexit waiting on a death dep, against an idle interpreter."""

import os
import signal

import harness

BOUND_MIB = 12.0
IDLE_INTERPRETER = "import os, time; os.write(1, b'R\\n'); time.sleep(60)"


def peak_rss_mib(pid):
    return int(harness.proc_status_field(pid, "VmHWM")) / 1024


def kubexit_peak(python, pyz, graveyard, workdir):
    probe, _ = harness.signal_probe(workdir, python)
    supervisor = harness.kubexit_reaction(python, pyz, graveyard, probe, "dep", "bench", workdir)
    supervisor.wait_ready()
    peak = peak_rss_mib(supervisor.pid)
    supervisor.trigger()
    return peak


def idle_peak(python):
    read_fd, write_fd = os.pipe()
    pid = harness.spawn([python, "-c", IDLE_INTERPRETER], stdout=write_fd)
    os.close(write_fd)
    try:
        harness.read_line(read_fd, 10.0, "the idle interpreter")
        harness.wait_quiet(pid, 10.0)
        return peak_rss_mib(pid)
    finally:
        os.close(read_fd)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_memory", args.python)
    with harness.Workspace() as space:
        peak = kubexit_peak(args.python, args.pyz, space.graveyard, space.root)
    base = idle_peak(args.python)
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
