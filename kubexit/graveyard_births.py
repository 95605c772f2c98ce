"""Birth deps through the graveyard: a dep is ready when its tombstone says Ready.

This needs no API access and no RBAC: a kubexit with a readiness probe writes Ready into
its own tombstone, and the kubexits that wait for it watch the graveyard as death deps
are watched (inotify, else polling). With KUBEXIT_BIRTH_CONDITION=started, any tombstone
counts (Born; an empty file is a Go kubexit caught mid-write). A tombstone that says Died
does not count: the dep is gone, and its restart will write a fresh record.
"""

import os

from kubexit import tombstone
from kubexit.watch import GraveyardWatch


class GraveyardBirths:
    """Follows the birth deps' tombstones; `all_met` once every one of them is ready."""

    def __init__(self, config, log, loop):
        self.config = config
        self.log = log
        self.loop = loop
        self.met = set()
        self.closed = False
        self.graveyard = GraveyardWatch(config, log, loop, config.birth_deps, self._changed)

    @property
    def all_met(self):
        return len(self.met) == len(self.config.birth_deps)

    def start(self):
        self.graveyard.start()

    def close(self):
        """Stop counting now; close the watch on the loop's next turn. Closing an inotify
        fd waits out a kernel RCU grace period (up to ~20 ms measured), which must come
        after CMD has started, not before."""
        self.closed = True
        self.loop.call_later(0, self.graveyard.close)

    def _changed(self, names):
        if self.closed:
            return
        for name in names:
            record = tombstone.read(os.path.join(self.config.graveyard, name))
            if self._counts(record) == (name in self.met):
                continue
            if name in self.met:
                self.met.discard(name)
                self.log.info("birth dep no longer " + self.config.birth_condition, dep=name)
            else:
                self.met.add(name)
                self.log.info("birth dep is " + self.config.birth_condition, dep=name,
                              via="graveyard")

    def _counts(self, record):
        if record is None or record.died is not None:
            return False
        return self.config.birth_condition == "started" or record.ready is not None
