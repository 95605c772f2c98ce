#!/usr/bin/env python3
"""`make demo`: a pod's containers as local processes, each under dist/kubexit.pyz.

Scene 1, a Job with two sidecars, restartPolicy OnFailure and no Kubernetes API: a proxy
with a readiness probe; an app that waits for the proxy through the graveyard (birth dep)
and has its own readiness probe; the job, which waits for the app and works through both.
Its first run fails: the demo restarts it as the kubelet would, and the sidecars stay up,
because that death is not final. Its second run succeeds, and only that death stops the
app and the proxy (death deps).

Scene 2, a crash: a worker's kubexit and its command are SIGKILLed together (as an OOM
kill of a whole container does), so no Died is ever written. The sidecar watching it
sees the worker's liveness lock fall free and stops anyway.

Prints the timeline and the tombstones; exits 0 only if everything happened as it should.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYZ = os.path.join(ROOT, "dist", "kubexit.pyz")

PROXY = r"""
import signal, socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("proxy: listening on", sys.argv[1], flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(print("proxy: SIGTERM, bye", flush=True)))
while True:
    conn, _ = server.accept()
    with conn:
        conn.sendall(conn.recv(1024).upper())
"""

APP = r"""
import signal, socket, sys
proxy, port = int(sys.argv[1]), int(sys.argv[2])
server = socket.create_server(("127.0.0.1", port))
print("app: started after the proxy was ready; listening on", port, flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(print("app: SIGTERM, bye", flush=True)))
while True:
    conn, _ = server.accept()
    with conn, socket.create_connection(("127.0.0.1", proxy)) as upstream:
        upstream.sendall(b"[" + conn.recv(1024) + b"]")
        conn.sendall(upstream.recv(1024))
"""

JOB = r"""
import os, socket, sys
port, first_run_marker = int(sys.argv[1]), sys.argv[2]
for word in ("hello", "from", "the", "job"):
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(word.encode())
        print("job: sent %r, got %r" % (word, conn.recv(1024).decode()), flush=True)
    if not os.path.exists(first_run_marker):
        open(first_run_marker, "w").close()
        sys.exit(print("job: first run, failing with exit 1", flush=True) or 1)
