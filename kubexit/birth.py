"""Birth deps: follow the pod's status until the named containers are ready (or started).

A daemon thread does the blocking HTTP; the event loop only waits on a pipe, so signals,
deaths in the graveyard and the timeout keep working while the API is slow or silent.
A dep counts when a container of that name, in containerStatuses or initContainerStatuses
(native sidecars), reports ready (or started, with KUBEXIT_BIRTH_CONDITION=started).
"""

from kubexit.kubeapi import ApiFailure, PodFollower


class BirthDepsFailed(Exception):
    """str(e) is one line telling the user what to fix; kubexit exits 1."""


class BirthWatch(PodFollower):
    """Follows the pod's status in a daemon thread; the event loop waits on fileno()."""

    def __init__(self, config, log):
        super().__init__(config, log, self._judge, "kubexit-birth-deps")
        self._names_checked = False
        self._waiting_for = None
        self.start()

    def poll(self):
        """True once every dep is ready; raises BirthDepsFailed when waiting cannot succeed."""
        self.drain()
        if self.failure is not None:
            raise BirthDepsFailed(self.failure)
        return self.finished

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
