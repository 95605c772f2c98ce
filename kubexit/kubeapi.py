"""The in-cluster Kubernetes API client kubexit needs: list and watch one pod, nothing more.

Imported only when birth deps are configured, so the death-dependency path never pays
for ssl and json. HTTP/1.1 is spoken directly over the TLS socket (one GET per connection,
chunked or sized bodies): http.client would add its email parser and two MiB of memory.
Everything a real cluster does to a long watch is handled here: streams that end or break
(reconnect from the last resourceVersion), 410 Gone (relist), 429 (Retry-After), 5xx and
connection errors (jittered exponential backoff), projected tokens that rotate (re-read
when older than a minute, and once after a 401). What cannot heal by waiting (RBAC, a
missing token or CA, the pod gone or replaced) raises ApiFailure at once, with one line
that says what to fix.
"""

import _signal
import json
import os
import random
import re
import socket
import ssl
import threading
import time

from kubexit import __version__
from kubexit.loop import catchable_signals

TOKEN_MAX_AGE = 60.0
WATCH_TIMEOUT_SECONDS = 300
# A stream silent this much longer than its timeoutSeconds is stalled (a dead proxy or peer).
STALL_GRACE_SECONDS = 30
# While a birth wait depends on the watch, silence this long means: read the pod again.
BIRTH_WATCH_SILENCE = 30.0
# TCP keepalive: a dead peer of a long, idle watch is noticed within 30 + 3 * 10 seconds.
KEEPALIVE = (30, 10, 3)
CONNECT_TIMEOUT = 10.0
LIST_READ_TIMEOUT = 30.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
RETRY_AFTER_MAX = 60.0
MAX_LINE = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
RBAC_RULE = '{apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"]}'
UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class ApiFailure(Exception):
    """Waiting cannot fix this; str() is one line naming the fix."""


class ApiRefused(ApiFailure):
    """The API refuses this pod's service account (no token, 401, 403): under
    KUBEXIT_API=auto, kubexit goes on without it."""


class Stopped(Exception):
    """abort() was called: the caller is no longer interested."""


class Transient(Exception):
    """A failure that waiting may heal: a connection error or a broken stream."""


class Stalled(Transient):
    """The watch stream said nothing for too long: read the pod again."""


