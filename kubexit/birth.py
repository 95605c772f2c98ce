"""Birth deps: follow the pod's status until the named containers are ready (or started).

A daemon thread does the blocking HTTP; the event loop only waits on a pipe, so signals,
deaths in the graveyard and the timeout keep working while the API is slow or silent.
A dep counts when a container of that name, in containerStatuses or initContainerStatuses
(native sidecars), reports ready (or started, with KUBEXIT_BIRTH_CONDITION=started).
"""

import os
import threading

from kubexit.kubeapi import ApiFailure, InClusterClient, Stopped, follow_pod


class BirthDepsFailed(Exception):
    """str(e) is one line telling the user what to fix; kubexit exits 1."""


class BirthWatch:
    """Follows the pod's status in a daemon thread; the event loop waits on fileno()."""

    def __init__(self, config, log):
        self._config = config
        self._log = log
        self._read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self._ready = False
        self._failure = None
        self._closed = False
        self._names_checked = False
        self._waiting_for = None
        self._stopping = threading.Event()
        self._client = InClusterClient(
            config.api_host, config.api_port, config.service_account_dir, self._stopping
        )
        self._thread = threading.Thread(target=self._follow, name="kubexit-birth-deps", daemon=True)
        self._thread.start()

    def fileno(self):
        return self._read_fd

    def poll(self):
        """True once every dep is ready; raises BirthDepsFailed when waiting cannot succeed."""
        with self._lock:
            if not self._closed:
                try:
                    while os.read(self._read_fd, 64):
                        pass
                except BlockingIOError:
                    pass
            if self._failure is not None:
                raise BirthDepsFailed(self._failure)
            return self._ready

    def close(self):
        """Stop the thread (its connection is shut down, its waits end) and close the pipe."""
        self._client.abort()
        self._thread.join(1.0)
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read_fd)
                os.close(self._write_fd)

    def _follow(self):
        config = self._config
        try:
            follow_pod(self._client, config.namespace, config.pod_name, self._judge, self._log)
        except Stopped:
            return
        except ApiFailure as err:
            self._report(failure=str(err))
        except Exception as err:  # a bug must end the wait with a message, not by the timeout
            self._report(
                failure="unexpected error while watching pod %s/%s: %s: %s"
                % (config.namespace, config.pod_name, type(err).__name__, err)
            )
        else:
            # Reported only now, with the connection closed: the main thread gets the GIL at once.
            self._report(ready=True)

    def _judge(self, pod):
        """on_change for follow_pod: True once every dep meets the condition."""
        deps = self._config.birth_deps
        if not self._names_checked:
            spec = pod.get("spec") or {}
            names = [
                c.get("name")
                for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
            ]
            unknown = [dep for dep in deps if dep not in names]
            if unknown:
                raise ApiFailure(
                    "KUBEXIT_BIRTH_DEPS names %s, which %s no container of pod %s/%s "
                    "(its containers: %s); fix KUBEXIT_BIRTH_DEPS"
                    % (
                        ", ".join(unknown),
                        "is" if len(unknown) == 1 else "are",
                        self._config.namespace,
                        self._config.pod_name,
                        ", ".join(names),
                    )
                )
            self._names_checked = True
        status = pod.get("status") or {}
        met = set()
        for container in (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        ):
            if container.get(self._config.birth_condition) is True:
                met.add(container.get("name"))
        waiting = [dep for dep in deps if dep not in met]
        if waiting and waiting != self._waiting_for:
            self._waiting_for = waiting
            self._log.debug(
                "birth deps not yet " + self._config.birth_condition,
                waiting=",".join(waiting),
                resourceVersion=pod["metadata"].get("resourceVersion"),
            )
        return not waiting

    def _report(self, ready=False, failure=None):
        with self._lock:
            if self._closed:
                return
            self._ready = self._ready or ready
            if failure is not None and self._failure is None:
                self._failure = failure
            try:
                os.write(self._write_fd, b"!")
            except BlockingIOError:
                pass
