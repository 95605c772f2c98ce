"""Command line: options, usage errors, and wiring the lifecycle to the environment."""

import os
import sys

from kubexit import __version__
from kubexit.log import write_stderr

USAGE = """\
usage: kubexit [OPTION...] [--] CMD [ARG...]
       kubexit --inspect [GRAVEYARD]
       kubexit --inject [--image IMAGE] [--python PYTHON] [FILE]
       kubexit --check [FILE]
       kubexit --webhook --cert FILE --key FILE [--listen ADDR:PORT] [--image IMAGE]
                         [--python PYTHON]

Runs CMD, records its birth and death as a tombstone in the graveyard, holds it back
until its birth deps are ready, and stops it when a death dep dies.

options:
  -h, --help       show this help and exit
  -V, --version    show the version and exit
  --inspect [DIR]  print the graveyard's tombstones as a table (default $KUBEXIT_GRAVEYARD)
  --inject         read Kubernetes objects as JSON (FILE or stdin), write them with kubexit
                   wired in by their pods' kubexit/ annotations; --image: the image that
                   carries kubexit (default kubexit:latest), --python: the interpreter
                   that runs it in the app's image (default python3)
  --check          lint the kubexit wiring of the same input: exit 0 clean, 1 problems
  --webhook        serve --inject as a mutating admission webhook over HTTPS for pods
                   annotated kubexit/inject: "true" (default --listen 0.0.0.0:8443)

environment:
"""


MANIFEST_MODES = ("--inject", "--check", "--webhook")


def usage_error(message):
    write_stderr("kubexit: %s (see kubexit --help)" % message)
    return 2


def failed_start(status, environ):
    """A run that ends before it could start still writes Died, when KUBEXIT_NAME and
    the graveyard allow: a sibling waiting on this container must not wait forever."""
    from kubexit import tombstone
    from kubexit.config import failed_start_record
    from kubexit.log import utc_timestamp

    target = failed_start_record(environ)
    if target is not None:
        path, restart_policy = target
        record = tombstone.first_record(path, restart_policy)
        record.died = utc_timestamp()
        record.exit_code = status
        try:
            tombstone.write(path, record)
        except OSError as err:
            write_stderr("kubexit: cannot write tombstone %s: %s" % (path, err.strerror))
    return status


def print_help():
    from kubexit.config import ALIASES, VARIABLES

    width = max(len(v) for v in list(VARIABLES) + list(ALIASES))
    lines = ["  %-*s  %s" % (width, v, text) for v, text in VARIABLES.items()]
    lines.append("\nthe variables of kubexit forks, accepted as aliases:")
    lines += ["  %-*s  %s" % (width, v, text) for v, text in ALIASES.items()]
    sys.stdout.write(USAGE + "\n".join(lines) + "\n")


def main(args=None):
    args = sys.argv[1:] if args is None else args
    index = 0
    while index < len(args) and args[index].startswith("-"):
        option = args[index]
        if option == "--":
            index += 1
            break
        if option in ("-h", "--help"):
            print_help()
            return 0
        if option in ("-V", "--version"):
            sys.stdout.write("kubexit %s\n" % __version__)
            return 0
        if option in MANIFEST_MODES:
            from kubexit.modes import run_mode

            return run_mode(option, args[index + 1:])
        if option == "--inspect":
            from kubexit.inspection import print_graveyard

            rest = args[index + 1:]
            if len(rest) > 1:
                return usage_error("--inspect takes at most one directory")
            graveyard = rest[0] if rest else os.environ.get("KUBEXIT_GRAVEYARD", "/graveyard")
            return print_graveyard(graveyard)
        return failed_start(usage_error("unknown option %s" % option), os.environ)
    argv = args[index:]
    if not argv:
        return failed_start(usage_error("no CMD given"), os.environ)
    return supervise(argv)


def supervise(argv):
    import gc

    # No collection until CMD runs: start-up makes no cycles worth one, and a full pass
    # over the modules just imported cost about a millisecond here. The lifecycle turns
    # it back on once CMD has started (or the wait for the deps begins).
    gc.disable()
    from kubexit import config as configuration
    from kubexit.lifecycle import Lifecycle
    from kubexit.log import Log

    try:
        config = configuration.load(os.environ)
    except configuration.ConfigError as err:
        write_stderr("kubexit: %s" % err)
        return failed_start(2, os.environ)
    log = Log(config.name, config.log_level, config.log_format)
    for warning in config.warnings:
        log.warn(warning)
    lifecycle = Lifecycle(config, log, argv)
    try:
        status = lifecycle.run()
    except Exception:  # a bug: nothing may be left unsupervised, no sibling left waiting
        import traceback

        write_stderr(traceback.format_exc().rstrip())
        status = lifecycle.end_after_a_bug()
    # Everything is recorded; end without finalizing the interpreter, as a C supervisor
    # ends: a daemon thread still blocked in a connect or a TLS handshake must not wake
    # into a half torn-down runtime (a segfault, seen once in ~40 runs).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
