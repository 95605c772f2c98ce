"""Start-up per CPython version: `PY -I -S kubexit.pyz true` against `PY -c pass` for every
interpreter found (pyenv's 3.8+ and /usr/bin/python3), with the pyz as built (a code table
for each version it was given) and with the measuring interpreter's table alone, so that
other versions compile every module they import at each start: the difference is that cost.
"""

import glob
import os
import subprocess
import sys
import tempfile
import time

import harness

ROUNDS = 40
PYENV = os.path.expanduser("~/.pyenv/versions")


def interpreters(measured):
    """One real interpreter per minor version, 3.8 and newer, the measured one first."""
    found, seen = [], set()
    for path in [measured] + sorted(glob.glob(os.path.join(PYENV, "3.*", "bin", "python3"))):
        if not os.access(path, os.X_OK):
            continue
        version = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True).stdout.strip()
        if version and tuple(map(int, version.split("."))) >= (3, 8) and version not in seen:
            seen.add(version)
            found.append((version, path))
    return found


def single_table_pyz(directory):
    """The pyz with this interpreter's code table alone."""
    target = os.path.join(directory, "single-table.pyz")
    subprocess.run([sys.executable, os.path.join(harness.REPO, "build_zipapp.py"), "-o", target],
                   check=True, capture_output=True)
    return target


def run_ms(argv, env):
    start = time.perf_counter()
    pid = harness.spawn(argv, env)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError("%s exited with status %d" % (argv, status))
    return (time.perf_counter() - start) * 1000


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_versions", args.python)
    with harness.Workspace() as space, tempfile.TemporaryDirectory() as build_dir:
        env = harness.kubexit_env(space.graveyard)
        bare = single_table_pyz(build_dir)
        for version, python in interpreters(args.python):
            variants = {
                "pass": [python, "-c", "pass"],
                "shipped": [python, "-I", "-S", args.pyz, "true"],
                "one table": [python, "-I", "-S", bare, "true"],
            }
            times = {label: [] for label in variants}
            for argv in variants.values():
                run_ms(argv, env)
            for _ in range(ROUNDS):
                for label, argv in variants.items():
                    times[label].append(run_ms(argv, env))
            value = harness.median(times["shipped"])
            base = harness.median(times["pass"])
            compiled = harness.median(times["one table"]) - value
            harness.report(
                "start-up on %s" % version, value, "ms", "python -c pass", base, "-", None,
                value / base,
                note="%d runs, %s; without its table: %+.2f ms (compiling)" % (
                    ROUNDS, python, compiled))


if __name__ == "__main__":
    main()
