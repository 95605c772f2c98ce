"""The in-cluster Kubernetes API client kubexit needs: list and watch one pod, nothing more.

Imported only when the API is used, so the death-dependency path never pays for ssl and
json. One GET per connection over TLS, as the pod's service account: the token re-read
when older than a minute (projected tokens rotate) and once after a 401, the cluster's CA
from ca.crt, TCP keepalive on every connection. Errors come in three kinds: Transient
(waiting may heal it), StatusError (the API server said no, with a Status) and ApiFailure
(waiting cannot help; one line naming the fix), ApiRefused being the refusals that
KUBEXIT_API=auto lets kubexit go on without.
"""

import json
import os
import re
import socket
import ssl
import threading
import time

from kubexit import __version__
from kubexit.http11 import MAX_BODY, MAX_LINE, Response, Transient, quote

TOKEN_MAX_AGE = 60.0
# A stream silent this much longer than its timeoutSeconds is stalled (a dead proxy or peer).
STALL_GRACE_SECONDS = 30
# TCP keepalive: a dead peer of a long, idle watch is noticed within 30 + 3 * 10 seconds.
KEEPALIVE = (30, 10, 3)
CONNECT_TIMEOUT = 10.0
LIST_READ_TIMEOUT = 30.0
RBAC_RULE = '{apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"]}'

class ApiFailure(Exception):
    """Waiting cannot fix this; str() is one line naming the fix."""


class ApiRefused(ApiFailure):
    """The API refuses this pod's service account (no token, 401, 403): under
    KUBEXIT_API=auto, kubexit goes on without it."""


class Stopped(Exception):
    """abort() was called: the caller is no longer interested."""


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


def pods_path(namespace):
    return "/api/v1/namespaces/%s/pods" % quote(namespace)


def describe(err):
    return "%s: %s" % (type(err).__name__, err) if str(err) else type(err).__name__
