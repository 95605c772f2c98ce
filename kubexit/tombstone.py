"""Tombstones: the record of a process's birth and death in the graveyard.

Written the way the Go kubexit's reader expects (keys, order and quoting), atomically;
read tolerantly, because Go kubexits write in place and users write by hand.
"""

import os
import stat

MAX_SIZE = 64 * 1024


class Tombstone:
    """What one tombstone says; `born`/`ready`/`died` keep the writer's time text.

    Ready (when CMD's readiness probe first passed) is kubexit's own key: the Go kubexit
    ignores it, and a birth dep waits for it in the graveyard.
    """

    __slots__ = ("born", "ready", "died", "exit_code")

    def __init__(self, born=None, died=None, exit_code=None, ready=None):
        self.born = born
        self.ready = ready
        self.died = died
        self.exit_code = exit_code

    def __repr__(self):
        return "Tombstone(born=%r, ready=%r, died=%r, exit_code=%r)" % (
            self.born, self.ready, self.died, self.exit_code)

    def format(self):
        lines = []
        if self.born is not None:
            lines.append('Born: "%s"' % self.born)
        if self.died is not None:
            lines.append('Died: "%s"' % self.died)
        if self.exit_code is not None:
            lines.append("ExitCode: %d" % self.exit_code)
        if self.ready is not None:  # kubexit's own key: after the Go kubexit's three
            lines.append('Ready: "%s"' % self.ready)
        return ("\n".join(lines) + "\n").encode()


def parse(data):
    """YAML `key: value` lines or a JSON object; keys case-insensitive, unknown ones ignored.

    An empty file (a Go kubexit between truncate and write) means born, not died.
    """
    text = data.decode("utf-8", "replace").strip()
    fields = {}
    if text.startswith("{"):
        import json

        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            fields = {str(k).lower(): v for k, v in obj.items()}
    else:
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip():
                fields.setdefault(key.strip().lower(), unquote(value))
    return Tombstone(
        born=present(fields.get("born")),
        ready=present(fields.get("ready")),
        died=present(fields.get("died")),
        exit_code=to_int(fields.get("exitcode")),
    )


def unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def present(value):
    """A time that is there; YAML's null spellings and empty values are absent."""
    if value is None:
        return None
    value = str(value).strip()
    return None if value in ("", "null", "Null", "NULL", "~") else value


def to_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def read(path):
    """The tombstone at path, or None when it is missing, not a regular file, or too big.

    O_NONBLOCK keeps a FIFO from blocking the open; O_NOFOLLOW keeps a symlink from
    pointing the reader outside the graveyard.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SIZE:
            return None
        data = os.read(fd, MAX_SIZE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        return None
    return parse(data)


def write(path, tombstone):
    """Replace the tombstone atomically: a dot-named temporary file, then a rename."""
    directory, name = os.path.split(path)
    # A dot-name, truncated so that a 253-character tombstone name still fits NAME_MAX.
    temporary = os.path.join(directory, ".%s.%s" % (name[:230], os.urandom(4).hex()))
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.write(fd, tombstone.format())
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