print("job: done, exiting 0", flush=True)
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kill_session(leader):
    """SIGKILL every process of the session `leader` leads (a container's processes: its
    kubexit and CMD's process group), as the kubelet kills a container's whole cgroup."""
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry, "rb") as stat:
                session = int(stat.read().rsplit(b")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if session == leader:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


class Pod:
    """Containers as processes sharing one graveyard; their output as one timeline. A
    container is restarted as the kubelet would under the pod's restartPolicy."""

    def __init__(self, graveyard, restart_policy="Never"):
        self.graveyard = graveyard
        self.restart_policy = restart_policy
        self.start = time.monotonic()
        self.processes = {}
        self.statuses = {}
        self.lines = []
        self.lock = threading.Condition()  # over lines; notified with each new one
        self.threads = []
        self.finishing = False   # once set, nothing is restarted

    def run(self, name, argv, **env):
        environ = dict(os.environ, KUBEXIT_NAME=name, KUBEXIT_GRAVEYARD=self.graveyard,
                       KUBEXIT_GRACE_PERIOD="5s", KUBEXIT_RESTART_POLICY=self.restart_policy,
                       **env)
        process = self._spawn(name, argv, environ)
        thread = threading.Thread(target=self._follow, args=(name, argv, environ, process))
        thread.start()
        self.threads.append(thread)
        return process

    def _spawn(self, name, argv, environ):
        process = subprocess.Popen([sys.executable, PYZ] + argv, env=environ,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        self.processes[name] = process
        return process

    def _follow(self, name, argv, environ, process):
        while True:
            for raw in process.stdout:
                self._say(name, raw.rstrip("\n"))
            status = self.statuses[name] = process.wait()
            if self.restart_policy != "OnFailure" or status == 0:
                return
            with self.lock:
                if self.finishing:
                    return
                process = self._spawn(name, argv, environ)
            self._say("kubelet", "%s exited with %d: restarting it (restartPolicy OnFailure)"
                      % (name, status))

    def _say(self, name, line):
        with self.lock:
            self.lines.append((name, line))
            self.lock.notify_all()
            print("%8.1f ms  %-8s %s" % ((time.monotonic() - self.start) * 1000, name, line),
                  flush=True)

    def wait_for_line(self, name, text, timeout=10):
        with self.lock:
            return self.lock.wait_for(lambda: self.said(name, text), timeout)

    def finish(self, timeout=20):
        """Each container's last exit status, once none will be restarted; after the
        timeout, what is still running is named and SIGKILLed (and never restarted)."""
        deadline = time.monotonic() + timeout
        try:
            for thread in self.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            return dict(self.statuses)
        finally:
            with self.lock:
                self.finishing = True
                running = [name for name, process in self.processes.items()
                           if process.poll() is None]
            if running:
                self._say("demo", "still running after %ds, killed: %s"
                          % (timeout, ", ".join(running)))
            for name in running:
                kill_session(self.processes[name].pid)
            for thread in self.threads:
                thread.join()

    def said(self, name, text):
        return any(n == name and text in line for n, line in self.lines)


def show_graveyard(graveyard):
    print()
    subprocess.run([sys.executable, PYZ, "--inspect", graveyard], check=True)


def job_with_sidecars(graveyard):
    print("== scene 1: a Job, its proxy and its app; restartPolicy OnFailure; no Kubernetes "
          "API ==\n")
    proxy_port, app_port = free_port(), free_port()
    pod = Pod(graveyard, restart_policy="OnFailure")
    fast = {"KUBEXIT_READINESS_PERIOD": "50ms"}
    pod.run("proxy", [sys.executable, "-c", PROXY, str(proxy_port)],
            KUBEXIT_DEATH_DEPS="job",
            KUBEXIT_READINESS_PROBE="tcp://127.0.0.1:%d" % proxy_port, **fast)
    pod.run("app", [sys.executable, "-c", APP, str(proxy_port), str(app_port)],
            KUBEXIT_DEATH_DEPS="job", KUBEXIT_BIRTH_DEPS="proxy",
            KUBEXIT_READINESS_PROBE="tcp://127.0.0.1:%d" % app_port, **fast)
    marker = os.path.join(os.path.dirname(graveyard), "job-failed-once")
    pod.run("job", [sys.executable, "-c", JOB, str(app_port), marker],
            KUBEXIT_BIRTH_DEPS="app")
    statuses = pod.finish()
    show_graveyard(graveyard)
    job_path = os.path.join(graveyard, "job")
    if os.path.exists(job_path):
        with open(job_path) as file:
            print("\n%s:\n%s" % (job_path, file.read().rstrip()))
    # Judged by what each kubexit wrote and said, not by the order in which the demo read
    # their pipes: each sidecar kept running through the job's failure and was stopped by
    # its final exit, and each container was born after its birth dep's Ready.
    proxy, app, job = (tombstone(graveyard, name) for name in ("proxy", "app", "job"))
    return (statuses == {"proxy": 0, "app": 0, "job": 0}
            and pod.said("job", "got '[HELLO]'") and job.get("Restarts") == "1"
            and before(proxy.get("Ready"), app.get("Born"))
            and before(app.get("Ready"), job.get("Born"))
            and all(pod.said(sidecar, "CMD keeps running dep=job")
                    and pod.said(sidecar, 'death dependency "job" died with exit code 0: '
                                          "stopping CMD")
                    and pod.said(sidecar, "SIGTERM, bye") for sidecar in ("proxy", "app")))


def tombstone(graveyard, name):
    """A tombstone's keys and values, as kubexit writes them (`Key: "value"` lines); {}
    when there is none."""
    try:
        with open(os.path.join(graveyard, name)) as file:
            return dict((key, value.strip().strip('"')) for key, _, value in
                        (line.partition(":") for line in file if ":" in line))
    except OSError:
        return {}


def before(earlier, later):
    """Whether RFC 3339 UTC time `earlier` comes before `later`, whatever their numbers
    of fractional digits; False when either is missing."""
    if earlier is None or later is None:
        return False
    instants = [(whole, fraction.ljust(9, "0")) for whole, _, fraction in
                (text.rstrip("Z").partition(".") for text in (earlier, later))]
    return instants[0] < instants[1]


def crash(graveyard):
    print("\n== scene 2: a worker killed together with its kubexit ==\n")
    pod = Pod(graveyard)
    worker = pod.run("worker", ["sh", "-c", 'echo "worker: pid $$, working"; exec sleep 60'])
    pod.run("sidecar", ["sh", "-c", "echo sidecar: running; trap 'echo sidecar: SIGTERM, bye; "
                        "exit 0' TERM; while :; do sleep 0.1; done"],
            KUBEXIT_DEATH_DEPS="worker")
    try:
        # "started CMD" comes once Born is written and the lock taken: a container killed
        # before that leaves nothing in the graveyard to go by (README, Crashes).
        if not all(pod.wait_for_line(*said) for said in (
                ("worker", "working"), ("worker", "started CMD"), ("sidecar", "running"))):
            return False
        with pod.lock:
            said = [line for n, line in pod.lines if n == "worker" and "worker: pid" in line]
        cmd_pid = int(said[0].split("pid ")[1].split(",")[0])
        print("%8.1f ms  %-8s SIGKILL to the worker's kubexit and its command (no Died)"
              % ((time.monotonic() - pod.start) * 1000, "demo"), flush=True)
        os.kill(worker.pid, signal.SIGKILL)
        os.kill(cmd_pid, signal.SIGKILL)
    finally:
        statuses = pod.finish()
    show_graveyard(graveyard)
    return statuses.get("sidecar") == 0 and pod.said("sidecar", "SIGTERM")


def main():
    if not os.path.exists(PYZ):
        sys.exit("demo: %s is missing; run `make build` first" % PYZ)
    with tempfile.TemporaryDirectory(prefix="kubexit-demo-") as tmp:
        first = job_with_sidecars(os.path.join(tmp, "graveyard"))
        second = crash(os.path.join(tmp, "graveyard-2"))
    print("\nscene 1: %s" % ("OK: the proxy, then the app, then the job; the job's failed "
                             "first run left both up, its successful second run stopped "
                             "both" if first else "FAILED"))
    print("scene 2: %s" % ("OK: the crash was seen through the liveness lock" if second
                           else "FAILED"))
    return 0 if first and second else 1


if __name__ == "__main__":
    sys.exit(main())
