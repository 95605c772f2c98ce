"""Run every tests/bench/bench_*.py and print one table of figures, baselines and bounds.

Each script runs as its own process with KUBEXIT_BENCH_JSON=1 and reports its figures as
JSON lines (see harness.report); any other line it prints is shown as is. A missed bound
is marked MISSED in the table but does not fail the run: these are measurements, not
tests. A script that crashes does (exit 1). `--markdown` also writes RESULTS.md.
"""

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time

import harness

ORDER = [
    "bench_startup.py",
    "bench_memory.py",
    "bench_reaction.py",
    "bench_idle.py",
    "bench_scale.py",
]
HEADERS = ["figure", "value", "baseline (same run)", "ratio", "bound", "result", "note"]
SCRIPT_TIMEOUT = 150


def scripts():
    found = sorted(
        os.path.basename(path) for path in glob.glob(os.path.join(harness.BENCH_DIR, "bench_*.py"))
    )
    return [name for name in ORDER if name in found] + [name for name in found if name not in ORDER]


def run_script(name, python, pyz):
    """(figure records, other output lines, error or None) of one script."""
    env = dict(os.environ, KUBEXIT_BENCH_JSON="1")
    argv = [sys.executable, os.path.join(harness.BENCH_DIR, name), "--python", python, "--pyz", pyz]
    records, lines = [], []
    script = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = script.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(script.pid, signal.SIGKILL)
        script.communicate()
        return records, lines, "timed out after %d s" % SCRIPT_TIMEOUT
    for line in stdout.splitlines():
        record = figure_record(line)
        if record is None:
            lines.append(line)
        else:
            records.append(record)
    if script.returncode != 0:
        return records, lines, "exit %d: %s" % (script.returncode, stderr.strip()[-1500:])
    return records, lines, None


def figure_record(line):
    """The figure a line reports (see harness.report), or None for any other output."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "figure" in record else None


def text_table(rows):
    widths = [max(len(row[column]) for row in [HEADERS] + rows) for column in range(len(HEADERS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [HEADERS, ["-" * width for width in widths]] + rows
    )


def markdown_table(rows, context):
    lines = [
        "# kubexit benchmark results",
        "",
        "`make bench` (`python3 tests/bench/run.py --markdown`), %s."
        % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "Every figure beside its baseline measured in the same run.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    lines += [""] + ["- " + line for line in collapse_same_setup(context)] + [""]
    return "\n".join(lines)


def collapse_same_setup(lines):
    """`bench_x: interpreter ...` lines that say the same thing for every script, said once."""
    setups = {line.split(": ", 1)[1] for line in lines if ": interpreter " in line}
    if len(setups) != 1:
        return lines
    return ["all scripts: " + setups.pop()] + [
        line for line in lines if ": interpreter " not in line
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python", help="interpreter to measure (default /usr/bin/python3, else this one)"
    )
    parser.add_argument("--pyz", default=harness.DEFAULT_PYZ, help="the zipapp under test")
    parser.add_argument("--markdown", action="store_true", help="also write tests/bench/RESULTS.md")
    args = parser.parse_args()
    python, pyz = harness.real_interpreter(args.python), harness.ensure_pyz(args.pyz)
    rows, failed = [], False
    # Other work on the machine shows up in every figure; say how busy it was.
    context = ["load average at start %.2f %.2f %.2f" % os.getloadavg()]
    print(context[0], flush=True)
    for name in scripts():
        print("running %s ..." % name, flush=True)
        records, lines, error = run_script(name, python, pyz)
        for line in lines:
            print("  " + line, flush=True)
        context += lines
        rows += [harness.format_cells(record) for record in records]
        if error:
            failed = True
            print("  %s FAILED: %s" % (name, error), flush=True)
            rows.append([name, "-", "-", "-", "-", "FAILED", error.splitlines()[0][:120]])
    print()
    print(text_table(rows))
    missed = [row[0] for row in rows if row[5] == "MISSED"]
    print(
        "\n%d figures, %d missed%s"
        % (len(rows), len(missed), (": " + ", ".join(missed)) if missed else "")
    )
    if args.markdown:
        path = os.path.join(harness.BENCH_DIR, "RESULTS.md")
        with open(path, "w") as out:
            out.write(markdown_table(rows, context))
        print("wrote " + os.path.relpath(path))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
