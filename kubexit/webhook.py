"""--webhook: --inject as a Kubernetes mutating admission webhook.

The API server POSTs an admission.k8s.io/v1 AdmissionReview for each pod created; a pod
annotated kubexit/inject: "true" gets --inject's changes back as a JSONPatch, one with a
bad kubexit/ annotation is refused with the message kubectl shows. TLS is done in each
connection's own thread, so a slow client never holds up the others, and at most
MAX_CONNECTIONS threads exist; the certificate is reloaded when its files change (a Secret
volume's update, a renewal); SIGTERM stops accepting, lets the requests in progress finish,
and exits 0.
"""

import base64
import copy
import http.server
import json
import os
import signal
import socket
import ssl
import threading

from kubexit import manifests
from kubexit.inject import Options, inject_template
from kubexit.log import write_stderr
from kubexit.manifests import ManifestError

MAX_BODY = 3 * 1024 * 1024      # the API server's own limit on a request
CONNECTION_TIMEOUT = 10.0       # handshake, and each read on a connection
MAX_CONNECTIONS = 64            # the API server keeps a few; a flood waits in the backlog
DRAIN_TIMEOUT = 10.0
PATCHED_FIELDS = ("initContainers", "containers", "volumes")


def say(text):
    write_stderr("kubexit --webhook: " + text)


class BadReview(Exception):
    """Not an AdmissionReview: answered 400, as the request itself is wrong."""


def json_patch(before, after):
    """RFC 6902 operations turning pod `before` into `after`; --inject changes only these
    fields of the spec, each replaced whole."""
    operations = []
    for field in PATCHED_FIELDS:
        if before["spec"].get(field) != after["spec"].get(field):
            operations.append({"op": "replace" if field in before["spec"] else "add",
                               "path": "/spec/" + field, "value": after["spec"][field]})
    return operations


def review(body, options):
    """The AdmissionReview answering `body` (bytes)."""
    try:
        request_review = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise BadReview("the body is not JSON: %s" % err) from None
    if not isinstance(request_review, dict) or request_review.get("kind") != "AdmissionReview":
        raise BadReview("the body is not an AdmissionReview")
    request = request_review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise BadReview("the AdmissionReview has no request with a uid")
    response = {"uid": request["uid"], "allowed": True}
    pod = request.get("object")
    kind = request.get("kind")
    if isinstance(kind, dict) and kind.get("kind") == "Pod" and isinstance(pod, dict):
        metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
        where = "pod %s/%s" % (request.get("namespace") or "-", metadata.get("name")
                               or (metadata.get("generateName") or "") + "*")
        try:
            outcome = mutate(pod, where, options, response)
        except ManifestError as err:
            response = {"uid": request["uid"], "allowed": False,
                        "status": {"code": 400, "reason": "BadRequest",
                                   "message": "kubexit: %s" % err}}
            outcome = "refused: %s" % err
        say("%s: %s" % (where, outcome))
    return {"apiVersion": request_review.get("apiVersion") or "admission.k8s.io/v1",
            "kind": "AdmissionReview", "response": response}


def mutate(pod, where, options, response):
    """Fill `response` with the pod's patch; what happened, for the log."""
    patched = copy.deepcopy(pod)
    warnings = []
    for _, template in manifests.pod_templates(patched, where):
        if not inject_template(template, where, options, warnings.append, default=False):
            return 'left alone (not annotated kubexit/inject: "true", or wired already)'
    operations = json_patch(pod, patched)
    response["patchType"] = "JSONPatch"
    response["patch"] = base64.b64encode(json.dumps(operations).encode()).decode()
    if warnings:
        response["warnings"] = [w[len(where) + 2:] if w.startswith(where) else w
                                for w in warnings]
    return "injected (%d patch operations)" % len(operations)


