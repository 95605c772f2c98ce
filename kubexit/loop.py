"""The one place kubexit waits: an epoll over file descriptors, signals and deadlines.

Signals arrive through Python's wakeup fd (the C handler writes the signal number to a
pipe), so a signal, a tombstone change and a timer are all just a readable fd or an
expired deadline, handled in order in the main thread. Nothing polls while idle.
"""

import _signal
import os
import select
import time

UNCATCHABLE = (_signal.SIGKILL, _signal.SIGSTOP)


def catchable_signals():
    return sorted(s for s in _signal.valid_signals() if s not in UNCATCHABLE)


def start_thread(thread):
    """Start a thread of kubexit's with every signal blocked in it: signals stay with the
    main thread and its wakeup fd, and a SIGPIPE from the thread's own write to a closed
    socket stays pending there instead of reaching CMD."""
    mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, catchable_signals())
    try:
        thread.start()
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
    return thread


def _ignore_in_handler(signum, frame):
    """The wakeup fd carries the news; the Python-level handler has nothing to do."""


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when, callback):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class EventLoop:
    def __init__(self):
        self._epoll = select.epoll()
        self._readers = {}
        self._timers = []
        self.on_signal = None

    def add_reader(self, fd, callback):
        self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = callback

    def remove_reader(self, fd):
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def call_later(self, delay, callback):
        timer = Timer(time.monotonic() + delay, callback)
        self._timers.append(timer)
        return timer

    def catch_signals(self, on_signal, ignored=()):
        """Route every catchable signal but `ignored` to on_signal(signum), from the loop."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        _signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for signum in catchable_signals():
            _signal.signal(signum, _signal.SIG_IGN if signum in ignored else _ignore_in_handler)
        self.on_signal = on_signal
        self.add_reader(read_end, lambda: self._deliver_signals(read_end))

    def _deliver_signals(self, fd):
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        for signum in data:
            self.on_signal(signum)

    def run_until(self, done):
        """Dispatch events until done() is true."""
        while not done():
            self._run_once()

    def _run_once(self):
        self._timers = [t for t in self._timers if not t.cancelled]
        timeout = -1
        if self._timers:
            timeout = max(0.0, min(t.when for t in self._timers) - time.monotonic())
        for fd, _ in self._epoll.poll(timeout):
            callback = self._readers.get(fd)
            if callback is not None:
                callback()
        now = time.monotonic()
        for timer in [t for t in self._timers if t.when <= now and not t.cancelled]:
            timer.cancelled = True
            timer.callback()
