"""Birth deps through the pod's status: which named containers are ready (or started)?

A daemon thread does the blocking HTTP (kubeapi.PodFollower); the event loop only waits
on a pipe, so signals, deaths in the graveyard and the timeout keep working while the API
is slow or silent. A dep counts when a container of that name, in containerStatuses or
initContainerStatuses (native sidecars), reports ready (or started, with
KUBEXIT_BIRTH_CONDITION=started); one terminated for good (by its restartPolicy) never
will, and ends the wait.
"""

from kubexit import kubeapi
from kubexit import pod as pods
from kubexit.tombstone import death_is_final


class BirthWatch(kubeapi.PodFollower):
    """Follows the pod in a daemon thread, publishing `met` (the deps ready now) and
    `gone` (dep -> why it will never be) and waking the loop when either changes; it ends
    (`finished`, no `failure`) once every dep is ready."""

    def __init__(self, config, log):
        # A birth timeout is short: a silent watch is replaced long before 5 minutes.
        super().__init__(config, log, self._judge, "kubexit-birth-deps",
                         silence=kubeapi.BIRTH_WATCH_SILENCE)
        self.met = frozenset()
        self.gone = {}
        self._names_checked = False
        self.start()

    def _judge(self, pod):
        """on_change for follow_pod, in the thread: True once every dep is ready."""
        config = self._config
        if not self._names_checked:
            names = pods.container_names(pod)
            unknown = [dep for dep in config.birth_deps if dep not in names]
            if unknown:
                raise kubeapi.ApiFailure(
                    "KUBEXIT_BIRTH_DEPS names %s, which %s no container of pod %s/%s "
                    "(its containers: %s); fix KUBEXIT_BIRTH_DEPS"
                    % (", ".join(unknown), "is" if len(unknown) == 1 else "are",
                       config.namespace, config.pod_name, ", ".join(names)))
            self._names_checked = True
        policies = pods.restart_policies(pod)
        met, gone = set(), {}
        for container in pods.container_statuses(pod):
            name = container.get("name")
            if name not in config.birth_deps:
                continue
            if container.get(config.birth_condition) is True:
                met.add(name)
            ended = pods.terminated(container)
            if ended and death_is_final(policies.get(name), ended[0]):
                gone[name] = "its container terminated with exit code %s, restartPolicy %s" % (
                    ended[0], policies.get(name))
        if met != self.met or gone != self.gone:
            self.met, self.gone = frozenset(met), gone
            self._log.debug("birth deps in the pod's status", met=",".join(sorted(met)) or "-",
                            resourceVersion=pod["metadata"].get("resourceVersion"))
            self.wake()
        return self.met.issuperset(config.birth_deps)
