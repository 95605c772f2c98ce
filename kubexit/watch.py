"""Watching the graveyard for changes to the tombstones of named siblings.

Two watchers behind one interface, `start(loop, on_change)`: inotify when the kernel
and filesystem allow (no wake-up until a tombstone changes), polling otherwise. Both
report only the names they were asked about; RESCAN means "anything may have changed"
(an inotify queue overflow), LOST that the watch itself is gone (graveyard removed or
unmounted).
"""

import os

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
        fstype = inotify.remote_filesystem(graveyard)
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
