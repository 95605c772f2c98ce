"""The least a death-dependency supervisor can do: the reaction baseline for kubexit.

Usage: inotify_kill.py DIR NAME CMD [ARG...]. Watches DIR with inotify, runs CMD, and sends
it SIGTERM as soon as a file called NAME is created, written or renamed into DIR.
"""

import ctypes
import os
import signal
import struct
import sys

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100
HEADER = struct.Struct("iIII")

libc = ctypes.CDLL(None, use_errno=True)
directory, name, command = sys.argv[1], sys.argv[2].encode(), sys.argv[3:]
fd = libc.inotify_init1(os.O_CLOEXEC)
if (
    fd < 0
    or libc.inotify_add_watch(fd, directory.encode(), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0
):
    sys.exit("inotify: " + os.strerror(ctypes.get_errno()))
child = os.posix_spawnp(command[0], command, os.environ)
while True:
    buffer, offset = os.read(fd, 65536), 0
    while offset < len(buffer):
        _, _, _, length = HEADER.unpack_from(buffer, offset)
        event_name = buffer[offset + HEADER.size : offset + HEADER.size + length].rstrip(b"\0")
        offset += HEADER.size + length
        if event_name == name:
            os.kill(child, signal.SIGTERM)
            _, status = os.waitpid(child, 0)
            sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