class StatusError(Exception):
    """The API server answered with an error Status."""

    def __init__(self, code, reason, message, retry_after=None):
        super().__init__("%s %s: %s" % (code, reason, message))
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class InClusterClient:
    """HTTPS requests to the API server as the pod's service account, one connection at a time."""

    def __init__(self, host, port, service_account_dir, stopping):
        self.host = host.strip().strip("[]")
        self.port = port
        self.service_account_dir = service_account_dir
        self.stopping = stopping
        self._token = None
        self._token_read_at = 0.0
        self._context = None
        self._lock = threading.Lock()
        self._sock = None
        self._reader = None

    @property
    def address(self):
        if ":" in self.host:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)

    def path(self, name):
        return os.path.join(self.service_account_dir, name)

    def token(self, reread=False):
        if reread or self._token is None or time.monotonic() - self._token_read_at > TOKEN_MAX_AGE:
            path = self.path("token")
            try:
                with open(path) as file:
                    token = file.read().strip()
            except FileNotFoundError:
                raise ApiRefused(
                    "no service-account token at %s: set automountServiceAccountToken: true on the "
                    "pod (or point KUBEXIT_SERVICE_ACCOUNT_DIR at a mounted token)" % path
                ) from None
            except OSError as err:
                raise ApiRefused(
                    "cannot read the service-account token %s: %s" % (path, err.strerror)
                ) from None
            if not token:
                raise ApiRefused(
                    "the service-account token %s is empty; mount a valid token" % path
                )
            self._token = token
            self._token_read_at = time.monotonic()
        return self._token

    def context(self):
        if self._context is None:
            path = self.path("ca.crt")
            try:
                self._context = ssl.create_default_context(cafile=path)
            except FileNotFoundError:
                raise ApiFailure(
                    "no CA certificate at %s: mount the service account's ca.crt "
                    "(automountServiceAccountToken: true) or fix KUBEXIT_SERVICE_ACCOUNT_DIR" % path
                ) from None
            except (ssl.SSLError, OSError) as err:
                raise ApiFailure(
                    "%s is not a usable PEM CA certificate (%s)" % (path, err)
                ) from None
        return self._context

    def get(self, path, query, read_timeout):
        """GET with the bearer token: the 200 Response (closed by drop()), or an exception."""
        target = path + "?" + "&".join("%s=%s" % (key, quote(value)) for key, value in query)
        for attempt in (1, 2):
            request = (
                "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                "Accept: application/json\r\nUser-Agent: kubexit/%s\r\nConnection: close\r\n\r\n"
                % (target, self.address, self.token(reread=attempt == 2), __version__)
            ).encode("utf-8")
            context = self.context()
            try:
                self._connect(context)
                self._sock.settimeout(read_timeout)
                self._sock.sendall(request)
                response = Response(self._reader)
                if response.status == 200:
                    return response
                body = response.body(MAX_LINE)
            except ssl.SSLCertVerificationError as err:
                self.drop()
                raise ApiFailure(
                    "the API server at %s has a certificate that %s does not verify (%s); "
                    "mount the cluster's CA as ca.crt"
                    % (self.address, self.path("ca.crt"), err.verify_message)
                ) from None
            except (OSError, Transient) as err:
                self.drop()
                if self.stopping.is_set():
                    raise Stopped() from None
                raise Transient(
                    "cannot reach the API server at %s: %s" % (self.address, describe(err))
                ) from None
            self.drop()
            error = status_error(response.status, response.headers.get("retry-after"), body)
            if error.code != 401 or attempt == 2:
                raise error
        raise AssertionError("unreachable")

    def _connect(self, context):
        with self._lock:
            if self.stopping.is_set():
                raise Stopped()
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        with self._lock:
            self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), KEEPALIVE):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        tls = context.wrap_socket(sock, server_hostname=self.host)
        with self._lock:
            self._sock = tls
            self._reader = tls.makefile("rb")
            if self.stopping.is_set():
                raise Stopped()

    def list_pod(self, namespace, name):
        """(the pod or None, the list's resourceVersion)."""
        query = [("fieldSelector", "metadata.name=" + name)]
        response = self.get(pods_path(namespace), query, LIST_READ_TIMEOUT)
        try:
            body = json.loads(response.body(MAX_BODY))
            items = [pod for pod in body.get("items") or () if pod["metadata"]["name"] == name]
            return (items[0] if items else None), body["metadata"]["resourceVersion"]
        except OSError as err:
            raise Transient("the pod list was cut short: %s" % describe(err)) from None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise Transient(
                "the API server sent a malformed pod list: %s" % describe(err)
            ) from None
        finally:
            self.drop()

    def watch_pod(self, namespace, name, resource_version, timeout_seconds, silence=None):
        """Yield (type, object) for each watch event until the server ends the stream;
        Stalled after `silence` seconds without a byte (default: timeoutSeconds + 30)."""
        query = [
            ("fieldSelector", "metadata.name=" + name),
            ("watch", "1"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        silence = silence or timeout_seconds + STALL_GRACE_SECONDS
        response = self.get(pods_path(namespace), query, silence)
        try:
            for line in response.lines():
                if line.strip():
                    event = json.loads(line)
                    yield event["type"], event["object"]
        except socket.timeout:
            raise Stalled("the watch stream stalled (nothing for %gs)" % silence) from None
        except (OSError, Transient) as err:
            if self.stopping.is_set():
                raise Stopped() from None
            if isinstance(err, Transient):
                raise
            raise Transient("the watch stream broke: %s" % describe(err)) from None
        except (ValueError, KeyError, TypeError) as err:
            raise Transient(
                "the API server sent a malformed watch event: %s" % describe(err)
            ) from None
        finally:
            self.drop()

    def drop(self):
        with self._lock:
            sock, reader = self._sock, self._reader
            self._sock = self._reader = None
        for closable in (reader, sock):
            if closable is not None:
                try:
                    closable.close()
                except OSError:
                    pass

    def abort(self):
        """From another thread: make the pending request or blocked read fail now."""
        with self._lock:
            self.stopping.set()
            if self._sock is not None:
                try:
                    # shutdown() on a duplicate wakes the reader without touching its SSL state.
                    with socket.socket(fileno=os.dup(self._sock.fileno())) as duplicate:
                        duplicate.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class PodFollower:
    """follow_pod in a daemon thread, for an event loop that waits on fileno().

    on_change(pod) runs in the thread, as with follow_pod, and calls wake() when it has news
    for the loop: the pipe is written then and once following ends (`finished` set, and
    `failure` the one line of an ApiFailure or of a bug, `refused` when the API refused
    access), and once the first pod is read (`own_restart_policy`: what the kubelet does
    when the container named KUBEXIT_NAME exits, "" if there is none), never while nothing
    changes.
    """

    def __init__(self, config, log, on_change, thread_name, purpose="waiting for birth deps",
                 silence=None):
        self.finished = False
        self.failure = None
        self.refused = False
        self.own_restart_policy = None
        self._config = config
        self._log = log
        self._on_change = on_change
        self._purpose = purpose
        self._silence = silence
        self._read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self._closed = False
        self._client = InClusterClient(
            config.api_host, config.api_port, config.service_account_dir, threading.Event()
        )
        self._thread = threading.Thread(target=self._follow, name=thread_name, daemon=True)

    def start(self):
        """Start the thread, born with every signal blocked: they stay with the main thread."""
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, catchable_signals())
        try:
            self._thread.start()
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)

    def fileno(self):
        return self._read_fd

    def drain(self):
        """From the loop: empty the pipe, so that the next wake() makes it readable again."""
        with self._lock:
            if not self._closed:
                try:
                    while os.read(self._read_fd, 64):
                        pass
                except BlockingIOError:
                    pass

    def wake(self):
        with self._lock:
            if not self._closed:
                try:
                    os.write(self._write_fd, b"!")
                except BlockingIOError:
                    pass  # the pipe is full: the loop has news to read already

    def close(self):
        """Stop the thread (its connection is shut down, its waits end) and close the pipe."""
        self._client.abort()
        self._thread.join(1.0)
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read_fd)
                os.close(self._write_fd)

    def _changed(self, pod):
        if self.own_restart_policy is None:
            from kubexit.pod import restart_policies

            self.own_restart_policy = restart_policies(pod).get(self._config.name, "")
            self.wake()
        return self._on_change(pod)

    def _follow(self):
        config = self._config
        try:
            follow_pod(self._client, config.namespace, config.pod_name, self._changed, self._log,
                       self._purpose, self._silence)
        except Stopped:
            return
        except ApiFailure as err:
            self.failure = str(err)
            self.refused = isinstance(err, ApiRefused)
        except Exception as err:  # a bug must end following with a message, not silently
            self.failure = "unexpected error while watching pod %s/%s: %s: %s" % (
                config.namespace, config.pod_name, type(err).__name__, err)
        # Reported only now, with the connection closed: the main thread gets the GIL at once.
        self.finished = True
        self.wake()


