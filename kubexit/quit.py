"""Quit endpoints: tell sidecars that cannot run kubexit that CMD is done.

istio-proxy's /quitquitquit, linkerd's /shutdown and the like end a sidecar whose image
has no Python. Each URL gets a POST in a daemon thread of its own, with a short timeout
and one retry; the event loop stops waiting after QUIT_BUDGET whatever the threads are
doing (a DNS lookup cannot be timed out from inside), so a dead or hanging endpoint
delays kubexit's exit by at most that, and never changes its exit status.
"""

import os
import threading
import time

from kubexit.loop import start_thread

QUIT_BUDGET = 5.0
ATTEMPT_TIMEOUT = 2.0
RETRY_PAUSE = 0.2


def post(url, timeout):
    """(ok, what happened): any answer below 400 is taken as heard."""
    from kubexit.probe import http_status

    status, what = http_status("POST", url, timeout)
    return status is not None and status < 400, what


class QuitCalls:
    """POSTs to every URL at once; `finished` once all have answered or failed, or the
    budget is spent. The event loop waits on the pipe, and on a timer for the budget."""

    def __init__(self, urls, log, loop):
        self._log = log
        self._loop = loop
        self._lock = threading.Lock()
        self._done = 0
        self._total = len(urls)
        self._closed = False
        self._out_of_time = False
        self._deadline = time.monotonic() + QUIT_BUDGET
        self._read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        loop.add_reader(self._read_fd, self._drain)
        self._timer = loop.call_later(QUIT_BUDGET, self._give_up)
        for url in urls:
            start_thread(threading.Thread(target=self._call, args=(url,), name="kubexit-quit",
                                          daemon=True))

    @property
    def finished(self):
        with self._lock:
            return self._out_of_time or self._done == self._total

    def close(self):
        self._timer.cancel()
        with self._lock:
            self._closed = True
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            os.close(self._write_fd)

    def _give_up(self):
        with self._lock:
            self._out_of_time = True
            waiting = self._total - self._done
        self._log.warn("stopped waiting for quit URLs after %gs" % QUIT_BUDGET, waiting=waiting)

    def _drain(self):
        try:
            os.read(self._read_fd, 4096)
        except BlockingIOError:
            pass

    def _call(self, url):
        ok, result = False, "no time left"
        for attempt in (1, 2):
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                break
            ok, result = post(url, min(ATTEMPT_TIMEOUT, remaining))
            if ok or attempt == 2:
                break
            self._log.debug("quit URL failed; retrying", url=url.text, result=result)
            time.sleep(min(RETRY_PAUSE, max(0.0, self._deadline - time.monotonic())))
        if ok:
            self._log.info("called quit URL", url=url.text, result=result)
        else:
            self._log.warn("quit URL failed", url=url.text, result=result)
        self._report()

    def _report(self):
        with self._lock:
            if self._closed:
                return
            self._done += 1
            try:
                os.write(self._write_fd, b"!")
            except BlockingIOError:
                pass
