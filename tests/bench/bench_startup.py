"""Start-up: `PY -I -S kubexit.pyz true` (as --inject writes it) against `PY -c pass`,
interleaved runs, wall time; and time to exec, from kubexit's start to CMD's first
instruction, against the whole run of an empty zipapp (the floor of any zipapp).

Also the same without -I -S, what death deps add, the Go kubexit when KUBEXIT_BENCH_GO
names its binary, and which heavy standard library modules the death-dependency path
imports (it should import none of them).
"""

import os
import subprocess
import sys
import time
import zipfile

import harness

ROUNDS = 200
BOUND = 1.5
EXEC_BOUND = 1.3
# How --inject runs kubexit: -I keeps the app's PYTHONPATH from kubexit, -S skips site.
DOCUMENTED_FLAGS = ("-I", "-S")
COMPILE = (
    "import py_compile, sys; py_compile.compile(sys.argv[1], sys.argv[2], doraise=True,"
    " invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)"
)
HEAVY = ("ssl", "json", "http", "urllib", "logging", "subprocess", "ctypes", "threading")


def timed_run(argv, env):
    start = time.perf_counter()
    pid = harness.spawn(argv, env)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise RuntimeError("%s exited with status %d" % (argv, status))
    return elapsed * 1000


def empty_zipapp(directory, python):
    """The floor: a zipapp that does nothing still imports runpy before its __main__ runs.

    Its __main__ is precompiled by the measured interpreter, as kubexit's modules are.
    """
    source = os.path.join(directory, "__main__.py")
    with open(source, "w") as main:
        main.write("pass\n")
    compiled = os.path.join(directory, "__main__.pyc")
    subprocess.run(
        [python, "-c", COMPILE, source, compiled],
        check=True,
    )
    target = os.path.join(directory, "empty.pyz")
    with zipfile.ZipFile(target, "w") as archive:
        archive.write(source, "__main__.py")
        archive.write(compiled, "__main__.pyc")
    return target


