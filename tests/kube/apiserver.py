"""A small kube-apiserver for one resource, pods, speaking the real wire protocol over HTTPS.

What it reproduces, because kubexit depends on each of them:
- `GET /api/v1/namespaces/NS/pods[?fieldSelector=metadata.name%3DNAME]`: a PodList whose
  `metadata.resourceVersion` is the store's current version (items carry no kind/apiVersion,
  as kube-apiserver sends them);
- the same with `watch=1|true`: HTTP/1.1 chunked, one JSON event a line
  `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...kind, apiVersion...}}`, from
  `resourceVersion` (history kept until `compact()`; an older version gets an ERROR event
  with a 410 Expired Status), none, or "0" (synthetic ADDED of the current state first),
  BOOKMARK events only with `allowWatchBookmarks=true`, the stream ended after `timeoutSeconds`;
- `GET /api/v1/namespaces/NS/pods/NAME`;
- `Status` bodies for every error, bearer-token auth (scheme in any case), 401 without it;
- a "kubelet" (`run_container`/`ready`/`terminate`/`restart`, or `script()` over time) that
  changes `containerStatuses` and `initContainerStatuses` (ready, started, state, lastState,
  restartCount), each change a new resourceVersion and a MODIFIED event;
- faults injected for the next matching requests (`inject()`), and token rotation, stream
  ends, pod deletion and re-creation, history compaction;
- what Go's net/http does underneath: TCP_NODELAY, and bodies over 2 KiB sent chunked.

Every request is recorded (method, path, query, Authorization header) for assertions such
as "exactly one list and one watch".
"""

import collections
import copy
import http.server
import itertools
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
import uuid

DEFAULT_WATCH_TIMEOUT = 1800
GO_CHUNKING_THRESHOLD = 2048
GO_CHUNK_SIZE = 4096
WATCH_VALUES = ("1", "true", "True")

Request = collections.namedtuple("Request", "method path query authorization kind time")


def status_body(code, reason, message, details=None):
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def forbidden_status(verb, namespace, name, user):
    return status_body(
        403,
        "Forbidden",
        'pods "%s" is forbidden: User "%s" cannot %s resource "pods" in API group "" '
        'in the namespace "%s"' % (name, user, verb, namespace),
        {"name": name, "kind": "pods"},
    )


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Fault:
    """One injected misbehaviour, applied to the next `count` requests of kind `on`."""

    def __init__(self, kind, on, count, params):
        self.kind = kind
        self.on = on
        self.count = count
        self.params = params