class Certificate:
    """The serving pair, as loaded from --cert and --key, and loaded again at the first
    handshake after either file changed. A pair that does not load (a renewal caught
    between its two files) is said once and the previous one served until the next change."""

    def __init__(self, cert, key):
        self.paths = (cert, key)
        self.lock = threading.Lock()
        self.seen = self._signature()
        try:
            self.context = self._load()
        except (OSError, ssl.SSLError) as err:
            raise ManifestError("--cert %s --key %s: cannot load them: %s" % (
                cert, key, self._why(err))) from None

    def _signature(self):
        """What tells a changed file: a Secret volume swaps a symlink, an editor renames."""
        found = []
        for path in self.paths:
            try:
                s = os.stat(path)
            except OSError:
                found.append(None)
            else:
                found.append((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns))
        return tuple(found)

    def _load(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(*self.paths)
        return context

    @staticmethod
    def _why(err):
        return getattr(err, "strerror", None) or err

    def context_now(self):
        with self.lock:
            now = self._signature()
            if now != self.seen:
                self.seen = now
                try:
                    self.context = self._load()
                except (OSError, ssl.SSLError) as err:
                    say("--cert %s --key %s changed but cannot be loaded (%s): still serving "
                        "the previous certificate" % (self.paths + (self._why(err),)))
                else:
                    say("--cert %s --key %s changed: serving the new certificate" % self.paths)
            return self.context


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubexit-webhook"

    def log_message(self, format, *args):
        """Admissions are logged one line each by review(); access lines are noise."""

    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with self.server.busy:
            if self.path.partition("?")[0] in ("/healthz", "/readyz", "/livez"):
                self.reply(200, b"ok\n", "text/plain")
            else:
                self.reply(404, b"not found\n", "text/plain")

    def do_POST(self):
        with self.server.busy:
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                self.close_connection = True
                self.reply(411, b"Content-Length required\n", "text/plain")
                return
            if int(length) > MAX_BODY:
                self.close_connection = True
                self.reply(413, b"body over %d bytes\n" % MAX_BODY, "text/plain")
                return
            body = self.rfile.read(int(length))
            try:
                answer = review(body, self.server.options)
            except BadReview as err:
                say("refused a request from %s: %s" % (self.client_address[0], err))
                self.reply(400, ("%s\n" % err).encode(), "text/plain")
                return
            except Exception as err:  # one request's failure never takes the server down
                say("internal error on a request from %s: %r" % (self.client_address[0], err))
                self.reply(500, b"internal error\n", "text/plain")
                return
            self.reply(200, json.dumps(answer))


class Busy:
    """Counts the requests being answered, so that a drain can wait for them."""

    def __init__(self):
        self.count = 0
        self.changed = threading.Condition()

    def __enter__(self):
        with self.changed:
            self.count += 1

    def __exit__(self, *exc):
        with self.changed:
            self.count -= 1
            self.changed.notify_all()

    def wait_idle(self, timeout):
        with self.changed:
            return self.changed.wait_for(lambda: self.count == 0, timeout)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True   # an idle keep-alive connection must not hold up the exit
    request_queue_size = socket.SOMAXCONN   # socketserver's 5 drops a burst's handshakes

    def __init__(self, address, family, certificate, options):
        self.address_family = family
        self.certificate = certificate
        self.options = options
        self.busy = Busy()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.full = False   # said once each time every slot is taken
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        """In the accept thread: a connection's thread once one of MAX_CONNECTIONS is free;
        meanwhile new clients wait in the listen backlog."""
        if not self.slots.acquire(blocking=False):
            if not self.full:
                self.full = True
                say("%d connections open: new ones wait until one closes" % MAX_CONNECTIONS)
            if not self.slots.acquire(timeout=CONNECTION_TIMEOUT):
                say("no connection closed in %gs: dropped one from %s"
                    % (CONNECTION_TIMEOUT, client_address[0]))
                self.shutdown_request(request)
                return
        else:
            self.full = False
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request, client_address):
        request.settimeout(CONNECTION_TIMEOUT)
        try:
            connection = self.certificate.context_now().wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return   # a failed handshake is the client's problem, not the server's
        try:
            self.RequestHandlerClass(connection, client_address, self)
        finally:
            connection.close()

    def handle_error(self, request, client_address):
        """A connection that breaks mid-request ends that connection only, quietly."""


def parse_listen(text):
    """(family, (host, port)) from ADDR:PORT, [IPV6]:PORT or :PORT; port 0 picks one."""
    from kubexit.config import ConfigError, parse_address

    authority = "0.0.0.0" + text if text.startswith(":") else text
    any_port = authority.endswith(":0")
    try:
        host, port = parse_address("--listen", text, authority[:-1] + "1" if any_port
                                   else authority)
    except ConfigError as err:
        raise ManifestError(str(err)) from None
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, 0 if any_port else port)


def serve(values):
    """Run until SIGTERM or SIGINT; the exit status."""
    if "--cert" not in values or "--key" not in values:
        raise ManifestError("needs --cert FILE and --key FILE (the serving certificate, PEM)")
    family, address = parse_listen(values.get("--listen") or "0.0.0.0:8443")
    certificate = Certificate(values["--cert"], values["--key"])
    stopping = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stopping)   # every thread leaves them to sigwait
    try:
        server = Server(address, family, certificate,
                        Options(values.get("--image"), values.get("--python")))
    except OSError as err:
        raise ManifestError("--listen %s: cannot listen there: %s" % (
            values.get("--listen") or "0.0.0.0:8443", err.strerror)) from None
    host, port = server.server_address[:2]
    say("serving https://%s:%d (POST: AdmissionReview, GET /healthz)"
        % ("[%s]" % host if ":" in host else host, port))
    threading.Thread(target=server.serve_forever, name="accept", daemon=True).start()
    number = signal.sigwait(stopping)
    say("%s: no new connections; finishing the requests in progress"
        % signal.Signals(number).name)
    server.shutdown()
    drained = server.busy.wait_idle(DRAIN_TIMEOUT)
    server.server_close()
    say("stopped" if drained else "stopped with requests still in progress after %gs"
        % DRAIN_TIMEOUT)
    return 0
