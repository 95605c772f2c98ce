"""Watching the graveyard for the deaths of named siblings.

Two watchers behind one interface, `start(loop, on_change)`: inotify when the kernel
and filesystem allow (no wake-up until a tombstone changes), polling otherwise. Both
report only the names they were asked about; RESCAN means "anything may have changed"
(an inotify queue overflow), LOST that the watch itself is gone (graveyard removed or
unmounted).
"""

import os

from kubexit import tombstone
from kubexit.log import utc_timestamp

RESCAN = "rescan"
LOST = "lost"


class PollWatcher:
    """stat() each watched name every interval; a changed stat means re-read it."""

    kind = "poll"

    def __init__(self, graveyard, names, interval):
        self.graveyard = graveyard
        self.names = names
        self.interval = interval
        self._seen = {name: self._stat(name) for name in names}

    def _stat(self, name):
        try:
            s = os.stat(os.path.join(self.graveyard, name), follow_symlinks=False)
        except OSError:
            return None
        return (s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)

    def start(self, loop, on_change):
        def tick():
            changed = set()
            for name in self.names:
                now = self._stat(name)
                if now != self._seen[name]:
                    self._seen[name] = now
                    changed.add(name)
            if changed:
                on_change(changed)
            self._timer = loop.call_later(self.interval, tick)

        self._timer = loop.call_later(self.interval, tick)

    def close(self, loop):
        self._timer.cancel()


class InotifyWatcher:
    """Tombstones land by rename (kubexit) or by truncate-write-close (Go kubexit)."""

    kind = "inotify"

    def __init__(self, graveyard, names):
        from kubexit import inotify

        self._inotify = inotify
        fstype = inotify.REMOTE_FILESYSTEMS.get(inotify.filesystem_type(graveyard))
        if fstype:
            raise OSError("the graveyard is on %s, where inotify misses other hosts' writes"
                          % fstype)
        self.names = frozenset(names)
        self.fd = inotify.init()
        try:
            inotify.add_watch(self.fd, graveyard, inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO
                              | inotify.IN_CREATE | inotify.IN_ONLYDIR)
        except OSError:
            os.close(self.fd)
            raise

    def start(self, loop, on_change):
        inotify = self._inotify

        def readable():
            changed = set()
            for mask, name in inotify.read_events(self.fd):
                if mask & inotify.IN_IGNORED:
                    on_change(LOST)
                    return
                if mask & inotify.IN_Q_OVERFLOW:
                    on_change(RESCAN)
                    return
                if name in self.names:
                    changed.add(name)
            if changed:
                on_change(changed)

        loop.add_reader(self.fd, readable)

    def close(self, loop):
        loop.remove_reader(self.fd)
        os.close(self.fd)


class GraveyardWatch:
    """The tombstones of some names: on_names(names) whenever they may have changed,
    starting with all of them (the scan, after the watch is in place so that nothing
    falls between the two). inotify unless told to poll or it is unavailable, in which
    case it says why once; a lost inotify watch falls back to polling."""

    def __init__(self, config, log, loop, names, on_names):
        self.config = config
        self.log = log
        self.loop = loop
        self.names = names
        self.on_names = on_names
        self.watcher = None
        if config.watch == "auto":
            try:
                self.watcher = InotifyWatcher(config.graveyard, names)
            except (ImportError, AttributeError, OSError) as err:
                log.warn("inotify unavailable, polling the graveyard instead",
                         reason=str(err), interval="%gs" % config.poll_interval)
        if self.watcher is None:
            self.watcher = self._poll_watcher()

    @property
    def kind(self):
        return self.watcher.kind

    def _poll_watcher(self):
        return PollWatcher(self.config.graveyard, self.names, self.config.poll_interval)

    def start(self):
        self.watcher.start(self.loop, self._changed)
        self.on_names(self.names)

    def _changed(self, names):
        if names == LOST:
            self.log.warn("lost the inotify watch on the graveyard; polling it instead",
                          graveyard=self.config.graveyard)
            self.watcher.close(self.loop)
            self.watcher = self._poll_watcher()
            self.watcher.start(self.loop, self._changed)
        self.on_names(self.names if names in (LOST, RESCAN) else names)

    def close(self):
        self.watcher.close(self.loop)


class PodDeaths:
    """Death deps whose containers the pod's status reports terminated (KUBEXIT_WATCH_POD),
    for containers with no kubexit and so no tombstone: images without Python.

    A thread follows the pod (kubeapi.PodFollower) and wakes the loop only when a dep's
    container has newly terminated; on_died(name, record) then gets a record with the
    container's finishedAt and exitCode. An API failure that waiting cannot heal is one
    warning and the end of following: the graveyard still counts.
    """

    def __init__(self, config, log, loop, on_died):
        from collections import deque

        from kubexit.kubeapi import PodFollower

        self.log = log
        self.loop = loop
        self.on_died = on_died
        self.running = set(config.death_deps)   # in the thread: not yet seen terminated
        self.terminated = deque()               # (name, record), from the thread to the loop
        self.names_checked = False
        self.closed = False
        self.follower = PodFollower(config, log, self._judge, "kubexit-pod-deaths",
                                    "watching death deps")
        loop.add_reader(self.follower.fileno(), self._readable)
        self.follower.start()

    def _judge(self, pod):
        """In the thread, for follow_pod: True once every dep has terminated."""
        if not self.names_checked:
            self.names_checked = True
            spec = pod.get("spec") or {}
            names = {c.get("name") for c in (spec.get("initContainers") or [])
                     + (spec.get("containers") or [])}
            unknown = sorted(self.running - names)
            if unknown:
                self.log.warn("death deps that are no container of the pod are watched in "
                              "the graveyard only", deps=",".join(unknown))
        status = pod.get("status") or {}
        newly = False
        for container in (status.get("initContainerStatuses") or []) + (
                status.get("containerStatuses") or []):
            state = (container.get("state") or {}).get("terminated")
            if state and container.get("name") in self.running:
                self.running.discard(container["name"])
                code = state.get("exitCode")
                self.terminated.append((container["name"], tombstone.Tombstone(
                    died=state.get("finishedAt") or utc_timestamp(),
                    exit_code=code if isinstance(code, int) else None)))
                newly = True
        if newly:
            self.follower.wake()
        return not self.running

    def _readable(self):
        self.follower.drain()
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
            self.loop.remove_reader(self.follower.fileno())
            self.follower.close()