class Response:
    """An HTTP/1.1 response read from a buffered socket file: status line, headers, body."""

    def __init__(self, reader):
        self.reader = reader
        status = reader.readline(MAX_LINE)
        parts = status.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise Transient(
                "not an HTTP response: %r" % status[:60] if status else "connection closed"
            )
        self.status = int(parts[1])
        self.reason = parts[2].decode("latin-1").strip() if len(parts) > 2 else ""
        self.headers = {}
        while True:
            line = reader.readline(MAX_LINE)
            if not line.endswith(b"\n"):
                raise Transient("the connection closed in the response headers")
            if not line.strip():
                break
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length", "")
        self.length = int(length) if length.isdigit() and not self.chunked else None

    def body(self, limit):
        """The whole body (at most `limit` bytes)."""
        if self.chunked:
            data = b""
            for chunk in self.chunks():
                data += chunk
                if len(data) > limit:
                    raise Transient("a response body over %d bytes" % limit)
            return data
        if self.length is None:
            return self.reader.read(limit)
        data = self.reader.read(min(self.length, limit))
        if len(data) < min(self.length, limit):
            raise Transient("the connection closed in the middle of the response body")
        return data

    def chunks(self):
        while True:
            line = self.reader.readline(MAX_LINE)
            if not line.endswith(b"\n"):
                raise Transient("the stream ended without its last chunk")
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                raise Transient("a malformed chunk size %r" % line[:40]) from None
            if size == 0:
                while self.reader.readline(MAX_LINE).strip():
                    pass  # trailers
                return
            data = self.reader.read(size + 2)
            if len(data) < size + 2:
                raise Transient("the stream ended in the middle of a chunk")
            yield data[:size]

    def lines(self):
        """The body's complete lines as they arrive (a watch: one JSON event a line)."""
        pending = b""
        source = self.chunks() if self.chunked else iter(lambda: self.reader.read1(MAX_LINE), b"")
        for data in source:
            pending += data
            if b"\n" in pending:
                *complete, pending = pending.split(b"\n")
                yield from complete
            if len(pending) > MAX_BODY:
                raise Transient("a watch event over %d bytes" % MAX_BODY)
        if pending.strip():
            raise Transient("the watch stream ended in the middle of an event")


