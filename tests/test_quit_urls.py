"""Quit URLs (issue 5): POSTed once after CMD exits and Died is on disk, bounded to 5 s,
never changing kubexit's exit status. Servers listen on 127.0.0.1 only."""

import signal
import socket
import time

import pytest
from conftest import wait_until
from test_probes import LocalHttp, wait_for_env


@pytest.fixture
def quit_server(graveyard):
    """Records, for each request, whether app's tombstone said Died when it arrived."""
    server = LocalHttp(observe=lambda: graveyard.is_dead("app"))
    yield server
    server.stop()


def quit_env(graveyard, urls, **extra):
    env = {"KUBEXIT_NAME": "app", "KUBEXIT_GRAVEYARD": str(graveyard),
           "KUBEXIT_QUIT_URLS": urls, "KUBEXIT_LOG_LEVEL": "debug"}
    env.update(extra)
    return env


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_called_once_after_died(run_kubexit, graveyard, quit_server):
    quit_server.answers["/quitquitquit"] = 200
    quit_server.answers["/shutdown"] = 202
    urls = "%s,%s" % (quit_server.url("/quitquitquit"), quit_server.url("/shutdown"))
    result = run_kubexit(quit_env(graveyard, urls), ["sh", "-c", "exit 3"])
    assert result.returncode == 3, result.stderr
    assert sorted(quit_server.requests) == [("POST", "/quitquitquit", True),
                                            ("POST", "/shutdown", True)]
    assert graveyard.record("app")["ExitCode"] == 3
    assert result.stderr.count("called quit URL") == 2


def test_https_quit_url_with_a_certificate_kubexit_cannot_verify(run_kubexit, graveyard, certs):
    server = LocalHttp(observe=lambda: graveyard.is_dead("app"), certs=certs)
    try:
        server.answers["/quitquitquit"] = 200
        result = run_kubexit(quit_env(graveyard, server.url("/quitquitquit")), ["true"])
        assert result.returncode == 0, result.stderr
        assert server.requests == [("POST", "/quitquitquit", True)]
        assert "called quit URL" in result.stderr
    finally:
        server.stop()


def test_retried_once_on_failure(run_kubexit, graveyard, quit_server):
    quit_server.answers["/quitquitquit"] = 500
    result = run_kubexit(quit_env(graveyard, quit_server.url("/quitquitquit")), ["true"])
    assert result.returncode == 0, result.stderr
    assert quit_server.requests == [("POST", "/quitquitquit", True)] * 2
    assert "quit URL failed" in result.stderr and "HTTP 500" in result.stderr


def test_unreachable_endpoint_changes_nothing(run_kubexit, graveyard):
    started = time.monotonic()
    result = run_kubexit(quit_env(graveyard, "http://127.0.0.1:%d/quit" % closed_port()),
                         ["sh", "-c", "exit 7"])
    assert result.returncode == 7, result.stderr
    assert time.monotonic() - started < 3
    assert "quit URL failed" in result.stderr and "Traceback" not in result.stderr
    assert graveyard.record("app")["ExitCode"] == 7


def test_hanging_endpoint_does_not_hold_the_exit(run_kubexit, graveyard, quit_server):
    quit_server.answers["/hang"] = "hang"
    quit_server.answers["/ok"] = 200
    urls = "%s,%s" % (quit_server.url("/hang"), quit_server.url("/ok"))
    started = time.monotonic()
    result = run_kubexit(quit_env(graveyard, urls), ["sh", "-c", "exit 5"], timeout=15)
    elapsed = time.monotonic() - started
    assert result.returncode == 5, result.stderr
    assert elapsed < 6.0, elapsed
    assert quit_server.requests_to("/ok") == [("POST", "/ok", True)]
    assert 1 <= len(quit_server.requests_to("/hang")) <= 2
    assert "quit URL failed" in result.stderr or "stopped waiting for quit URLs" in result.stderr


def test_called_when_cmd_never_started(run_kubexit, graveyard, quit_server, tmp_path):
    """A wait that fails still ends the pod's sidecars: the Job must not hang on them."""
    quit_server.answers["/quitquitquit"] = 200
    env = wait_for_env(graveyard, "file:%s" % (tmp_path / "never"), KUBEXIT_BIRTH_TIMEOUT="300ms",
                       KUBEXIT_QUIT_URLS=quit_server.url("/quitquitquit"))
    result = run_kubexit(env, ["true"])
    assert result.returncode == 1, result.stderr
    assert quit_server.requests == [("POST", "/quitquitquit", True)]


def assert_still_running_cmd(proc):
    """A window in which kubexit keeps running CMD (it answers a forwarded SIGWINCH)."""
    proc.send_signal(signal.SIGWINCH)
    proc.err.wait_for(lambda line: "forwarding signal signal=SIGWINCH" in line, 5)
    assert proc.poll() is None


def test_not_called_while_cmd_runs(start_kubexit, graveyard, quit_server):
    quit_server.answers["/quitquitquit"] = 200
    proc = start_kubexit(quit_env(graveyard, quit_server.url("/quitquitquit")),
                         ["sh", "-c", "cat >/dev/null"])
    proc.err.wait_for(lambda line: "started CMD" in line, 10)
    assert_still_running_cmd(proc)
    assert quit_server.requests == []
    proc.stdin.close()
    assert proc.wait(10) == 0
    wait_until(lambda: quit_server.requests == [("POST", "/quitquitquit", True)], 2)
