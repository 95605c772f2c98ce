"""Death deps: when have the named siblings died for good?

A death counts when the kubelet will not undo it (contract section 8): the dep's
restartPolicy decides, as its tombstone records it (Siblings), or as the pod's spec says
for a dep known only to the pod's status (KUBEXIT_WATCH_POD). A death the kubelet undoes
is logged and waited out, so one crash of a main container does not take its sidecars
down with it. Once the pod is shutting down nothing restarts, and every death counts.
"""

import os

from kubexit import tombstone
from kubexit.log import utc_timestamp
from kubexit.siblings import Siblings


class DeathWatch:
    """Calls on_death(name, record) once the death deps have died for good: the first
    of them, or all, by KUBEXIT_DEATH_POLICY; deaths from before kubexit started count.
    A crashed dep's record has `died` None: its exit code is unknown."""

    def __init__(self, config, log, loop, on_death, pod_follower):
        self.config = config
        self.log = log
        self.on_death = on_death
        self.pod_follower = pod_follower  # () -> this kubexit's one PodFollower
        self.dead = {}        # name -> the record of the death that counted
        self.states = {}      # name -> its Sibling, as the graveyard last said
        self.fired = False
        self.every_death_counts = False
        self.siblings = Siblings(config, log, loop, config.death_deps, self._changed)
        self.pod = None

    def scan(self):
        """Before CMD starts: a dep that has died for good already counts."""
        self.siblings.scan()

    @property
    def following(self):
        return self.siblings.graveyard is not None

    def start(self):
        """Follow the deps from now on: the graveyard watched (and read again), and the
        pod's status with KUBEXIT_WATCH_POD."""
        if self.fired:
            return
        self.siblings.start()
        if self.config.watch_pod and not self.fired:
            self.log.debug("following the pod's status for death deps",
                           pod="%s/%s" % (self.config.namespace, self.config.pod_name))
            self.pod = PodDeaths(self.config, self.log, self.pod_follower(),
                                 self._container_terminated)

    def alive(self):
        """The deps born and not dead, as far as the graveyard knows."""
        return [name for name, sibling in self.states.items() if sibling.alive]

    def count_every_death(self):
        """The pod is shutting down: no dep will be restarted, so every death is final,
        those already seen included."""
        self.every_death_counts = True
        for name, sibling in list(self.states.items()):
            if sibling.dead and not self.fired and name not in self.dead:
                self._died(name, sibling.record)

    def _changed(self, name, sibling):
        self.states[name] = sibling
        if self.fired or name in self.dead or sibling.alive:
            return
        if sibling.crashed:
            self.log.info("death dep died without writing Died: its kubexit was killed and "
                          "its liveness lock released", dep=name)
        if sibling.final or self.every_death_counts:
            self._died(name, sibling.record)
        else:
            self.log.info("death dep died, and the kubelet restarts it: CMD keeps running",
                          dep=name, death=sibling.describe())

    def _died(self, name, record):
        """Count the death; stop CMD when the policy says so."""
        self.dead[name] = record
        if self.config.death_policy == "any" or len(self.dead) == len(self.config.death_deps):
            self.fired = True
            self.on_death(name, record)
            self.close()  # after on_death: closing an inotify fd must not delay the signal
            return
        self.log.info("death dep died; waiting for the other death deps", dep=name,
                      exit_code=record.exit_code)

    def _container_terminated(self, name, record):
        """From PodDeaths: a final death. A dep with a tombstone is judged by it alone."""
        if self.fired or name in self.dead:
            return
        if tombstone.read(os.path.join(self.config.graveyard, name)) is not None:
            self.log.debug("death dep's container terminated; its tombstone decides", dep=name)
            return
        self.log.info("death dep died, says the pod's status", dep=name,
                      exit_code=record.exit_code)
        self._died(name, record)

    def close(self):
        self.siblings.close()
        if self.pod is not None:
            self.pod.close()


class PodDeaths:
    """Death deps whose containers the pod's status reports terminated for good
    (KUBEXIT_WATCH_POD), for containers with no kubexit and so no tombstone: images
    without Python.

    A subscriber of the pod's follower (podwatch.PodFollower): its judge runs in the
    follower's thread and has news only when a dep's container has newly terminated for
    good; on_died(name, record) then gets a record with the container's finishedAt and
    exitCode. A termination the kubelet undoes (by the pod's or the container's
    restartPolicy; seen as `state` or, when the restart came first, as `lastState` and a
    higher `restartCount`) is logged. An API failure that waiting cannot heal is one
    warning and the end of following: the graveyard still counts.
    """

    purpose = "watching death deps"
    urgent = False

    def __init__(self, config, log, follower, on_died):
        from collections import deque

        from kubexit import pod  # only here: the death-dep path without the API skips it

        self.pods = pod
        self.log = log
        self.follower = follower
        self.on_died = on_died
        self.running = set(config.death_deps)   # in the thread: not yet dead for good
        self.restarts = {}                      # in the thread: name -> restarts seen
        self.terminated = deque()               # (name, record), from the thread to the loop
        self.policies = None
        self.closed = False
        follower.subscribe(self)

    def judge(self, pod):
        """In the follower's thread: (news, done once every dep has died for good)."""
        if self.policies is None:
            self.policies = self.pods.restart_policies(pod)
            unknown = sorted(self.running - set(self.policies))
            if unknown:
                self.log.warn("death deps that are no container of the pod are watched in "
                              "the graveyard only", deps=",".join(unknown))
        newly = False
        for container in self.pods.container_statuses(pod):
            name = container.get("name")
            if name not in self.running:
                continue
            policy = self.policies.get(name, "Always")
            self._note_restart(name, container, policy)
            ended = self.pods.terminated(container)
            if ended and tombstone.death_is_final(policy, ended[0]):
                self.running.discard(name)
                self.terminated.append((name, tombstone.Tombstone(
                    died=ended[1] or utc_timestamp(), exit_code=ended[0],
                    restart_policy=policy)))
                newly = True
        return newly, not self.running

    def _note_restart(self, name, container, policy):
        """Log each death the kubelet undoes, once, by the container's restartCount (a
        terminated state counts as the restart to come)."""
        count = container.get("restartCount")
        count = count if isinstance(count, int) else 0
        state = container.get("state") or {}
        if "terminated" in state:
            count += 1
            last = state["terminated"]
        else:
            last = (container.get("lastState") or {}).get("terminated") or {}
        seen = self.restarts.setdefault(name, count)
        if count > seen:
            self.restarts[name] = count
            code = last.get("exitCode")
            if not tombstone.death_is_final(policy, code if isinstance(code, int) else None):
                self.log.info("death dep's container terminated, and the kubelet restarts it",
                              dep=name, exit_code=code, restart_policy=policy,
                              restarts=count)

    def readable(self):
        while self.terminated and not self.closed:
            self.on_died(*self.terminated.popleft())
        if self.follower.finished and not self.closed:
            if self.follower.failure is not None:
                self.log.warn("stopped following the pod's status; watching the graveyard only",
                              reason=self.follower.failure)
            self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self.follower.unsubscribe(self)
