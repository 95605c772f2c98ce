"""Tombstones: the record of a process's birth and death in the graveyard.

Written the way the Go kubexit's reader expects (keys, order and quoting), atomically;
read tolerantly, because Go kubexits write in place and users write by hand.
"""

import os
import stat

MAX_SIZE = 64 * 1024
# Kubernetes' spellings, by their lower case: tombstones and the variable take any case.
RESTART_POLICIES = {"never": "Never", "onfailure": "OnFailure", "always": "Always"}


def death_is_final(restart_policy, exit_code, crashed=False):
    """Whether the kubelet leaves the container dead (contract section 8): never under
    Always; under OnFailure only after exit code 0; always under Never (or no policy,
    the Go kubexit's assumption). A crash is a failure whatever its code."""
    if restart_policy == "Always":
        return False
    if restart_policy == "OnFailure":
        return not crashed and exit_code == 0
    return True


class Tombstone:
    """What one tombstone says; `born`/`ready`/`died` keep the writer's time text.

    Ready (when CMD's readiness probe first passed), Restarts and RestartPolicy are
    kubexit's own keys: the Go kubexit ignores them. No RestartPolicy means Never.
    """

    __slots__ = ("born", "ready", "died", "exit_code", "restarts", "restart_policy")

    def __init__(self, born=None, died=None, exit_code=None, ready=None, restarts=None,
                 restart_policy=None):
        self.born = born
        self.ready = ready
        self.died = died
        self.exit_code = exit_code
        self.restarts = restarts
        self.restart_policy = restart_policy

    def __repr__(self):
        return "Tombstone(%s)" % ", ".join(
            "%s=%r" % (key, getattr(self, key)) for key in self.__slots__
            if getattr(self, key) is not None)

    def __eq__(self, other):
        return isinstance(other, Tombstone) and all(
            getattr(self, key) == getattr(other, key) for key in self.__slots__)

    @property
    def final(self):
        """This record's death, or its crash when `died` is None, ends the container
        for good."""
        return death_is_final(self.restart_policy, self.exit_code, crashed=self.died is None)

    def format(self):
        lines = []
        if self.born is not None:
            lines.append('Born: "%s"' % self.born)
        if self.died is not None:
            lines.append('Died: "%s"' % self.died)
        if self.exit_code is not None:
            lines.append("ExitCode: %d" % self.exit_code)
        # kubexit's own keys, after the Go kubexit's three.
        if self.ready is not None:
            lines.append('Ready: "%s"' % self.ready)
        if self.restarts is not None:
            lines.append("Restarts: %d" % self.restarts)
        if self.restart_policy is not None:
            lines.append('RestartPolicy: "%s"' % self.restart_policy)
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
        restarts=to_int(fields.get("restarts")),
        restart_policy=RESTART_POLICIES.get(str(fields.get("restartpolicy")).strip().lower()),
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


def first_record(path, restart_policy):
    """This run's record before anything happens: Restarts one more than the record
    a previous run of the same name left (0 with none)."""
    previous = read(path)
    restarts = 0 if previous is None else (previous.restarts or 0) + 1
    return Tombstone(restarts=restarts, restart_policy=restart_policy)


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
