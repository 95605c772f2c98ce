"""Birth deps through the graveyard: a dep is ready when its tombstone says Ready.

This needs no API access and no RBAC: a kubexit with a readiness probe writes Ready into
its own tombstone, and the kubexits that wait for it watch the graveyard as death deps
are watched (Siblings). With KUBEXIT_BIRTH_CONDITION=started, any live tombstone counts
(Born; an empty file is a Go kubexit caught mid-write). A dep that died is not ready
until its restart writes a fresh record; one that died for good never will be, and
on_final_death(name, sibling) says so at once.
"""

from kubexit.siblings import Siblings


class GraveyardBirths:
    """Follows the birth deps' tombstones; `met` holds the names ready now."""

    def __init__(self, config, log, loop, on_final_death):
        self.config = config
        self.log = log
        self.loop = loop
        self.on_final_death = on_final_death
        self.met = set()
        self.states = {}   # name -> its Sibling, as last seen
        self.closed = False
        self.siblings = Siblings(config, log, loop, config.birth_deps, self._changed)

    def start(self):
        self.siblings.start()

    def close(self):
        """Stop counting now; close the watch on the loop's next turn. Closing an inotify
        fd waits out a kernel RCU grace period (up to ~20 ms measured), which must come
        after CMD has started, not before."""
        self.closed = True
        self.loop.call_later(0, self.siblings.close)

    def why_not(self, name):
        """Why a dep is not ready, for the birth timeout's message."""
        sibling = self.states.get(name)
        if sibling is None:
            return "no tombstone in %s (its kubexit has not started)" % self.config.graveyard
        if sibling.dead:
            return "died %s; waiting for its restart" % sibling.describe()
        return ("born, but its tombstone has no Ready: give its kubexit a "
                "KUBEXIT_READINESS_PROBE, or set KUBEXIT_BIRTH_CONDITION=started here")

    def _changed(self, name, sibling):
        if self.closed:
            return
        self.states[name] = sibling
        if sibling.final:
            self.on_final_death(name, sibling)
            return
        counts = sibling.alive and (self.config.birth_condition == "started" or sibling.ready)
        if counts == (name in self.met):
            return
        if counts:
            self.met.add(name)
            self.log.info("birth dep is " + self.config.birth_condition, dep=name,
                          via="graveyard")
        else:
            self.met.discard(name)
            self.log.info("birth dep no longer " + self.config.birth_condition, dep=name,
                          why=self.why_not(name))
