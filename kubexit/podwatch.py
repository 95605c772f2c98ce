"""Following one pod through the API: list, then watch from the list's resourceVersion.

follow_pod is the loop a real cluster needs: streams that end or break (resume from the
last resourceVersion), bookmarks, 410 Gone (list again), 429 (Retry-After), 5xx and
connection errors (jittered exponential backoff), a silent stream (list again). What
cannot heal by waiting (RBAC, the pod gone or replaced) raises ApiFailure at once.

PodFollower runs it in one daemon thread for every reader of the pod in this kubexit (birth
deps, KUBEXIT_WATCH_POD, the restart policy): one list and one watch, whatever reads it.
"""

import json
import os
import random
import threading
import time

from kubexit.apiclient import (
    ApiFailure,
    ApiRefused,
    InClusterClient,
    Stalled,
    StatusError,
    Stopped,
    describe,
    explain,
    status_error,
)
from kubexit.http11 import Transient
from kubexit.loop import start_thread
from kubexit.pod import restart_policies

WATCH_TIMEOUT_SECONDS = 300
# While a birth wait reads the watch, silence this long means: read the pod again.
URGENT_SILENCE = 30.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
RETRY_AFTER_MAX = 60.0


class PodFollower:
    """follow_pod in a daemon thread, shared by subscribers, for an event loop that waits
    on fileno() and calls readable().

    A subscriber has judge(pod) -> (news, done), run in the thread on every state of the
    pod (and at once on the last one when it subscribes), and readable(), run on the loop
    after news and when following ends (`finished`, with `failure` the one line of an
    ApiFailure or of a bug and `refused` for a refusal). It may set `urgent` (a short wait:
    a silent watch is replaced after URGENT_SILENCE) and `purpose` (for messages). The pipe
    is written only when there is news: never while nothing changes. on_restart_policy
    hears, once, what the kubelet does when the container named KUBEXIT_NAME exits.
    """

    def __init__(self, config, log, on_restart_policy=None):
        self.finished = False
        self.failure = None
        self.refused = False
        self.own_restart_policy = None   # from the first pod read; "" for no such container
        self._config = config
        self._log = log
        self._on_restart_policy = on_restart_policy
        self._told_policy = False
        self._subscribers = []
        self._with_news = []   # subscribers to call readable() on, done ones included
        self._last_pod = None
        self._read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self._closed = False
        self._client = InClusterClient(
            config.api_host, config.api_port, config.service_account_dir, threading.Event()
        )
        self._thread = threading.Thread(target=self._follow, name="kubexit-pod", daemon=True)

    def subscribe(self, subscriber):
        """Add a reader; it judges the last state read at once. Starts the thread first."""
        with self._lock:
            self._subscribers.append(subscriber)
            if self._last_pod is not None:
                self._judge(subscriber, self._last_pod)
                if self._with_news:
                    self._write()
        if not self._thread.is_alive() and not self.finished:
            self._start()

    def unsubscribe(self, subscriber):
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    @property
    def idle(self):
        """Nobody reads it any more."""
        with self._lock:
            return not self._subscribers

    def _start(self):
        start_thread(self._thread)

    def fileno(self):
        return self._read_fd

    def readable(self):
        """From the loop: drain the pipe, then let each subscriber see what is new."""
        self.drain()
        if self.own_restart_policy and not self._told_policy and self._on_restart_policy:
            self._told_policy = True
            self._on_restart_policy(self.own_restart_policy)
        with self._lock:
            readers, self._with_news = self._with_news, []
            if self.finished:
                readers += [s for s in self._subscribers if s not in readers]
        for subscriber in readers:
            subscriber.readable()

    def drain(self):
        """Empty the pipe, so that the next wake() makes it readable again."""
        with self._lock:
            if not self._closed:
                try:
                    while os.read(self._read_fd, 64):
                        pass
                except BlockingIOError:
                    pass

    def wake(self):
        with self._lock:
            self._write()

    def _write(self):
        if not self._closed:
            try:
                os.write(self._write_fd, b"!")
            except BlockingIOError:
                pass  # the pipe is full: the loop has news to read already

    def close(self, wait=1.0):
        """Stop the thread (its connection is shut down, its waits end; a connect still
        under way is left to time out) and close the pipe."""
        self._client.abort()
        self._thread.join(wait)
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read_fd)
                os.close(self._write_fd)

    def _purpose(self):
        with self._lock:
            return " and ".join(s.purpose for s in self._subscribers) or "following the pod"

    def _silence(self):
        with self._lock:
            return URGENT_SILENCE if any(s.urgent for s in self._subscribers) else None

    def _changed(self, pod):
        """In the thread, for follow_pod: True once no subscriber needs more."""
        with self._lock:
            self._last_pod = pod
            news = False
            if self.own_restart_policy is None:
                self.own_restart_policy = restart_policies(pod).get(self._config.name, "")
                news = True
            for subscriber in list(self._subscribers):
                self._judge(subscriber, pod)
            if news or self._with_news:
                self._write()
            return not self._subscribers

    def _judge(self, subscriber, pod):
        """Under the lock: a done subscriber stops being asked, not being told."""
        news, done = subscriber.judge(pod)
        if news and subscriber not in self._with_news:
            self._with_news.append(subscriber)
        if done:
            self._subscribers.remove(subscriber)

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


def follow_pod(client, namespace, name, on_change, log, purpose, silence):
    """List then watch the pod, calling on_change(pod) with each new state until it returns True.

    Raises ApiFailure when waiting cannot help, Stopped when the client is aborted.
    purpose() says what kubexit is doing, for the message when the pod goes away; a watch
    silent for silence() seconds (None: its timeoutSeconds + 30) is dropped, and the pod
    listed again.
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
                uid = check_pod(pod, uid, where, purpose())
                if on_change(pod):
                    return
            verb = "watch"
            started = time.monotonic()
            progressed = False
            for kind, obj in client.watch_pod(
                namespace, name, resource_version, WATCH_TIMEOUT_SECONDS, silence()
            ):
                progressed = True
                if kind == "ERROR":
                    raise status_error(obj.get("code"), None, json.dumps(obj).encode())
                expiries = 0
                resource_version = obj["metadata"]["resourceVersion"]
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    raise ApiFailure("pod %s was deleted while %s" % (where, purpose()))
                uid = check_pod(obj, uid, where, purpose())
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


