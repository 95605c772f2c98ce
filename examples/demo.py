#!/usr/bin/env python3
"""`make demo`: a Job's main container and its sidecar, on this machine, no cluster.

A server (the sidecar) and a client (the main container) each run under the freshly
built dist/kubexit.pyz with a shared temporary graveyard. The client talks to the server
and exits; the server's death dependency on the client stops it. The demo prints the
timeline and the tombstones, and exits 0 only if everything happened as it should.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYZ = os.path.join(ROOT, "dist", "kubexit.pyz")

SERVER = r"""
import signal, socket, sys
server = socket.create_server(("127.0.0.1", 0))
open(sys.argv[1] + ".tmp", "w").write(str(server.getsockname()[1]))
__import__("os").rename(sys.argv[1] + ".tmp", sys.argv[1])
print("server: listening on port", server.getsockname()[1], flush=True)
def stop(*_):
    print("server: SIGTERM, shutting down", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    conn, _ = server.accept()
    with conn:
        data = conn.recv(1024)
        conn.sendall(data.upper())
"""

CLIENT = r"""
import os, socket, sys, time
deadline = time.monotonic() + 10
while not os.path.exists(sys.argv[1]):
    if time.monotonic() > deadline:
        sys.exit("client: the server never came up")
    time.sleep(0.02)
port = int(open(sys.argv[1]).read())
for word in ("hello", "from", "the", "job"):
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(word.encode())
        print("client: sent %r, got %r" % (word, conn.recv(1024).decode()), flush=True)
print("client: work done, exiting 0", flush=True)
"""


def follow(label, process, start, lines, lock):
    for raw in process.stdout:
        line = raw.rstrip("\n")
        with lock:
            lines.append((label, line))
            print("%7.1f ms  %-7s %s" % ((time.monotonic() - start) * 1000, label, line),
                  flush=True)


def main():
    if not os.path.exists(PYZ):
        sys.exit("demo: %s is missing; run `make build` first" % PYZ)
    with tempfile.TemporaryDirectory(prefix="kubexit-demo-") as tmp:
        graveyard = os.path.join(tmp, "graveyard")
        port_file = os.path.join(tmp, "port")
        base = dict(os.environ, KUBEXIT_GRAVEYARD=graveyard, PYTHONUNBUFFERED="1")
        pods = {
            "server": (dict(base, KUBEXIT_NAME="server", KUBEXIT_DEATH_DEPS="client",
                            KUBEXIT_GRACE_PERIOD="5s"), SERVER),
            "client": (dict(base, KUBEXIT_NAME="client"), CLIENT),
        }
        print("graveyard: %s\n" % graveyard)
        start = time.monotonic()
        lines, lock, threads, processes = [], threading.Lock(), [], {}
        for label, (env, script) in pods.items():
            processes[label] = subprocess.Popen(
                [sys.executable, PYZ, sys.executable, "-c", script, port_file],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            thread = threading.Thread(target=follow,
                                      args=(label, processes[label], start, lines, lock))
            thread.start()
            threads.append(thread)
        try:
            statuses = {label: p.wait(timeout=30) for label, p in processes.items()}
        finally:
            for p in processes.values():
                if p.poll() is None:
                    p.kill()
            for thread in threads:
                thread.join()
        print("\nexit statuses: %s\n" % ", ".join("%s=%d" % kv for kv in statuses.items()))
        subprocess.run([sys.executable, PYZ, "--inspect", graveyard], check=True)
        for name in ("client", "server"):
            with open(os.path.join(graveyard, name)) as file:
                print("\n%s/%s:\n%s" % (graveyard, name, file.read().rstrip()))
        stopped = any(label == "server" and "SIGTERM" in line for label, line in lines)
        ok = statuses["client"] == 0 and statuses["server"] == 0 and stopped
        print("\n" + ("demo OK: the client finished and its death stopped the server"
                      if ok else "demo FAILED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
