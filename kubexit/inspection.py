"""`kubexit --inspect`: a read-only table of a graveyard's tombstones."""

import os
import sys

from kubexit import tombstone
from kubexit.log import write_stderr


def crashed(graveyard, name):
    """Born, not died, and its liveness lock free with this Born in it: its kubexit was
    killed before Died."""
    from kubexit.liveness import last_word, lock_path, open_lock_file

    path = lock_path(graveyard, name)
    try:
        fd = open_lock_file(path, create=False)
    except OSError:
        return False  # no lock file: a Go kubexit
    try:
        word = last_word(fd, path, os.path.join(graveyard, name), blocking=False)
        return word is not None and word[1]
    except OSError:
        return False  # held: alive
    finally:
        os.close(fd)


def state(graveyard, name, record):
    """running, ready, dead or killed; restarting for a death the kubelet undoes."""
    if record.died is None and not crashed(graveyard, name):
        return "ready" if record.ready is not None else "running"
    if not record.final:
        return "restarting"
    return "dead" if record.died is not None else "killed"


def print_graveyard(graveyard):
    try:
        names = sorted(n for n in os.listdir(graveyard) if not n.startswith("."))
    except OSError as err:
        write_stderr("kubexit: cannot read graveyard %s: %s; pass the graveyard directory "
                     "(or set KUBEXIT_GRAVEYARD)" % (graveyard, err.strerror))
        return 2
    rows = [("NAME", "STATE", "RESTARTS", "BORN", "DIED", "EXIT")]
    for name in names:
        record = tombstone.read(os.path.join(graveyard, name))
        if record is None:
            rows.append((name, "unreadable", "-", "-", "-", "-"))
            continue
        rows.append((name, state(graveyard, name, record),
                     "-" if record.restarts is None else str(record.restarts),
                     record.born or "-", record.died or "-",
                     "-" if record.exit_code is None else str(record.exit_code)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        sys.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    return 0