class Backoff:
    """Exponential delays with jitter, so that many pods do not retry in step."""

    def __init__(self):
        self.next_delay = BACKOFF_FIRST

    def reset(self):
        self.next_delay = BACKOFF_FIRST

    def next(self):
        delay = self.next_delay
        self.next_delay = min(BACKOFF_MAX, delay * 2)
        return delay * (0.5 + random.random() / 2)


def follow_pod(client, namespace, name, on_change, log, purpose="waiting for birth deps",
               silence=None):
    """List then watch the pod, calling on_change(pod) with each new state until it returns True.

    Raises ApiFailure when waiting cannot help, Stopped when the client is aborted; `purpose`
    says what kubexit was doing when the pod went away. A watch silent for `silence` seconds
    (default: its timeoutSeconds + 30) is dropped, and the pod listed again.
    """
    where = "%s/%s" % (namespace, name)
    backoff = Backoff()
    resource_version = None
    uid = None
    expiries = 0
    while True:
        verb = "list"
        try:
            if resource_version is None:
                pod, resource_version = client.list_pod(namespace, name)
                if pod is None:
                    raise ApiFailure(
                        'pod "%s" not found in namespace "%s": set KUBEXIT_POD_NAME (downward API '
                        "fieldRef: metadata.name) and KUBEXIT_NAMESPACE (fieldRef: "
                        "metadata.namespace) to this pod's name and namespace" % (name, namespace)
                    )
                uid = check_pod(pod, uid, where, purpose)
                if on_change(pod):
                    return
            verb = "watch"
            started = time.monotonic()
            progressed = False
            for kind, obj in client.watch_pod(
                namespace, name, resource_version, WATCH_TIMEOUT_SECONDS, silence
            ):
                progressed = True
                if kind == "ERROR":
                    raise status_error(obj.get("code"), None, json.dumps(obj).encode())
                expiries = 0
                resource_version = obj["metadata"]["resourceVersion"]
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    raise ApiFailure("pod %s was deleted while %s" % (where, purpose))
                uid = check_pod(obj, uid, where, purpose)
                if on_change(obj):
                    return
            log.debug("watch stream ended; resuming", resourceVersion=resource_version)
            if progressed or time.monotonic() - started >= 1.0:
                backoff.reset()
                continue
            delay = backoff.next()
        except StatusError as err:
            if err.code == 410:
                log.debug(
                    "resourceVersion expired; listing the pod again",
                    resourceVersion=resource_version,
                )
                resource_version = None
                expiries += 1
                delay = backoff.next() if expiries > 1 else 0
            elif err.code == 429 or (isinstance(err.code, int) and err.code >= 500):
                delay = (
                    min(err.retry_after, RETRY_AFTER_MAX)
                    if err.retry_after is not None
                    else backoff.next()
                )
                log.warn(
                    "the API server is busy; retrying",
                    status=err.code,
                    reason=err.reason,
                    delay="%.2fs" % delay,
                )
            else:
                refusal = ApiRefused if err.code in (401, 403) else ApiFailure
                raise refusal(explain(err, verb, client, namespace, name)) from None
        except Transient as err:
            if client.stopping.is_set():
                raise Stopped() from None
            if isinstance(err, Stalled):
                resource_version = None  # what changed meanwhile comes with the list
            delay = backoff.next()
            log.warn("%s; retrying" % err, delay="%.2fs" % delay)
        except (KeyError, TypeError, AttributeError) as err:
            delay = backoff.next()
            log.warn(
                "the API server sent an unexpected object (%s); retrying" % describe(err),
                delay="%.2fs" % delay,
            )
        if delay and client.stopping.wait(delay):
            raise Stopped()