class ApiServer:
    """The server and its store. Start with `start()`, stop with `stop()` (or use as a context)."""

    def __init__(
        self,
        certs,
        sa_dir,
        namespace="default",
        host="127.0.0.1",
        service_account="system:serviceaccount:default:kubexit",
    ):
        self.certs = certs
        self.sa_dir = sa_dir
        self.namespace = namespace
        self.host = host
        self.user = service_account
        self.token = "token-" + uuid.uuid4().hex
        self.valid_tokens = {self.token}
        self.denied_verbs = set()
        self.requests = []
        self.events_sent = []
        self.watch_timeout_default = DEFAULT_WATCH_TIMEOUT
        self._faults = []
        self._pods = {}
        self._history = []
        self._compacted_index = 0
        self._compacted_rv = 0
        self.open_watches = 0
        self._generation = 0
        self._rv = itertools.count(1000)
        self._current_rv = 999
        self._cond = threading.Condition()
        self._stopping = False
        self._httpd = None
        self._thread = None
        self.write_service_account()

    # -- life -------------------------------------------------------------------------

    def start(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certs.server_crt, self.certs.server_key)
        self._httpd = TLSHTTPServer((self.host, 0), Handler, context, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="apiserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self):
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._httpd.server_address[1]

    @property
    def url(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "https://%s:%d" % (host, self.port)

    def write_service_account(self, token=True, ca=True, namespace=True):
        """The directory a pod would have mounted: token, ca.crt, namespace."""
        os.makedirs(self.sa_dir, exist_ok=True)
        if token:
            write_atomically(os.path.join(self.sa_dir, "token"), self.token)
        if ca:
            with open(self.certs.ca_crt) as src:
                write_atomically(os.path.join(self.sa_dir, "ca.crt"), src.read())
        if namespace:
            write_atomically(os.path.join(self.sa_dir, "namespace"), self.namespace)

    def env(self, pod, **extra):
        """The environment kubexit finds in a pod whose API server is this one."""
        env = {
            "KUBERNETES_SERVICE_HOST": self.host,
            "KUBERNETES_SERVICE_PORT": str(self.port),
            "KUBEXIT_SERVICE_ACCOUNT_DIR": self.sa_dir,
            "KUBEXIT_POD_NAME": pod,
            "KUBEXIT_NAMESPACE": self.namespace,
        }
        env.update(extra)
        return env

    # -- the store ----------------------------------------------------------------------

    def add_pod(self, name, containers=("app",), init_containers=(), sidecars=(), namespace=None,
                restart_policy="Always"):
        """A new pod, all containers waiting; `sidecars` are init containers that always restart."""
        namespace = namespace or self.namespace
        init_specs = [{"name": c, "image": "example/%s" % c} for c in init_containers]
        init_specs += [
            {"name": c, "image": "example/%s" % c, "restartPolicy": "Always"} for c in sidecars
        ]
        specs = [{"name": c, "image": "example/%s" % c} for c in containers]
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now_rfc3339(),
                "labels": {"app": name},
            },
            "spec": {
                "initContainers": init_specs,
                "containers": specs,
                "serviceAccountName": self.user.rsplit(":", 1)[-1],
                "restartPolicy": restart_policy,
            },
            "status": {
                "phase": "Pending",
                "podIP": "10.0.0.7",
                "initContainerStatuses": [container_status(s) for s in init_specs],
                "containerStatuses": [container_status(s) for s in specs],
            },
        }
        if not init_specs:
            del pod["spec"]["initContainers"], pod["status"]["initContainerStatuses"]
        with self._cond:
            self._record("ADDED", pod)
            self._pods[(namespace, name)] = pod
        return pod

    def pod(self, name, namespace=None):
        with self._cond:
            return copy.deepcopy(self._pods[(namespace or self.namespace, name)])

    def set_container(self, pod, container, namespace=None, **fields):
        """Change a container's status fields (ready, started, state): one MODIFIED event."""
        with self._cond:
            obj = self._pods[(namespace or self.namespace, pod)]
            statuses = (
                obj["status"].get("initContainerStatuses", []) + obj["status"]["containerStatuses"]
            )
            for status in statuses:
                if status["name"] == container:
                    status.update(fields)
                    break
            else:
                raise KeyError("pod %s has no container %s" % (pod, container))
            everything_ready = all(s["ready"] for s in obj["status"]["containerStatuses"])
            obj["status"]["phase"] = "Running" if any(s["started"] for s in statuses) else "Pending"
            obj["status"]["conditions"] = [{"type": "Ready", "status": str(everything_ready)}]
            return self._record("MODIFIED", obj)

    def run_container(self, pod, container, namespace=None):
        """Kubelet: the container runs but is not ready yet (its readiness probe is pending)."""
        return self.set_container(
            pod,
            container,
            namespace,
            started=True,
            ready=False,
            state={"running": {"startedAt": now_rfc3339()}},
        )

    def ready(self, pod, container, namespace=None):
        """Kubelet: the container is running and its readiness probe passed."""
        return self.set_container(
            pod,
            container,
            namespace,
            started=True,
            ready=True,
            state={"running": {"startedAt": now_rfc3339()}},
        )

    def terminate(self, pod, container, exit_code=0, namespace=None):
        return self.set_container(
            pod,
            container,
            namespace,
            started=False,
            ready=False,
            state={
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "finishedAt": now_rfc3339(),
                }
            },
        )

    def restart(self, pod, container, namespace=None):
        """Kubelet: the terminated container runs again (lastState, restartCount + 1)."""
        with self._cond:
            obj = self._pods[(namespace or self.namespace, pod)]
            status = next(s for s in obj["status"].get("initContainerStatuses", [])
                          + obj["status"]["containerStatuses"] if s["name"] == container)
            last = {"terminated": status["state"]["terminated"]}
            count = status["restartCount"] + 1
        return self.set_container(pod, container, namespace, started=True, ready=False,
                                  lastState=last, restartCount=count,
                                  state={"running": {"startedAt": now_rfc3339()}})

    def mark_deleting(self, pod, namespace=None):
        """What a delete does first: deletionTimestamp set, the pod still there (MODIFIED)."""
        with self._cond:
            obj = self._pods[(namespace or self.namespace, pod)]
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 30
            return self._record("MODIFIED", obj)

    def delete_pod(self, pod, namespace=None):
        with self._cond:
            obj = self._pods.pop((namespace or self.namespace, pod))
            obj["metadata"].setdefault("deletionTimestamp", now_rfc3339())
            return self._record("DELETED", obj)

    def recreate_pod(self, pod, namespace=None):
        """Delete and add again under the same name: a new UID (what a StatefulSet does)."""
        with self._cond:
            obj = self._pods[(namespace or self.namespace, pod)]
            spec = obj["spec"]
            self.delete_pod(pod, namespace)
            return self.add_pod(
                pod,
                [c["name"] for c in spec["containers"]],
                [c["name"] for c in spec.get("initContainers", []) if not c.get("restartPolicy")],
                [c["name"] for c in spec.get("initContainers", []) if c.get("restartPolicy")],
                namespace,
                spec["restartPolicy"],
            )

    def bookmark(self):
        """Send a BOOKMARK (current resourceVersion) to every watch that asked for bookmarks."""
        with self._cond:
            self._history.append((self._current_rv, "BOOKMARK", None, None, None))
            self._cond.notify_all()

    def compact(self):
        """Forget history: a watch from a resourceVersion older than now gets 410 Expired."""
        with self._cond:
            self._compacted_index = len(self._history)
            self._compacted_rv = self._current_rv

    def end_watches(self):
        """End every open watch cleanly, as the server does when timeoutSeconds is reached."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def rotate_token(self):
        """A new token in the file; the old one rejected with 401 from now on; open watches end."""
        with self._cond:
            self.token = "token-" + uuid.uuid4().hex
            self.valid_tokens = {self.token}
            write_atomically(os.path.join(self.sa_dir, "token"), self.token)
        self.end_watches()

    def inject(self, kind, on="any", count=1, **params):
        """Misbehave on the next `count` requests of kind `on` (list, watch, get or any).

        kinds: "status" (code=, reason=, message=, retry_after=), "forbidden" (a real RBAC 403),
        "expired_event" (watch: 200 then an ERROR event with a 410 Status),
        "cut_mid_line" (watch: half of the next event, then the connection drops),
        "split_chunks" (watch: every event cut into pieces=N chunks sent with gaps),
        "stall" (watch: headers, then silence until the client leaves, end_watches() or stop();
        then the connection drops without the final chunk).
        """
        with self._cond:
            self._faults.append(Fault(kind, on, count, params))

    def faults_pending(self):
        with self._cond:
            return len(self._faults)

    def script(self, steps):
        """Run [(delay_seconds, callable, *args), ...] in order on a thread: a kubelet over time."""

        def run():
            for delay, action, *args in steps:
                with self._cond:
                    if self._cond.wait_for(lambda: self._stopping, delay):
                        return
                action(*args)

        thread = threading.Thread(target=run, name="kubelet", daemon=True)
        thread.start()
        return thread

    # -- assertions ----------------------------------------------------------------------

    def requests_of(self, kind):
        with self._cond:
            return [r for r in self.requests if r.kind == kind]

    def wait_until(self, predicate, timeout=10.0):
        """Block until predicate(server) holds (re-checked on every request and event)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        "condition not met in %.1fs; requests: %s" % (timeout, self.requests)
                    )
                self._cond.wait(remaining)

    def watching(self, count=1):
        """Wait until `count` watches have been served and are streaming."""
        self.wait_until(lambda s: s.open_watches >= 1 and len(s.requests_of("watch")) >= count)

    # -- internals -----------------------------------------------------------------------

    def _record(self, kind, obj):
        rv = next(self._rv)
        self._current_rv = rv
        obj["metadata"]["resourceVersion"] = str(rv)
        meta = obj["metadata"]
        self._history.append((rv, kind, meta["namespace"], meta["name"], copy.deepcopy(obj)))
        self._cond.notify_all()
        return rv

    def _take_fault(self, kind):
        for fault in self._faults:
            if fault.on in (kind, "any"):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def handle(self, handler):
        parsed = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        parts = parsed.path.strip("/").split("/")
        is_pods = (
            len(parts) in (5, 6)
            and parts[:2] == ["api", "v1"]
            and parts[2] == "namespaces"
            and parts[4] == "pods"
        )
        watch = query.get("watch", [""])[-1] in WATCH_VALUES
        kind = "other"
        if is_pods:
            kind = "get" if len(parts) == 6 else "watch" if watch else "list"
        with self._cond:
            self.requests.append(
                Request(
                    handler.command,
                    parsed.path,
                    query,
                    handler.headers.get("Authorization"),
                    kind,
                    time.monotonic(),
                )
            )
            self._cond.notify_all()
        if handler.command != "GET":
            return handler.send_status(
                status_body(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            )
        if not is_pods:
            return handler.send_status(
                status_body(404, "NotFound", "the server could not find the requested resource")
            )
        scheme, _, token = (handler.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.valid_tokens:
            return handler.send_status(status_body(401, "Unauthorized", "Unauthorized"))
        with self._cond:
            fault = self._take_fault(kind)
        namespace = parts[3]
        name = parts[5] if kind == "get" else None
        if (fault and fault.kind == "forbidden") or kind in self.denied_verbs:
            return handler.send_status(forbidden_status(kind, namespace, name or "", self.user))
        if fault and fault.kind == "status":
            code = fault.params.get("code", 500)
            reasons = {
                410: "Expired",
                429: "TooManyRequests",
                500: "InternalError",
                503: "ServiceUnavailable",
            }
            body = status_body(
                code,
                fault.params.get("reason", reasons.get(code, "Unknown")),
                fault.params.get("message", "injected failure"),
            )
            headers = {}
            if "retry_after" in fault.params:
                headers["Retry-After"] = str(fault.params["retry_after"])
                body["details"] = {"retryAfterSeconds": fault.params["retry_after"]}
            return handler.send_status(body, headers)
        if kind == "get":
            with self._cond:
                pod = copy.deepcopy(self._pods.get((namespace, name)))
            if pod is None:
                return handler.send_status(
                    status_body(
                        404,
                        "NotFound",
                        'pods "%s" not found' % name,
                        {"name": name, "kind": "pods"},
                    )
                )
            return handler.send_json(200, pod)
        try:
            selected = field_selector(query.get("fieldSelector", [""])[-1])
        except ValueError as error:
            return handler.send_status(status_body(400, "BadRequest", str(error)))
        if kind == "list":
            with self._cond:
                items = [
                    strip_type(p)
                    for (ns, n), p in sorted(self._pods.items())
                    if ns == namespace and selected in (None, n)
                ]
                rv = self._current_rv
            return handler.send_json(
                200,
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                },
            )
        return self._stream(handler, namespace, selected, query, fault)

    def _stream(self, handler, namespace, selected, query, fault):
        since = query.get("resourceVersion", [""])[-1]
        bookmarks = query.get("allowWatchBookmarks", [""])[-1] in WATCH_VALUES
        timeout = int(query.get("timeoutSeconds", [self.watch_timeout_default])[-1])
        deadline = time.monotonic() + timeout
        handler.start_chunked()
        stream = EventStream(handler, fault, self)
        with self._cond:
            generation = self._generation
            if since in ("", "0"):
                index = len(self._history)
                initial = [
                    copy.deepcopy(p)
                    for (ns, n), p in sorted(self._pods.items())
                    if ns == namespace and selected in (None, n)
                ]
            else:
                index = None
                if int(since) < self._compacted_rv:
                    expired = status_body(
                        410,
                        "Expired",
                        "too old resource version: %s (%d)" % (since, self._compacted_rv),
                    )
                    initial = None
                else:
                    index = next(
                        (i for i, h in enumerate(self._history) if h[0] > int(since)),
                        len(self._history),
                    )
                    index = max(index, self._compacted_index)
                    initial = []
            self.open_watches += 1
            self._cond.notify_all()
        try:
            if fault and fault.kind == "expired_event":
                initial = None
                expired = status_body(
                    410, "Expired", "too old resource version: %s (%d)" % (since, self._current_rv)
                )
            if initial is None:
                stream.send("ERROR", expired)
                return stream.finish()
            for pod in initial:
                stream.send("ADDED", pod)
            if fault and fault.kind == "stall":
                with self._cond:
                    while not (
                        self._stopping or generation != self._generation or stream.peer_gone()
                    ):
                        self._cond.wait(0.05)
                return stream.abort()
            while True:
                with self._cond:
                    self._cond.wait_for(
                        lambda seen=index: (
                            self._stopping
                            or generation != self._generation
                            or seen < len(self._history)
                            or time.monotonic() >= deadline
                            or stream.peer_gone()
                        ),
                        max(0.0, min(deadline - time.monotonic(), 0.5)),
                    )
                    if (
                        self._stopping
                        or generation != self._generation
                        or time.monotonic() >= deadline
                    ):
                        break
                    if stream.peer_gone():
                        return stream.abort()
                    pending = self._history[index:]
                    index = len(self._history)
                for rv, kind, ns, name, obj in pending:
                    if kind == "BOOKMARK":
                        if bookmarks:
                            stream.send(
                                "BOOKMARK",
                                {
                                    "kind": "Pod",
                                    "apiVersion": "v1",
                                    "metadata": {
                                        "resourceVersion": str(rv),
                                        "creationTimestamp": None,
                                    },
                                },
                            )
                    elif ns == namespace and selected in (None, name):
                        stream.send(kind, obj)
            stream.finish()
        except OSError:
            stream.abort()
        finally:
            with self._cond:
                self.open_watches -= 1
                self._cond.notify_all()


class EventStream:
    """One watch response: events written as chunks, with the faults that concern framing."""

    def __init__(self, handler, fault, server):
        self.handler = handler
        self.fault = fault
        self.server = server

    def send(self, kind, obj):
        line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
        fault = self.fault
        with self.server._cond:
            self.server.events_sent.append((time.monotonic(), kind, obj))
            self.server._cond.notify_all()
        if fault and fault.kind == "cut_mid_line":
            self.handler.write_chunk(line[: len(line) // 2])
            raise ConnectionAbortedError("injected: stream cut mid-line")
        if fault and fault.kind == "split_chunks":
            pieces = fault.params.get("pieces", 3)
            step = max(1, len(line) // pieces)
            for start in range(0, len(line), step):
                self.handler.write_chunk(line[start : start + step])
                time.sleep(fault.params.get("gap", 0.01))
            return
        self.handler.write_chunk(line)

    def peer_gone(self):
        """True once the client closed its end (readable with nothing to read, or reset)."""
        sock = self.handler.connection
        try:
            sock.setblocking(False)
            try:
                return sock.recv(1) == b""
            finally:
                sock.setblocking(True)
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except OSError:
            return True

    def finish(self):
        self.handler.write_raw(b"0\r\n\r\n")

    def abort(self):
        """Drop the connection without the final chunk, as a crashed server or proxy would."""
        self.handler.close_connection = True
        try:
            self.handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-test"

    def do_GET(self):
        self.server.api.handle(self)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, fmt, *args):
        pass

    def send_json(self, code, body, headers=None):
        """As Go's net/http: Content-Length when the body fits its 2 KiB buffer, else chunked."""
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        chunked = len(data) > GO_CHUNKING_THRESHOLD
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not chunked:
            self.wfile.write(data)
            return
        for start in range(0, len(data), GO_CHUNK_SIZE):
            self.write_chunk(data[start : start + GO_CHUNK_SIZE])
        self.write_raw(b"0\r\n\r\n")

    def send_status(self, body, headers=None):
        self.send_json(body["code"], body, headers)

    def start_chunked(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data):
        self.write_raw(b"%x\r\n%s\r\n" % (len(data), data))

    def write_raw(self, data):
        self.wfile.write(data)
        self.wfile.flush()


class TLSHTTPServer(http.server.ThreadingHTTPServer):
    """Handshakes in each request's own thread, so a slow or failing client blocks no one."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, context, api):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.context = context
        self.api = api
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        # Go's net package, hence kube-apiserver, sets TCP_NODELAY on every connection: without
        # it an event written right after the headers waits for the client's delayed ACK.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            tls.close()


def container_status(spec):
    return {
        "name": spec["name"],
        "image": spec["image"],
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": "ContainerCreating"}},
        "lastState": {},
    }


def strip_type(pod):
    """List items come without kind/apiVersion from kube-apiserver."""
    item = copy.deepcopy(pod)
    item.pop("kind", None)
    item.pop("apiVersion", None)
    return item


def field_selector(text):
    """The pod name a selector asks for, or None for all; only metadata.name is supported here."""
    name = None
    for term in filter(None, text.split(",")):
        key, op, value = term.partition("==") if "==" in term else term.partition("=")
        if not op or key.strip() != "metadata.name" or term.startswith("!"):
            raise ValueError(
                '"%s" is not a known field selector: only "metadata.name" is supported' % term
            )
        name = value.strip()
    return name


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as file:
        file.write(text)
    os.replace(tmp, path)