def check_runs(variants):
    for label, argv, env in variants:
        try:
            result = subprocess.run(argv, env=env, capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            sys.exit("bench_startup: %s did not exit within 10 s" % label)
        if result.returncode != 0:
            sys.exit(
                "bench_startup: %s exited %d: %s"
                % (label, result.returncode, result.stderr.decode()[-2000:])
            )


def imported_modules(python, pyz, env):
    """(top-level names imported, the five largest cumulative import times) from -X importtime."""
    result = subprocess.run(
        [python, "-I", "-S", "-X", "importtime", pyz, "true"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    names, costs = set(), []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, raw_name = line[len("import time:") :].split("|")
            name = raw_name.strip()
            names.add(name.split(".")[0])
            if not raw_name[1:].startswith(" "):
                costs.append((int(cumulative), name))
    return names, sorted(costs, reverse=True)[:5]


def time_to_exec(argv, env):
    """ms from spawning `argv` to the first instruction of its CMD, a probe that prints
    CLOCK_MONOTONIC (the clock time.monotonic_ns reads)."""
    read_fd, write_fd = os.pipe()
    start = time.monotonic_ns()
    pid = harness.spawn(argv, env, stdout=write_fd)
    os.close(write_fd)
    stamp = harness.read_line(read_fd, 10.0, "CMD to start")
    os.close(read_fd)
    os.waitpid(pid, 0)
    return (int(stamp) - start) / 1e6


def go_kubexit():
    """The Go kubexit, when KUBEXIT_BENCH_GO names its binary: shown beside ours."""
    path = os.environ.get("KUBEXIT_BENCH_GO")
    return path if path and os.access(path, os.X_OK) else None


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_startup", args.python)
    python, flags = args.python, list(DOCUMENTED_FLAGS)
    with harness.Workspace() as space:
        plain = harness.kubexit_env(space.graveyard)
        with_deps = harness.kubexit_env(space.graveyard, KUBEXIT_DEATH_DEPS="x")
        empty = empty_zipapp(space.root, python)
        probe, probe_name = harness.start_probe(space.root, python)
        variants = [
            ("python -c pass", [python, "-c", "pass"], plain),
            ("python -I -S -c pass", [python] + flags + ["-c", "pass"], plain),
            ("kubexit true", [python] + flags + [args.pyz, "true"], plain),
            ("kubexit true, plain python", [python, args.pyz, "true"], plain),
            ("kubexit true, death deps", [python] + flags + [args.pyz, "true"], with_deps),
            ("empty zipapp", [python] + flags + [empty], plain),
        ]
        go = go_kubexit()
        if go:
            variants += [("Go kubexit true", [go, "true"], plain),
                         ("Go kubexit true, death deps", [go, "true"], with_deps)]
        check_runs(variants)
        execs = [
            ("to exec", [python] + flags + [args.pyz] + probe, plain),
            ("to exec, death deps", [python] + flags + [args.pyz] + probe, with_deps),
        ]
        if go:
            execs.append(("Go to exec", [go] + probe, plain))
        times = {label: [] for label, _, _ in variants + execs}
        for _ in range(5):
            for _label, argv, env in variants:
                timed_run(argv, env)
        for round_number in range(ROUNDS):
            shift = round_number % len(variants)
            for label, argv, env in variants[shift:] + variants[:shift]:
                times[label].append(timed_run(argv, env))
            for label, argv, env in execs:
                times[label].append(time_to_exec(argv, env))
        names, costs = imported_modules(python, args.pyz, with_deps)

    def report_versus(figure, label, bound, note, against="python -c pass"):
        value, baseline = harness.median(times[label]), harness.median(times[against])
        ok = None if bound is None else value / baseline <= bound
        spread = "p90 %.2f ms vs %.2f ms, %d runs" % (
            harness.percentile(times[label], 0.9),
            harness.percentile(times[against], 0.9),
            ROUNDS,
        )
        harness.report(
            figure,
            value,
            "ms",
            against,
            baseline,
            "-" if bound is None else "<=%.1fx" % bound,
            ok,
            value / baseline,
            note=spread + note,
        )

    plain_median = harness.median(times["kubexit true"])
    report_versus("start-up median", "kubexit true", BOUND,
                  ", python3 -I -S kubexit.pyz (as --inject writes it)")
    report_versus("start-up, python3 kubexit.pyz", "kubexit true, plain python", None,
                  ", with site")
    report_versus(
        "start-up with death deps",
        "kubexit true, death deps",
        None,
        ", %+.2f ms over no deps: the inotify close at exit waits out an SRCU grace period"
        % (harness.median(times["kubexit true, death deps"]) - plain_median),
    )
    report_versus("start-up floor (empty zipapp)", "empty zipapp", None,
                  ", -I -S: runpy and zipimport before any code of its own")
    report_versus("start-up floor (python -I -S)", "python -I -S -c pass", None,
                  ", no site")
    if go:
        report_versus("start-up, Go kubexit", "Go kubexit true", None, ", " + go)
        report_versus("start-up with death deps, Go kubexit", "Go kubexit true, death deps",
                      None, "")
    report_versus("time to exec", "to exec", EXEC_BOUND,
                  ", kubexit's start to CMD's first instruction, %s" % probe_name,
                  against="empty zipapp")
    report_versus("time to exec, death deps", "to exec, death deps", None,
                  ", the watch armed after the exec", against="empty zipapp")
    if go:
        report_versus("time to exec, Go kubexit", "Go to exec", None, "",
                      against="empty zipapp")
    heavy = sorted(name for name in HEAVY if name in names)
    harness.report(
        "start-up heavy imports",
        len(heavy),
        "",
        "",
        None,
        "none of " + ",".join(HEAVY),
        not heavy,
        note=", ".join(heavy) or "none",
    )
    print(
        "bench_startup: largest imports with death deps (cumulative us): %s"
        % ", ".join("%s %d" % (name, cost) for cost, name in costs),
        flush=True,
    )


if __name__ == "__main__":
    main()
