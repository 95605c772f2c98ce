"""What the graveyard says of named siblings: born, ready, dead, and whether for good.

Siblings follows some names through their tombstones (GraveyardWatch) and, for one born
and not died, through its liveness lock (kubexit.liveness): the lock falling free with
no `Died` is a crash. Each change of what is known of a name reaches on_change(name,
Sibling); the death watch and the birth wait each decide what that means to them.
Finality (will the kubelet restart it?) is the tombstone's own RestartPolicy's word.
"""

import os

from kubexit import liveness, tombstone
from kubexit.watch import GraveyardWatch


class Sibling:
    """A dep's last record, and whether its kubexit died without writing `Died`."""

    __slots__ = ("record", "crashed")

    def __init__(self, record, crashed=False):
        self.record = record
        self.crashed = crashed

    def __eq__(self, other):
        return isinstance(other, Sibling) and (self.record, self.crashed) == (
            other.record, other.crashed)

    @property
    def alive(self):
        return self.record.died is None and not self.crashed

    @property
    def ready(self):
        return self.alive and self.record.ready is not None

    @property
    def dead(self):
        return not self.alive

    @property
    def final(self):
        """Dead, and the kubelet will not start it again."""
        return self.dead and self.record.final

    def describe(self):
        """How it died, for a log line or a message."""
        record = self.record
        how = ("without writing Died (its kubexit was killed)" if self.crashed
               else "with exit code %s" % ("unknown" if record.exit_code is None
                                           else record.exit_code))
        return "%s, restartPolicy %s" % (how, record.restart_policy or "Never")


class Siblings:
    """Reports each name's Sibling when it changes, starting with what is there now."""

    def __init__(self, config, log, loop, names, on_change):
        self.config = config
        self.log = log
        self.loop = loop
        self.on_change = on_change
        self.known = {}           # name -> the Sibling last reported
        self.lock_waits = {}      # name -> LockWait, while it is born and not died
        self.unlockable = set()   # names whose lock the filesystem refused: tombstone only
        self.closed = False
        self.names = names
        self.graveyard = None     # the GraveyardWatch, once started

    @property
    def kind(self):
        return self.graveyard.kind if self.graveyard is not None else "none yet"

    def scan(self):
        """What the graveyard says now, without a watch or a lock wait: enough to know
        before CMD starts whether a dep has died already. start() looks again."""
        self._changed(self.names)

    def start(self):
        """Watch first, then scan, so that nothing falls between the two."""
        self.graveyard = GraveyardWatch(self.config, self.log, self.loop, self.names,
                                        self._changed)
        self.graveyard.start()

    def _changed(self, names):
        for name in names:
            if self.closed:
                return
            record = tombstone.read(self._tombstone_path(name))
            self.log.debug("tombstone changed", dep=name, tombstone=record)
            if record is None:
                continue
            if record.died is None and name not in self.lock_waits \
                    and name not in self.unlockable:
                self._check_lock(name, record)
            else:
                self._report(name, Sibling(record))

    def _report(self, name, sibling):
        if not self.closed and self.known.get(name) != sibling:
            self.known[name] = sibling
            self.on_change(name, sibling)

    def _tombstone_path(self, name):
        return os.path.join(self.config.graveyard, name)

    def _check_lock(self, name, record):
        """Born, not died: a free lock with this Born in it is a crash; a held one is
        waited on in a thread; no lock file (a Go kubexit) leaves the tombstone alone."""
        path = liveness.lock_path(self.config.graveyard, name)
        try:
            fd = liveness.open_lock_file(path, create=False)
        except OSError:
            self._report(name, Sibling(record))
            return
        try:
            word = liveness.last_word(fd, path, self._tombstone_path(name), blocking=False)
        except BlockingIOError:
            holder_born = liveness.holder_born(fd)  # before the thread owns the fd
            if self.graveyard is None:
                os.close(fd)   # a scan: alive, and start() waits on the lock
            else:
                self.log.debug("waiting on the liveness lock", dep=name, path=path)
                self.lock_waits[name] = liveness.LockWait(
                    self.loop, path, self._tombstone_path(name), fd,
                    lambda wait: self._lock_freed(name, wait))
            if holder_born in ("", record.born):
                self._report(name, Sibling(record))
            # else a newer run holds the lock and its Born is on its way.
            return
        except OSError as err:
            os.close(fd)
            self._unlockable(name, path, err.strerror)
            self._report(name, Sibling(record))
            return
        os.close(fd)
        self._report(name, Sibling(*word) if word is not None else Sibling(record))

    def _lock_freed(self, name, wait):
        """From a LockWait: the dep's kubexit has ended, by writing Died or by dying."""
        if self.lock_waits.get(name) is wait:
            del self.lock_waits[name]
        if self.closed:
            return
        if wait.error is not None:
            self._unlockable(name, wait.path, wait.error)
        elif wait.last_word is not None:
            self._report(name, Sibling(*wait.last_word))
        self._changed({name})  # what the tombstone says now: perhaps a newer run's Born

    def _unlockable(self, name, path, reason):
        self.unlockable.add(name)
        self.log.warn("cannot wait on a dep's liveness lock; watching its tombstone only",
                      dep=name, path=path, reason=reason)

    def close(self):
        if not self.closed:
            self.closed = True
            if self.graveyard is not None:
                self.graveyard.close()
            for wait in self.lock_waits.values():
                wait.close()
            self.lock_waits.clear()
