"""What every benchmark shares: the interpreter under test, the pyz, processes, /proc and results.

Benchmarks are black-box: they run the built `dist/kubexit.pyz` as a process on a real
interpreter (never a pyenv shim, which adds tens of milliseconds per start) and read the
kernel's own accounting in /proc. Each figure is reported beside a baseline measured in
the same run. With KUBEXIT_BENCH_JSON=1 (set by run.py) figures are printed as JSON lines
so that run.py can build one table; otherwise as one readable line each.
"""

import argparse
import glob
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(BENCH_DIR))
DEFAULT_PYZ = os.path.join(REPO, "dist", "kubexit.pyz")
INOTIFY_KILL = os.path.join(BENCH_DIR, "inotify_kill.py")

# Blocks SIGTERM, says it is ready, and prints the CLOCK_MONOTONIC time at which SIGTERM arrived.
SIGNAL_PROBE_C = r"""
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    sigset_t set;
    struct timespec ts;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    if (write(1, "R\n", 2) != 2) return 1;
    if (sigwaitinfo(&set, NULL) != SIGTERM) return 1;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
}
"""

SIGNAL_PROBE_PY = (
    "import os, signal, sys, time\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "os.write(1, b'R\\n')\n"
    "signal.sigwaitinfo({signal.SIGTERM})\n"
    "os.write(1, b'%d\\n' % time.monotonic_ns())\n"
)


def parse_args(description, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--python", help="interpreter to measure (default /usr/bin/python3, else this one)"
    )
    parser.add_argument(
        "--pyz", default=DEFAULT_PYZ, help="the zipapp under test (default dist/kubexit.pyz)"
    )
    args = parser.parse_args(argv)
    args.python = real_interpreter(args.python)
    args.pyz = ensure_pyz(args.pyz)
    return args


def real_interpreter(path=None):
    """The interpreter binary itself: a shim in front of it would dominate start-up figures."""
    if path is None:
        path = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    path = shutil.which(path) or path
    if "/shims/" in os.path.realpath(path) or "/shims/" in path:
        sys.exit("bench: %s is a pyenv shim; pass the real interpreter with --python" % path)
    return path


