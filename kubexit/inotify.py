"""The smallest inotify binding kubexit needs: init, add a watch, decode events.

Flags are plain ints rather than an IntEnum: importing enum costs start-up time that
every container pays.
"""

import ctypes
import os
import struct

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

EVENT_HEADER = struct.Struct("iIII")

# statfs f_type of filesystems whose changes from other nodes inotify never reports.
REMOTE_FILESYSTEMS = {
    0x6969: "nfs", 0x517B: "smb", 0xFF534D42: "cifs", 0xFE534D42: "smb2",
    0x65735546: "fuse", 0x01021997: "9p", 0x00C36400: "ceph", 0x5346414F: "afs",
    0x6B414653: "afs", 0x73757245: "coda", 0x01161970: "gfs2", 0x7461636F: "ocfs2",
    0x0BD00BD0: "lustre", 0x564C: "ncp",
}

_libc = ctypes.CDLL(None, use_errno=True)
_inotify_init1 = _libc.inotify_init1
_inotify_add_watch = _libc.inotify_add_watch
_inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_statfs = _libc.statfs


def _check(result):
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def init():
    """A non-blocking, close-on-exec inotify file descriptor."""
    return _check(_inotify_init1(IN_NONBLOCK | IN_CLOEXEC))


def add_watch(fd, path, mask):
    return _check(_inotify_add_watch(fd, os.fsencode(path), mask))


def filesystem_type(path):
    """statfs f_type: the first field of struct statfs, a C long on every Linux ABI."""
    buffer = ctypes.create_string_buffer(256)
    _check(_statfs(os.fsencode(path), buffer))
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


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
        _, mask, _, length = EVENT_HEADER.unpack_from(data, offset)
        offset += EVENT_HEADER.size
        events.append((mask, os.fsdecode(data[offset:offset + length].rstrip(b"\0"))))
        offset += length
    return events
