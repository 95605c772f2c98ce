"""Start-up: `PY kubexit.pyz true` against `PY -c pass`, interleaved runs, wall time.

Also what death deps add to the start (watch set-up and scan), and which heavy standard
library modules the death-dependency path imports (it should import none of them).
"""

import os
import subprocess
import sys
import time
import zipfile

import harness

ROUNDS = 200
BOUND = 1.5
COMPILE = (
    "import py_compile, sys; py_compile.compile(sys.argv[1], sys.argv[2], doraise=True,"
    " invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)"
)
HEAVY = ("ssl", "json", "http", "urllib", "logging", "subprocess")


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
        [python, "-X", "importtime", pyz, "true"],
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


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_startup", args.python)
    with harness.Workspace() as space:
        plain = harness.kubexit_env(space.graveyard)
        with_deps = harness.kubexit_env(space.graveyard, KUBEXIT_DEATH_DEPS="x")
        variants = [
            ("python -c pass", [args.python, "-c", "pass"], plain),
            ("kubexit true", [args.python, args.pyz, "true"], plain),
            ("kubexit true, death deps", [args.python, args.pyz, "true"], with_deps),
        ]
        variants.append(
            ("empty zipapp", [args.python, empty_zipapp(space.root, args.python)], plain)
        )
        check_runs(variants)
        times = {label: [] for label, _, _ in variants}
        for _ in range(5):
            for _label, argv, env in variants:
                timed_run(argv, env)
        for round_number in range(ROUNDS):
            shift = round_number % len(variants)
            for label, argv, env in variants[shift:] + variants[:shift]:
                times[label].append(timed_run(argv, env))
        names, costs = imported_modules(args.python, args.pyz, with_deps)

    base = harness.median(times["python -c pass"])
    base_p90 = harness.percentile(times["python -c pass"], 0.9)

    def report_versus_pass(figure, label, bound, note):
        value = harness.median(times[label])
        ok = None if bound is None else value / base <= bound
        spread = "p90 %.2f ms vs %.2f ms, %d runs" % (
            harness.percentile(times[label], 0.9),
            base_p90,
            ROUNDS,
        )
        harness.report(
            figure,
            value,
            "ms",
            "python -c pass",
            base,
            "-" if bound is None else "<=%.1fx" % bound,
            ok,
            value / base,
            note=spread + note,
        )

    plain = harness.median(times["kubexit true"])
    report_versus_pass("start-up median", "kubexit true", BOUND, "")
    report_versus_pass(
        "start-up with death deps",
        "kubexit true, death deps",
        None,
        ", %+.2f ms over no deps" % (harness.median(times["kubexit true, death deps"]) - plain),
    )
    report_versus_pass(
        "start-up floor (empty zipapp)",
        "empty zipapp",
        None,
        ", any zipapp before its own code runs",
    )
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
