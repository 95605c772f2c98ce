"""kubexit's own log lines: stderr only, text or JSON, filtered by level.

Written with os.write on fd 2 so that a line is one system call (never interleaved
with CMD's output mid-line) and no buffering survives a fork or an exit.
"""

import _signal
import os
import time

LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40, "off": 100}


def utc_timestamp(digits=None):
    """RFC 3339 in UTC. By default as Go's RFC3339Nano writes tombstones (trailing zeros
    of the fraction trimmed); with `digits`, a fixed-width fraction for log lines."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    nanos = "%09d" % nanos
    fraction = nanos.rstrip("0") if digits is None else nanos[:digits]
    return whole + ("." + fraction if fraction else "") + "Z"


class Log:
    """A tiny structured logger; `fields` become key=value (text) or JSON keys."""

    def __init__(self, name=None, level="info", fmt="text"):
        self.name = name
        self.threshold = LEVELS[level]
        self.fmt = fmt

    def debug(self, msg, **fields):
        self._emit("debug", 10, msg, fields)

    def info(self, msg, **fields):
        self._emit("info", 20, msg, fields)

    def warn(self, msg, **fields):
        self._emit("warn", 30, msg, fields)

    def error(self, msg, **fields):
        self._emit("error", 40, msg, fields)

    def _emit(self, level, rank, msg, fields):
        if rank < self.threshold:
            return
        if self.fmt == "json":
            import json

            record = {"time": utc_timestamp(digits=6), "level": level, "logger": "kubexit"}
            if self.name:
                record["name"] = self.name
            record["msg"] = msg
            record.update(fields)
            line = json.dumps(record, default=str)
        else:
            who = "kubexit[%s]" % self.name if self.name else "kubexit"
            extra = "".join(" %s=%s" % (k, logfmt(v)) for k, v in fields.items())
            line = "%s %s %s: %s%s" % (utc_timestamp(digits=3), who, level,
                                       msg.replace("\n", "\\n"), extra)
        write_stderr(line)


def logfmt(value):
    """A field value that keeps the record on one line and splittable on spaces."""
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t\\'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"%s"' % escaped.replace("\n", "\\n").replace("\t", "\\t")


def write_termination_message(path, line, log):
    """The one line `kubectl describe pod` shows as the container's termination message."""
    if not path:
        return
    try:
        flags = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOCTTY
        fd = os.open(path, flags | (0 if path == "/dev/termination-log" else os.O_CREAT), 0o644)
        try:
            os.write(fd, line.encode("utf-8", "backslashreplace") + b"\n")
        finally:
            os.close(fd)
    except OSError as err:
        log.debug("cannot write the termination message", path=path, error=err.strerror)


def write_stderr(line):
    """Write one line; a closed or broken stderr must never stop the supervisor, nor
    signal CMD."""
    try:
        write_without_sigpipe(2, (line + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def write_without_sigpipe(fd, data):
    """os.write to a pipe of kubexit's own: a reader gone is BrokenPipeError only. The
    SIGPIPE that the write raised is taken back before the loop could forward it to CMD
    as though someone had sent it."""
    mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, (_signal.SIGPIPE,))
    try:
        return os.write(fd, data)
    except BrokenPipeError:
        _signal.sigtimedwait((_signal.SIGPIPE,), 0)
        raise
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
