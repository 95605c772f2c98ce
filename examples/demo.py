#!/usr/bin/env python3
"""`make demo`: a pod's containers as local processes, each under dist/kubexit.pyz.

Scene 1, a Job with two sidecars and no Kubernetes API: a proxy with a readiness probe;
an app that waits for the proxy through the graveyard (birth dep) and has its own
readiness probe; the job, which waits for the app, does its work through both and exits.
Its death stops the app and the proxy (death deps).

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
import socket, sys
for word in ("hello", "from", "the", "job"):
    with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as conn:
        conn.sendall(word.encode())
        print("job: sent %r, got %r" % (word, conn.recv(1024).decode()), flush=True)
print("job: done, exiting 0", flush=True)
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Pod:
    """Containers as processes sharing one graveyard; their output as one timeline."""

    def __init__(self, graveyard):
        self.graveyard = graveyard
        self.start = time.monotonic()
        self.processes = {}
        self.lines = []
        self.lock = threading.Lock()
        self.threads = []

    def run(self, name, argv, **env):
        environ = dict(os.environ, KUBEXIT_NAME=name, KUBEXIT_GRAVEYARD=self.graveyard,
                       KUBEXIT_GRACE_PERIOD="5s", **env)
        process = subprocess.Popen([sys.executable, PYZ] + argv, env=environ,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        self.processes[name] = process
        thread = threading.Thread(target=self._follow, args=(name, process))
        thread.start()
        self.threads.append(thread)
        return process

    def _follow(self, name, process):
        for raw in process.stdout:
            with self.lock:
                self.lines.append((name, raw.rstrip("\n")))
                print("%8.1f ms  %-8s %s" % ((time.monotonic() - self.start) * 1000, name,
                                             raw.rstrip("\n")), flush=True)

    def wait_for_line(self, name, text, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(n == name and text in line for n, line in self.lines):
                    return True
            time.sleep(0.01)
        return False

    def finish(self, timeout=30):
        try:
            return {name: p.wait(timeout=timeout) for name, p in self.processes.items()}
        finally:
            for process in self.processes.values():
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            for thread in self.threads:
                thread.join()

    def said(self, name, text):
        return any(n == name and text in line for n, line in self.lines)


def show_graveyard(graveyard):
    print()
    subprocess.run([sys.executable, PYZ, "--inspect", graveyard], check=True)


def job_with_sidecars(graveyard):
    print("== scene 1: a Job, its proxy and its app; no Kubernetes API ==\n")
    proxy_port, app_port = free_port(), free_port()
    pod = Pod(graveyard)
    fast = {"KUBEXIT_READINESS_PERIOD": "50ms"}
    pod.run("proxy", [sys.executable, "-c", PROXY, str(proxy_port)],
            KUBEXIT_DEATH_DEPS="job",
            KUBEXIT_READINESS_PROBE="tcp://127.0.0.1:%d" % proxy_port, **fast)
    pod.run("app", [sys.executable, "-c", APP, str(proxy_port), str(app_port)],
            KUBEXIT_DEATH_DEPS="job", KUBEXIT_BIRTH_DEPS="proxy",
            KUBEXIT_READINESS_PROBE="tcp://127.0.0.1:%d" % app_port, **fast)
    pod.run("job", [sys.executable, "-c", JOB, str(app_port)], KUBEXIT_BIRTH_DEPS="app")
    statuses = pod.finish()
    show_graveyard(graveyard)
    with open(os.path.join(graveyard, "app")) as file:
        print("\n%s/app:\n%s" % (graveyard, file.read().rstrip()))
    return (statuses == {"proxy": 0, "app": 0, "job": 0}
            and pod.said("job", "got '[HELLO]'")
            and pod.said("proxy", "SIGTERM") and pod.said("app", "SIGTERM"))


def crash(graveyard):
    print("\n== scene 2: a worker killed together with its kubexit ==\n")
    pod = Pod(graveyard)
    worker = pod.run("worker", ["sh", "-c", 'echo "worker: pid $$, working"; exec sleep 60'])
    pod.run("sidecar", ["sh", "-c", "echo sidecar: running; trap 'echo sidecar: SIGTERM, bye; "
                        "exit 0' TERM; while :; do sleep 0.1; done"],
            KUBEXIT_DEATH_DEPS="worker")
    try:
        if not (pod.wait_for_line("worker", "working")
                and pod.wait_for_line("sidecar", "running")):
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
    print("\nscene 1: %s" % ("OK: the proxy, then the app, then the job; the job's end "
                             "stopped both" if first else "FAILED"))
    print("scene 2: %s" % ("OK: the crash was seen through the liveness lock" if second
                           else "FAILED"))
    return 0 if first and second else 1


if __name__ == "__main__":
    sys.exit(main())