def describe_interpreter(python):
    version = subprocess.run(
        [
            python,
            "-c",
            "import platform; print(platform.python_implementation(), platform.python_version())",
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout.strip()
    return "%s (%s)" % (python, version)


def ensure_pyz(pyz):
    """The pyz to measure; the default one is (re)built when missing or older than its sources."""
    builder = os.path.join(REPO, "build_zipapp.py")
    if pyz == DEFAULT_PYZ and os.path.exists(builder) and is_stale(pyz, builder):
        print("bench: building %s" % os.path.relpath(pyz), file=sys.stderr, flush=True)
        subprocess.run([sys.executable, builder], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(pyz):
        sys.exit("bench: %s does not exist (build it with `python3 build_zipapp.py`)" % pyz)
    return os.path.abspath(pyz)


def is_stale(pyz, builder):
    if not os.path.exists(pyz):
        return True
    sources = [builder] + glob.glob(os.path.join(REPO, "kubexit", "**", "*.py"), recursive=True)
    return max(os.path.getmtime(path) for path in sources) > os.path.getmtime(pyz)


def announce(script, python):
    print(
        "%s: interpreter %s, %s, kernel %s, %d cpus"
        % (script, describe_interpreter(python), cpu_model(), platform.release(), os.cpu_count()),
        flush=True,
    )


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


# ---- results ---------------------------------------------------------------------------


def report(figure, value, unit, baseline_label, baseline, bound, ok, ratio=None, note=""):
    """One figure beside its baseline; `bound` is the readable bound, `ok` whether it holds.

    ok=None marks a figure shown for explanation only, with no bound of its own.
    """
    record = {
        "figure": figure,
        "value": value,
        "unit": unit,
        "baseline_label": baseline_label,
        "baseline": baseline,
        "ratio": ratio,
        "bound": bound,
        "ok": ok,
        "note": note,
    }
    if os.environ.get("KUBEXIT_BENCH_JSON") == "1":
        print(json.dumps(record), flush=True)
    else:
        print(format_line(record), flush=True)


def format_number(value, unit):
    if value is None:
        return "-"
    if isinstance(value, int):
        return "%d %s" % (value, unit) if unit else "%d" % value
    digits = 3 if abs(value) < 1 else 2 if abs(value) < 100 else 1
    return ("%.*f %s" % (digits, value, unit)).strip()


def format_cells(record):
    """figure, value, baseline, ratio, bound, verdict, note: the columns of run.py's table."""
    unit = record["unit"]
    baseline = "-"
    if record["baseline"] is not None:
        baseline = "%s %s" % (record["baseline_label"], format_number(record["baseline"], unit))
    ratio = "-" if record["ratio"] is None else "%.2f" % record["ratio"]
    verdict = {True: "OK", False: "MISSED", None: "info"}[record["ok"]]
    return [
        record["figure"],
        format_number(record["value"], unit),
        baseline,
        ratio,
        record["bound"],
        verdict,
        record["note"],
    ]


def format_line(record):
    _, value, baseline, ratio, bound, verdict, note = format_cells(record)
    if record["baseline"] is not None:
        baseline = "baseline(%s) %s" % (
            record["baseline_label"],
            format_number(record["baseline"], record["unit"]),
        )
    line = "%-34s %10s   %-38s ratio %-5s  bound %s  %s" % (
        record["figure"],
        value,
        baseline,
        ratio,
        bound,
        verdict,
    )
    return line + ("   (%s)" % note if note else "")


def median(values):
    return statistics.median(values)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# ---- processes -------------------------------------------------------------------------


def kubexit_env(graveyard, name="bench", **extra):
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBEXIT_")}
    env.update(KUBEXIT_NAME=name, KUBEXIT_GRAVEYARD=graveyard)
    env.update(extra)
    return env


def spawn(argv, env=None, stdout=None, stderr=None):
    """posix_spawn: no fork of this (bigger) process, and no subprocess module bookkeeping."""
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    for fd, target in ((1, stdout), (2, stderr)):
        if target is None:
            actions.append((os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, target, fd))
    return os.posix_spawn(argv[0], argv, os.environ if env is None else env, file_actions=actions)


def wait_exit(pid, timeout=10.0):
    """Exit status of pid, killing it if it outlives the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError("pid %d did not exit within %.0f s" % (pid, timeout))
        time.sleep(0.001)


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for " + what)
        time.sleep(0.002)


def read_line(fd, timeout, what):
    """One line from a pipe, or a clear error when the writer dies or stays silent."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError("timed out waiting for " + what)
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError("pipe closed while waiting for %s (got %r)" % (what, data))
        data += chunk
    return data.decode().strip()


def signal_probe(workdir, python):
    """argv of a CMD that prints `R` when ready, then the monotonic ns at which SIGTERM arrived."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc:
        source = os.path.join(workdir, "signal_probe.c")
        binary = os.path.join(workdir, "signal_probe")
        with open(source, "w") as out:
            out.write(SIGNAL_PROBE_C)
        subprocess.run([gcc, "-O2", "-o", binary, source], check=True)
        return [binary], "C sigwaitinfo probe"
    return [python, "-c", SIGNAL_PROBE_PY], "Python sigwaitinfo probe (no C compiler)"


START_PROBE_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
}
"""
START_PROBE_PY = "import os, time; os.write(1, b'%d\\n' % time.monotonic_ns())"


def start_probe(workdir, python):
    """argv of a CMD that prints the monotonic ns at which it started."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc:
        source, binary = (
            os.path.join(workdir, "start_probe.c"),
            os.path.join(workdir, "start_probe"),
        )
        with open(source, "w") as out:
            out.write(START_PROBE_C)
        subprocess.run([gcc, "-O2", "-o", binary, source], check=True)
        return [binary], "C probe"
    return [python, "-c", START_PROBE_PY], "Python probe (no C compiler)"


def write_atomically(directory, name, text):
    temp = os.path.join(directory, ".%s.%d.tmp" % (name, os.getpid()))
    with open(temp, "w") as out:
        out.write(text)
    os.rename(temp, os.path.join(directory, name))


DIED_RECORD = (
    'Born: "2026-01-01T00:00:00.000000Z"\nDied: "2026-01-01T00:00:01.000000Z"\nExitCode: 0\n'
)
BORN_RECORD = 'Born: "2026-01-01T00:00:00.000000Z"\n'


class Reaction:
    """One supervisor (kubexit or the baseline script) watching `dep`, with a signal probe as CMD.

    The dep's Died record is written to a dot-file before the supervisor starts, so that the
    timed step is only the rename, exactly as a peer kubexit publishes its death.
    """

    def __init__(self, argv, env, graveyard, dep, born_name=None, stderr_path=None):
        self.graveyard, self.dep, self.born_name = graveyard, dep, born_name
        for stale in (dep, born_name):
            if stale and os.path.exists(os.path.join(graveyard, stale)):
                os.unlink(os.path.join(graveyard, stale))
        self.staged = os.path.join(graveyard, ".%s.staged" % dep)
        with open(self.staged, "w") as out:
            out.write(DIED_RECORD)
        self.read_fd, write_fd = os.pipe()
        err_fd = os.open(stderr_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.pid = spawn(argv, env, stdout=write_fd, stderr=err_fd)
        finally:
            os.close(write_fd)
            os.close(err_fd)
        self.stderr_path = stderr_path

    def wait_ready(self, settle=True, timeout=10.0):
        try:
            if read_line(self.read_fd, timeout, "the probe's ready line") != "R":
                raise RuntimeError("unexpected output from the probe")
            if self.born_name:
                wait_until(
                    lambda: tombstone_has(self.graveyard, self.born_name, "born"),
                    timeout,
                    "the Born record of " + self.born_name,
                )
            if settle:
                wait_quiet(self.pid, timeout)
        except (TimeoutError, EOFError, RuntimeError) as error:
            self.abort()
            raise RuntimeError("%s%s" % (error, self.stderr_tail())) from None

    def trigger(self):
        """Rename the staged record into place; return the ns from the rename to SIGTERM in CMD."""
        start = time.monotonic_ns()
        os.rename(self.staged, os.path.join(self.graveyard, self.dep))
        try:
            arrived = int(read_line(self.read_fd, 10.0, "SIGTERM to arrive in the probe"))
        except (TimeoutError, EOFError) as error:
            self.abort()
            raise RuntimeError("%s%s" % (error, self.stderr_tail())) from None
        wait_exit(self.pid)  # its status is the exit policy's business, not this figure's
        os.close(self.read_fd)
        os.unlink(os.path.join(self.graveyard, self.dep))
        return arrived - start

    def abort(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.read_fd)

    def stderr_tail(self):
        if not self.stderr_path:
            return ""
        with open(self.stderr_path, errors="replace") as err:
            return "; its stderr: " + err.read()[-2000:].strip()


def kubexit_reaction(python, pyz, graveyard, probe, dep, name, workdir):
    env = kubexit_env(graveyard, name, KUBEXIT_DEATH_DEPS=dep)
    return Reaction(
        [python, pyz] + probe,
        env,
        graveyard,
        dep,
        born_name=name,
        stderr_path=os.path.join(workdir, "kubexit.stderr"),
    )


def baseline_reaction(python, graveyard, probe, dep, workdir):
    return Reaction(
        [python, INOTIFY_KILL, graveyard, dep] + probe,
        None,
        graveyard,
        dep,
        stderr_path=os.path.join(workdir, "baseline.stderr"),
    )


def tombstone_has(graveyard, name, key):
    try:
        with open(os.path.join(graveyard, name)) as record:
            return any(line.lower().startswith(key) for line in record)
    except OSError:
        return False


# ---- /proc ----------------------------------------------------------------------------


def proc_status_field(pid, field):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith(field + ":"):
                return line.split()[1]
    raise KeyError(field)


def context_switches(pid):
    """Voluntary plus involuntary switches of every thread of pid (not its children)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as status:
            for line in status:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def thread_states(pid):
    states = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as stat:
            states.append(stat.read().rsplit(")", 1)[1].split()[0])
    return states


def cpu_ticks(pid):
    """utime + stime of pid, all threads, in clock ticks."""
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_quiet(pid, timeout, quiet_for=0.03):
    """Until every thread of pid sleeps and none has been switched in for `quiet_for` seconds."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        now = time.monotonic()
        switches = context_switches(pid)
        if switches != last or any(state != "S" for state in thread_states(pid)):
            last, since = switches, now
        elif now - since >= quiet_for:
            return
        if now > deadline:
            raise TimeoutError("pid %d never settled" % pid)
        time.sleep(0.002)


class Workspace:
    """A temporary directory holding the graveyard and, beside it, the probe and the logs."""

    def __enter__(self):
        self.temp = tempfile.TemporaryDirectory(prefix="kubexit-bench-")
        self.root = self.temp.name
        self.graveyard = os.path.join(self.root, "graveyard")
        os.mkdir(self.graveyard)
        return self

    def __exit__(self, *exc_info):
        self.temp.cleanup()


IDLE_INTERPRETER = "import os, time; os.write(1, b'R\\n'); time.sleep(60)"


def peak_rss_mib(pid):
    return int(proc_status_field(pid, "VmHWM")) / 1024


def idle_peak(python):
    """Peak RSS of an interpreter that does nothing: the memory figures' baseline."""
    read_fd, write_fd = os.pipe()
    pid = spawn([python, "-c", IDLE_INTERPRETER], stdout=write_fd)
    os.close(write_fd)
    try:
        read_line(read_fd, 10.0, "the idle interpreter")
        wait_quiet(pid, 10.0)
        return peak_rss_mib(pid)
    finally:
        os.close(read_fd)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
