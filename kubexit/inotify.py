"""The smallest inotify binding kubexit needs: init, add a watch, decode events, and
whether the graveyard's filesystem reports other hosts' writes at all.

Flags are plain ints rather than an IntEnum: importing enum costs start-up time that
every container pays.
"""

import os
import sys

from kubexit.libc import call

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

EVENT_HEADER_SIZE = 16   # struct inotify_event: wd, mask, cookie, len; then the name

# Filesystems whose changes made on other hosts inotify never reports (mountinfo names).
REMOTE_FILESYSTEMS = ("nfs", "nfs4", "smb3", "smbfs", "cifs", "9p", "ceph", "afs", "coda",
                      "gfs2", "ocfs2", "lustre", "ncpfs", "glusterfs")


def init():
    """A non-blocking, close-on-exec inotify file descriptor."""
    return call("inotify_init1", IN_NONBLOCK | IN_CLOEXEC)


def add_watch(fd, path, mask):
    return call("inotify_add_watch", fd, os.fsencode(path), mask)


def remote_filesystem(path):
    """The type of the remote (or FUSE) filesystem `path` is on, from the mount whose
    device is its st_dev in /proc/self/mountinfo; None for a local one or when unknown."""
    device = os.stat(path).st_dev
    wanted = "%d:%d" % (os.major(device), os.minor(device))
    try:
        with open("/proc/self/mountinfo", "rb") as file:
            mounts = file.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in mounts:
        fields, _, rest = line.partition(" - ")
        fields = fields.split()
        if len(fields) > 2 and fields[2] == wanted:
            fstype = rest.split(" ", 1)[0]
            if fstype in REMOTE_FILESYSTEMS or fstype.startswith("fuse"):
                return fstype
            return None
    return None


def read_events(fd):
    """Decode one read's worth of events as (mask, name); epoll (level-triggered) brings
    the reader back if more are queued."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return []
    events = []
    offset = 0
    while offset < len(data):
        mask = int.from_bytes(data[offset + 4:offset + 8], sys.byteorder)
        length = int.from_bytes(data[offset + 12:offset + 16], sys.byteorder)
        offset += EVENT_HEADER_SIZE
        events.append((mask, os.fsdecode(data[offset:offset + length].rstrip(b"\0"))))
        offset += length
    return events
