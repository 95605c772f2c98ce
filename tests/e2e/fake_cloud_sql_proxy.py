"""A stand-in for the cloud-sql-proxy sidecar of the examples, for pods run without a cloud.

It takes the real proxy's command line (the example's args run unchanged) and serves what
kubexit relies on: the database port and `/readiness` (503, then 200 once the port is
open) after a short delay, so that an app started too early fails, and POST
`/quitquitquit` on the admin port, which makes it exit 0 as the real proxy does. It runs on
Python with no kubexit, as the real image would.
"""

import argparse
import http.server
import signal
import socket
import sys
import threading

READY_AFTER_SECONDS = 1.0


def say(line):
    sys.stdout.write("proxy: %s\n" % line)
    sys.stdout.flush()


def parse(argv):
    parser = argparse.ArgumentParser(prog="cloud-sql-proxy")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--health-check", action="store_true")
    parser.add_argument("--http-address", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=9090)
    parser.add_argument("--quitquitquit", action="store_true")
    parser.add_argument("--admin-port", type=int, default=9091)
    parser.add_argument("instances", nargs="+")
    return parser.parse_args(argv)


class State:
    ready = threading.Event()
    quit = threading.Event()


class HealthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/readiness":
            self.answer(200 if State.ready.is_set() else 503)
        else:
            self.answer(404)

    def answer(self, code):
        body = b"ok\n" if code == 200 else b"not ready\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


class AdminHandler(HealthHandler):
    def do_POST(self):
        if self.path != "/quitquitquit":
            self.answer(404)
            return
        say("quitquitquit received")
        self.answer(200)
        State.quit.set()


def serve(address, port, handler):
    server = http.server.ThreadingHTTPServer((address, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def accept_forever(listener):
    while True:
        connection, _ = listener.accept()
        connection.close()


def on_sigterm(signum, frame):
    """Explicit, because as PID 1 of its container a default disposition would ignore it."""
    say("SIGTERM received")
    sys.exit(128 + signum)


def main():
    args = parse(sys.argv[1:])
    signal.signal(signal.SIGTERM, on_sigterm)
    if args.health_check:
        serve(args.http_address, args.http_port, HealthHandler)
    if args.quitquitquit:
        serve("127.0.0.1", args.admin_port, AdminHandler)
    say("starting for %s" % ",".join(args.instances))
    if State.quit.wait(READY_AFTER_SECONDS):
        return 0
    listener = socket.create_server(("127.0.0.1", args.port))
    threading.Thread(target=accept_forever, args=(listener,), daemon=True).start()
    State.ready.set()
    say("ready, listening on port %d" % args.port)
    State.quit.wait()
    say("exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
