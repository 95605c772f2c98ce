"""Liveness locks: a kernel file lock that dies with its holder.

A kubexit killed together with its container (OOM kill, SIGKILL) never writes `Died`,
but the kernel releases its flock when the process is gone. So every kubexit holds an
exclusive flock on `<graveyard>/.<name>.lock` from before `Born` until after `Died`, and
a death watcher that sees a dep born but not died blocks on that lock in a thread: the
lock coming free without `Died` in the tombstone means the dep's kubexit died with it.

The holder writes its `Born` time into the lock file, and a free lock means a crash only
for the tombstone with that `Born`: across restarts, a lock left free by an earlier run,
or a dep now running without the lock (a Go kubexit), never reads as a crash.

The lock file is a dot-file, which the Go kubexit and `--inspect` ignore, and is never
removed: deleting a lock file that someone may be waiting on would split the lock in two.
"""

import fcntl
import os
import stat
import time

from kubexit import tombstone
from kubexit.loop import start_thread

# Busy means a watcher reading the tombstone (microseconds) or another live kubexit of
# the same name (forever): wait long enough for the first, not forever for the second.
BUSY_WAIT = 1.0


def lock_path(graveyard, name):
    """`.<name>.lock`; a name too long for NAME_MAX keeps a prefix and a hash of the rest."""
    if len(name) > 249:
        import hashlib

        name = name[:230] + "~" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return os.path.join(graveyard, ".%s.lock" % name)


def open_lock_file(path, create):
    """A close-on-exec fd of the regular file at path (never a symlink, FIFO or device);
    the holder's is writable, for its `Born`."""
    flags = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
    fd = os.open(path, flags, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError("%s is not a regular file" % path)
    return fd


class LivenessLock:
    """This kubexit's own lock: taken before `Born`, released after `Died`.

    Failing to take it never stops kubexit: it warns once and runs as the Go kubexit
    does, with watchers relying on its tombstone alone.
    """

    def __init__(self, graveyard, name, log):
        self.path = lock_path(graveyard, name)
        self.log = log
        self.fd = None

    def acquire(self, born):
        """Take the lock and write `born` (this run's Born) into it. Waits a bounded time,
        never for good: while a blocking flock waited for a holder that lives on, kubexit
        would act on no signal at all."""
        try:
            fd = open_lock_file(self.path, create=True)
        except OSError as err:
            self._without_lock(err.strerror or str(err))
            return
        try:
            if self._lock(fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, born.encode(), 0)
                self.fd = fd
                return
            reason = "held by another process for %gs (another kubexit of the same name?)" \
                % BUSY_WAIT
        except OSError as err:
            reason = "the graveyard's filesystem refuses file locks: %s" % err.strerror
        os.close(fd)
        self._without_lock(reason)

    @staticmethod
    def _lock(fd):
        """True once locked; False when still busy after BUSY_WAIT."""
        deadline = time.monotonic() + BUSY_WAIT
        pause = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _without_lock(self, reason):
        self.log.warn("running without a liveness lock: if this kubexit is killed, its "
                      "watchers learn it only from its tombstone", path=self.path, reason=reason)

    def release(self):
        """After `Died` is written; closing the only fd drops the flock."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class LockWait:
    """Waits in a daemon thread for a dep's lock to come free, then calls on_free(self)
    from the event loop, through a pipe, with `last_word` what the tombstone said then.

    The tombstone is read while the lock is held, so a restarting dep (which takes the
    lock before writing its fresh `Born`) cannot overwrite the dead one's last record in
    between; it just waits those microseconds. The lock is released at once. `last_word`
    is None when the lock file was replaced or the tombstone is gone (look again), and
    `error` is set when the filesystem refused the lock.
    """

    def __init__(self, loop, path, tombstone_path, fd, on_free):
        import threading

        self.loop = loop
        self.path = path
        self.tombstone_path = tombstone_path
        self.on_free = on_free
        self.last_word = None
        self.error = None
        self.closed = False
        self._read_end, self._write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        loop.add_reader(self._read_end, self._freed)
        start_thread(threading.Thread(target=self._wait, args=(fd,), name="kubexit-lock-wait",
                                      daemon=True))

    def _wait(self, fd):
        try:
            self.last_word = last_word(fd, self.path, self.tombstone_path, blocking=True)
        except OSError as err:
            self.error = err.strerror or str(err)
        finally:
            os.close(fd)
        try:
            os.write(self._write_end, b"!")
        except OSError:
            pass  # EPIPE: closed meanwhile, nobody wants the news
        finally:
            os.close(self._write_end)

    def _freed(self):
        self.close()
        self.on_free(self)

    def close(self):
        """Stop listening. The thread owns the write end and the lock fd: one still
        blocked in flock (which nothing interrupts) drops the lock the moment it gets it,
        closes them and ends."""
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self._read_end)
            os.close(self._read_end)


def last_word(fd, path, tombstone_path, blocking):
    """(record, crashed): the dep's tombstone read holding its lock (released at once),
    the last word of the kubexit that held it, and whether that kubexit died without
    `Died` (the record is its own, by the `Born` in the lock). None when the lock file
    was replaced or the tombstone is gone; BlockingIOError when not blocking and the
    lock is held."""
    fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        if not same_file(fd, path):
            return None
        record = tombstone.read(tombstone_path)
        if record is None:
            return None
        return record, record.died is None and record.born is not None \
            and record.born == holder_born(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def holder_born(fd):
    """The Born its holder wrote into the lock file ("" while it writes it)."""
    return os.pread(fd, 256, 0).decode("utf-8", "replace")


def same_file(fd, path):
    """The lock we hold is still the one at path (nobody replaced the file)."""
    try:
        there = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
