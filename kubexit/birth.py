"""Birth deps through the pod's status: which named containers are ready (or started)?

A subscriber of the pod's follower (podwatch.PodFollower): its judge runs in the follower's
thread, so signals, deaths in the graveyard and the timeout keep working while the API is
slow or silent. A dep counts when a container of that name, in containerStatuses or
initContainerStatuses (native sidecars), reports ready (or started, with
KUBEXIT_BIRTH_CONDITION=started); one terminated for good (by its restartPolicy) never
will, and ends the wait.
"""

from kubexit import pod as pods
from kubexit.apiclient import ApiFailure
from kubexit.tombstone import death_is_final


class BirthWatch:
    """Publishes `met` (the deps ready now) and `gone` (dep -> why it will never be);
    readable() runs on the loop when either changed or following ended."""

    purpose = "waiting for birth deps"
    urgent = True  # a birth timeout is short: a silent watch is replaced after 30 s

    def __init__(self, config, log, readable):
        self.met = frozenset()
        self.gone = {}
        self.readable = readable
        self._config = config
        self._log = log
        self._names_checked = False

    def judge(self, pod):
        """In the follower's thread: (news, done once every dep is ready)."""
        config = self._config
        if not self._names_checked:
            names = pods.container_names(pod)
            unknown = [dep for dep in config.birth_deps if dep not in names]
            if unknown:
                raise ApiFailure(
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
        news = met != self.met or gone != self.gone
        if news:
            self.met, self.gone = frozenset(met), gone
            self._log.debug("birth deps in the pod's status", met=",".join(sorted(met)) or "-",
                            resourceVersion=pod["metadata"].get("resourceVersion"))
        return news, self.met.issuperset(config.birth_deps)
