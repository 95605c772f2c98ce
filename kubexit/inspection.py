"""`kubexit --inspect`: a read-only table of a graveyard's tombstones."""

import os
import sys

from kubexit import tombstone
from kubexit.log import write_stderr


def supervisor_gone(graveyard, name):
    """Born, not died, and its liveness lock free: its kubexit was killed before Died."""
    import fcntl

    from kubexit.liveness import lock_path, open_lock_file

    try:
        fd = open_lock_file(lock_path(graveyard, name), create=False)
    except OSError:
        return False  # no lock file: a Go kubexit, or one from before liveness locks
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def print_graveyard(graveyard):
    try:
        names = sorted(n for n in os.listdir(graveyard) if not n.startswith("."))
    except OSError as err:
        write_stderr("kubexit: cannot read graveyard %s: %s; pass the graveyard directory "
                     "(or set KUBEXIT_GRAVEYARD)" % (graveyard, err.strerror))
        return 2
    rows = [("NAME", "STATE", "BORN", "DIED", "EXIT")]
    for name in names:
        record = tombstone.read(os.path.join(graveyard, name))
        if record is None:
            rows.append((name, "unreadable", "-", "-", "-"))
            continue
        state = ("dead" if record.died is not None
                 else "killed" if supervisor_gone(graveyard, name)
                 else "ready" if record.ready is not None else "running")
        exit_code = "-" if record.exit_code is None else str(record.exit_code)
        rows.append((name, state, record.born or "-", record.died or "-", exit_code))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        sys.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    return 0
