"""The CMD the black-box tests run under kubexit (like dumb-init's print_signals.py).

Usage: signal_child.py MODE [ARG...]

  catch-all            handle every catchable signal, print "ready", then print
                       "signal N" for each signal received; exit 0 at stdin EOF
  wait [--on-term X]   print "ready" and wait for stdin EOF (then exit 0); print
                       "signal 10" on SIGUSR1; on SIGTERM: X=default dies, X=print
                       prints "signal 15" and keeps waiting, X=exit=N prints
                       "signal 15" and exits N, X=slow-exit=S prints "signal 15" and
                       exits 0 after S seconds, X=died?=PATH prints "signal 15 after
                       Died" or "signal 15 before Died" (by the tombstone at PATH)
                       and exits 0
  die-by N             kill itself with signal N (default disposition, no core dump)
  fds                  print a JSON list of its open file descriptors
  environ [ARG...]     print a JSON object: env, cwd, argv (the ARGs as received)
  orphans N CODE [--wait]
                       leave N orphans behind that exit once re-parented, print
                       "orphans-exited" when they have, then (with --wait) wait for
                       stdin EOF, and exit CODE

Runs on Python 3.8+, standard library only; output is unbuffered os.write.
"""

import json
import os
import resource
import select
import signal
import sys
import time

UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


def say(line):
    os.write(1, (line + "\n").encode())


def wait_for_stdin_eof():
    """Wait for stdin's end of file. A blocking read alone would lose a race: a signal that
    lands after the interpreter last checked for signals and before read() starts has
    only its C-level handler run, and its Python handler then waits until read() returns
    (seen once in ~100 runs). The wakeup fd makes select() return for it instead."""
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    while True:
        ready = select.select([0, wakeup_r], [], [])[0]
        if wakeup_r in ready:
            os.read(wakeup_r, 4096)  # the handlers run as the interpreter moves on
        if 0 in ready and not os.read(0, 65536):
            return


def print_signal(signum, frame):
    say("signal %d" % signum)


def catch_all():
    for signum in signal.valid_signals():
        if signum not in UNCATCHABLE and signum != signal.SIGCHLD:
            signal.signal(signum, print_signal)
    say("ready")
    wait_for_stdin_eof()


def wait(args):
    signal.signal(signal.SIGUSR1, print_signal)
    on_term = "default"
    if args[:1] == ["--on-term"]:
        on_term = args[1]
    if on_term == "print":
        signal.signal(signal.SIGTERM, print_signal)
    elif on_term.startswith("exit="):
        code = int(on_term[len("exit="):])

        def exit_on_term(signum, frame):
            say("signal %d" % signum)
            os._exit(code)

        signal.signal(signal.SIGTERM, exit_on_term)
    elif on_term.startswith("slow-exit="):
        delay = float(on_term[len("slow-exit="):])

        def slow_exit_on_term(signum, frame):
            say("signal %d" % signum)
            time.sleep(delay)
            os._exit(0)

        signal.signal(signal.SIGTERM, slow_exit_on_term)
    elif on_term.startswith("died?="):
        path = on_term[len("died?="):]

        def check_tombstone_on_term(signum, frame):
            try:
                with open(path) as tombstone:
                    died = "Died" in tombstone.read()
            except OSError:
                died = False
            say("signal %d %s Died" % (signum, "after" if died else "before"))
            os._exit(0)

        signal.signal(signal.SIGTERM, check_tombstone_on_term)
    say("ready")
    wait_for_stdin_eof()


def die_by(signum):
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if signum not in UNCATCHABLE:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    time.sleep(5)
    sys.exit(99)


def open_fds():
    fd_dir = "/proc/self/fd"
    listing = os.open(fd_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        entries = os.listdir(listing)
        fds = []
        for name in entries:
            fd = int(name)
            if fd == listing:
                continue
            try:
                fds.append([fd, os.readlink(os.path.join(fd_dir, name))])
            except OSError:
                continue
    finally:
        os.close(listing)
    say(json.dumps(sorted(fds)))


def environ(args):
    say(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": args}))


def process_state(pid):
    """'Z' for a zombie, None once the process is gone (reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def orphans(count, code, then_wait):
    grandchildren = []
    for _ in range(count):
        read_end, write_end = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.close(read_end)
            orphan = os.fork()
            if orphan == 0:
                os.close(write_end)
                # Exit only once re-parented, so that the zombie is init's to reap.
                deadline = time.monotonic() + 10
                while os.getppid() != 1 and time.monotonic() < deadline:
                    time.sleep(0.001)
                os._exit(0)
            os.write(write_end, b"%d" % orphan)
            os._exit(0)
        os.close(write_end)
        grandchildren.append(int(os.read(read_end, 32)))
        os.close(read_end)
        os.waitpid(middle, 0)
    if not then_wait:
        sys.exit(code)
    deadline = time.monotonic() + 10
    while any(process_state(pid) not in (None, "Z") for pid in grandchildren):
        if time.monotonic() > deadline:
            say("orphans-still-running")
            sys.exit(98)
        time.sleep(0.001)
    say("orphans-exited %s" % " ".join(str(pid) for pid in grandchildren))
    wait_for_stdin_eof()
    sys.exit(code)


def main(argv):
    mode, args = argv[0], argv[1:]
    if mode == "catch-all":
        catch_all()
    elif mode == "wait":
        wait(args)
    elif mode == "die-by":
        die_by(int(args[0]))
    elif mode == "fds":
        open_fds()
    elif mode == "environ":
        environ(args)
    elif mode == "orphans":
        orphans(int(args[0]), int(args[1]), "--wait" in args[2:])
    else:
        sys.exit("signal_child.py: unknown mode %r" % mode)


if __name__ == "__main__":
    main(sys.argv[1:])