class DeathWatch:
    """Reports when the death deps have died (the first, or all of them, by policy),
    counting deaths that happened before kubexit started.

    A dep born but not died whose liveness lock file exists is also waited on through
    the lock (see kubexit.liveness): its kubexit dying without `Died` counts as its
    death. on_death(name, record) then gets the dep's last record, with `died` None:
    the exit code is unknown. With KUBEXIT_WATCH_POD, a dep with no tombstone also dies
    when the pod's status says its container terminated (PodDeaths).
    """

    def __init__(self, config, log, loop, on_death):
        self.config = config
        self.log = log
        self.loop = loop
        self.on_death = on_death
        self.dead = {}
        self.fired = False
        self.lock_waits = {}      # dep name -> LockWait, while it is born and not died
        self.unlockable = set()   # deps whose lock the filesystem refused: tombstone only
        self.graveyard = GraveyardWatch(config, log, loop, config.death_deps, self._changed)
        self.pod = None

    def start(self):
        """Watch first, then scan, so that no death falls between the two."""
        self.graveyard.start()
        if self.config.watch_pod and not self.fired:
            self.log.debug("following the pod's status for death deps",
                           pod="%s/%s" % (self.config.namespace, self.config.pod_name))
            self.pod = PodDeaths(self.config, self.log, self.loop, self._container_terminated)

    def _changed(self, names):
        if self.fired:
            return
        for name in names:
            if name in self.dead:
                continue
            record = tombstone.read(os.path.join(self.config.graveyard, name))
            self.log.debug("tombstone changed", dep=name, tombstone=record)
            if record is None:
                continue
            if self._died(name, record) if record.died is not None else self._check_lock(name):
                return

    def _died(self, name, record):
        """Count the death; True when the policy says CMD must stop now."""
        self.dead[name] = record
        wait = self.lock_waits.pop(name, None)
        if wait is not None:
            wait.close()
        if self.config.death_policy == "any" or len(self.dead) == len(self.config.death_deps):
            self.fired = True
            for wait in self.lock_waits.values():
                wait.close()
            self.lock_waits.clear()
            self.on_death(name, record)
            if self.pod is not None:
                self.pod.close()  # after on_death: its join must not delay the stop signal
            return True
        self.log.info("death dep died; waiting for the other death deps", dep=name,
                      exit_code=record.exit_code)
        return False

    def _container_terminated(self, name, record):
        """From PodDeaths. A dep with a tombstone is judged by its tombstone alone."""
        if self.fired or name in self.dead:
            return
        if tombstone.read(os.path.join(self.config.graveyard, name)) is not None:
            self.log.debug("death dep's container terminated; its tombstone decides", dep=name)
            return
        self.log.info("death dep died, says the pod's status", dep=name,
                      exit_code=record.exit_code)
        self._died(name, record)

    def _check_lock(self, name):
        """A born, not died dep with a lock file (a Go kubexit has none): if the lock is
        free, its kubexit is gone and it counts as dead now (so a dep that crashed before
        kubexit started stops CMD from starting); if held, wait for it in a thread.
        True when the policy says CMD must stop now."""
        if name in self.lock_waits or name in self.unlockable:
            return False
        from kubexit import liveness

        path = liveness.lock_path(self.config.graveyard, name)
        try:
            fd = liveness.open_lock_file(path, create=False)
        except OSError:
            return False
        tombstone_path = os.path.join(self.config.graveyard, name)
        try:
            record = liveness.record_under_lock(fd, path, tombstone_path, blocking=False)
        except BlockingIOError:
            self.log.debug("waiting on the liveness lock", dep=name, path=path)
            self.lock_waits[name] = liveness.LockWait(
                self.loop, path, tombstone_path, fd, lambda wait: self._lock_freed(name, wait))
            return False
        except OSError as err:
            os.close(fd)
            self._unlockable(name, path, err.strerror)
            return False
        os.close(fd)
        return record is not None and self._lock_free(name, record)

    def _lock_freed(self, name, wait):
        """From a LockWait: the dep's kubexit has ended, by writing Died or by dying."""
        if self.lock_waits.get(name) is wait:
            del self.lock_waits[name]
        if self.fired or name in self.dead:
            return
        if wait.error is not None:
            self._unlockable(name, wait.path, wait.error)
        elif wait.record is None:
            self._changed({name})  # the lock file was replaced or the tombstone removed
        else:
            self._lock_free(name, wait.record)

    def _lock_free(self, name, record):
        if record.died is None:
            self.log.info("death dep died without writing Died: its kubexit was killed and "
                          "its liveness lock released", dep=name)
        return self._died(name, record)

    def _unlockable(self, name, path, reason):
        self.unlockable.add(name)
        self.log.warn("cannot wait on a death dep's liveness lock; watching its tombstone only",
                      dep=name, path=path, reason=reason)

    def close(self):
        self.graveyard.close()
        if self.pod is not None:
            self.pod.close()
        for wait in self.lock_waits.values():
            wait.close()
        self.lock_waits.clear()