def check_pod(pod, known_uid, where, purpose):
    """The pod's UID; ApiFailure when it is being deleted or is not the pod seen first."""
    metadata = pod["metadata"]
    if metadata.get("deletionTimestamp"):
        raise ApiFailure(
            "pod %s is being deleted (deletionTimestamp %s) while %s"
            % (where, metadata["deletionTimestamp"], purpose)
        )
    uid = metadata.get("uid")
    if known_uid is not None and uid != known_uid:
        raise ApiFailure(
            "pod %s was replaced while %s (uid %s, now %s); this container "
            "belongs to the old pod" % (where, purpose, known_uid, uid)
        )
    return uid


def explain(err, verb, client, namespace, name):
    """The one line for an error Status that waiting will not heal."""
    if err.code == 401:
        return (
            "the API server rejected the service-account token %s (401 Unauthorized), also after "
            "re-reading it: the token is invalid or expired; check the pod's service account"
            % client.path("token")
        )
    if err.code == 403:
        user = re.search(r'User "([^"]+)"', err.message or "")
        who = "service account %s" % user.group(1) if user else "this pod's service account"
        match = re.search(r"cannot (\w+) resource", err.message or "")
        verb = match.group(1) if match else verb
        return (
            "%s may not %s pods in namespace %s (403 Forbidden): bind it a Role with the rule %s"
            % (who, verb, namespace, RBAC_RULE)
        )
    return "the API server refused to read pod %s/%s: %s %s: %s" % (
        namespace,
        name,
        err.code,
        err.reason,
        err.message,
    )


def status_error(code, retry_after, body):
    """A StatusError from an HTTP status and its body (a Status object, or anything else)."""
    reason, message = None, None
    try:
        status = json.loads(body)
        if isinstance(status, dict):
            code = status.get("code") or code
            reason = status.get("reason")
            message = status.get("message")
    except ValueError:
        pass
    if message is None:
        message = body[:200].decode("utf-8", "replace").strip() or "HTTP %s" % code
    delay = None
    if retry_after:
        try:
            delay = max(0.0, float(retry_after))
        except ValueError:
            delay = None
    return StatusError(code, reason or "HTTP %s" % code, " ".join(message.split()), delay)


def quote(text):
    """Percent-encode a query value (RFC 3986 unreserved characters stay)."""
    return "".join(
        chr(byte) if byte in UNRESERVED else "%%%02X" % byte for byte in text.encode("utf-8")
    )


def pods_path(namespace):
    return "/api/v1/namespaces/%s/pods" % quote(namespace)


def describe(err):
    return "%s: %s" % (type(err).__name__, err) if str(err) else type(err).__name__
