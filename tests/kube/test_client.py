"""kubexit.birth, kubexit.podwatch and kubexit.apiclient, in-process, against the test API server.

These run the real client over real TLS sockets; only the process boundary is missing
(test_birth_deps.py covers the same paths through dist/kubexit.pyz).
"""

import collections
import os
import select
import shutil
import threading
import time

import pytest

from kubexit import apiclient, podwatch
from kubexit.birth import BirthWatch

Config = collections.namedtuple(
    "Config",
    "name birth_deps birth_timeout birth_condition pod_name namespace api_host api_port "
    "service_account_dir",
)


class RecordingLog:
    def __init__(self):
        self.lines = []
        self.lock = threading.Lock()

    def _add(self, level, msg, fields):
        with self.lock:
            self.lines.append((level, msg, fields))

    def debug(self, msg, **fields):
        self._add("debug", msg, fields)

    def info(self, msg, **fields):
        self._add("info", msg, fields)

    def warn(self, msg, **fields):
        self._add("warn", msg, fields)

    def error(self, msg, **fields):
        self._add("error", msg, fields)


def config_for(api, deps=("proxy",), condition="ready", pod="web", host=None):
    return Config(
        "app",
        tuple(deps),
        30.0,
        condition,
        pod,
        api.namespace,
        host or api.host,
        api.port,
        api.sa_dir,
    )


def outcome(watch, timeout=10.0):
    """'ready' or the failure message, waiting on fileno() as the event loop does."""
    deadline = time.monotonic() + timeout
    while True:
        watch.drain()
        if watch.finished:
            return "ready" if watch.failure is None else "failed: " + watch.failure
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "pending"
        select.select([watch.fileno()], [], [], remaining)


def follow_births(config, log):
    """A PodFollower with one BirthWatch subscribed, as the lifecycle makes them: it
    finishes once every birth dep is ready."""
    follower = podwatch.PodFollower(config, log)
    follower.subscribe(BirthWatch(config, log, lambda: None))
    return follower


class Reader:
    """A subscriber that never has news and never is done: a long-lived watch."""

    purpose = "watching death deps"
    urgent = False

    def judge(self, pod):
        return False, False

    def readable(self):
        pass


@pytest.fixture
def watches():
    """BirthWatch objects made by a test, all closed at its end."""
    made = []

    def make(config, log=None):
        watch = follow_births(config, log or RecordingLog())
        made.append(watch)
        return watch

    yield make
    for watch in made:
        watch.close()


def web_pod(api, ready_proxy=False):
    api.add_pod("web", containers=["app", "proxy"])
    if ready_proxy:
        api.ready("web", "proxy")


def test_ready_at_start_needs_one_list_and_no_watch(api, watches):
    web_pod(api, ready_proxy=True)
    watch = watches(config_for(api))
    assert outcome(watch) == "ready"
    assert [r.kind for r in api.requests] == ["list"]
    request = api.requests[0]
    assert request.query["fieldSelector"] == ["metadata.name=web"]
    assert request.authorization == "Bearer " + api.token


def test_ready_later_with_exactly_one_list_and_one_watch(api, watches):
    web_pod(api)
    list_rv = api.pod("web")["metadata"]["resourceVersion"]
    watch = watches(config_for(api, deps=("proxy", "app")))
    api.watching()
    assert outcome(watch, 0.2) == "pending"
    api.ready("web", "proxy")
    api.run_container("web", "app")
    assert outcome(watch, 0.2) == "pending"
    api.ready("web", "app")
    assert outcome(watch) == "ready"
    assert [r.kind for r in api.requests] == ["list", "watch"]
    query = api.requests[1].query
    assert query["watch"] == ["1"] and query["allowWatchBookmarks"] == ["true"]
    assert query["fieldSelector"] == ["metadata.name=web"] and int(query["timeoutSeconds"][0]) > 0
    assert query["resourceVersion"] == [list_rv]


def test_native_sidecar_in_init_container_statuses(api, watches):
    api.add_pod("web", containers=["app"], sidecars=["proxy"])
    watch = watches(config_for(api))
    api.watching()
    api.run_container("web", "proxy")
    assert outcome(watch, 0.2) == "pending"
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"


def test_big_pod_list_in_chunks(api, watches):
    sidecars = ["sidecar-%02d" % i for i in range(12)]
    api.add_pod("web", containers=["app"], sidecars=sidecars)
    for name in sidecars:
        api.ready("web", name)
    assert outcome(watches(config_for(api, deps=sidecars))) == "ready"
    assert [r.kind for r in api.requests] == ["list"]


def test_started_condition(api, watches):
    web_pod(api)
    watch = watches(config_for(api, condition="started"))
    api.watching()
    api.run_container("web", "proxy")
    assert outcome(watch) == "ready"
    assert api.pod("web")["status"]["containerStatuses"][1]["ready"] is False


def test_terminated_dep_is_not_ready(api, watches):
    web_pod(api)
    watch = watches(config_for(api))
    api.watching()
    api.run_container("web", "proxy")
    api.terminate("web", "proxy", exit_code=1)
    api.wait_until(lambda s: len(s.events_sent) == 2)
    assert outcome(watch, 0.3) == "pending"
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"


def test_bookmarks_move_the_resume_point(api, watches):
    web_pod(api)
    api.add_pod("other")
    watch = watches(config_for(api))
    api.watching()
    api.ready("other", "app")
    api.bookmark()
    bookmark_rv = api.pod("other")["metadata"]["resourceVersion"]
    api.wait_until(lambda s: [kind for _, kind, _ in s.events_sent] == ["BOOKMARK"])
    api.end_watches()
    api.watching(count=2)
    assert api.requests_of("watch")[1].query["resourceVersion"] == [bookmark_rv]
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"


@pytest.mark.parametrize("fault", ["expired_event", "http_410"])
def test_expired_watch_relists(api, watches, fault):
    web_pod(api)
    if fault == "expired_event":
        api.inject("expired_event", on="watch")
    else:
        api.inject("status", on="watch", code=410)
    watch = watches(config_for(api))
    api.watching(count=2)
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"
    assert [r.kind for r in api.requests] == ["list", "watch", "list", "watch"]


def test_too_old_resource_version_relists(api, watches):
    """A real expiry: a change the stream missed, then compaction; the resume gets 410."""
    web_pod(api)
    api.inject("stall", on="watch")
    watch = watches(config_for(api))
    api.watching()
    api.run_container("web", "proxy")
    api.compact()
    api.end_watches()
    api.watching(count=3)
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"
    assert [r.kind for r in api.requests] == ["list", "watch", "watch", "list", "watch"]


def test_429_honours_retry_after(api, watches):
    web_pod(api)
    api.inject("status", on="watch", code=429, retry_after=1)
    log = RecordingLog()
    watch = watches(config_for(api), log)
    api.watching(count=2)
    first, second = api.requests_of("watch")
    assert 0.95 <= second.time - first.time < 3
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"
    assert any(level == "warn" and fields.get("status") == 429 for level, _, fields in log.lines)


@pytest.mark.parametrize("code", [500, 503])
def test_server_errors_back_off_and_recover(api, watches, code):
    web_pod(api)
    api.inject("status", on="any", code=code, count=3)
    watch = watches(config_for(api))
    api.watching()
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"
    times = [r.time for r in api.requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(api.requests) == 5 and gaps[2] > gaps[0] and gaps[2] < 2


def test_stream_cut_mid_line_resumes_from_last_resource_version(api, watches):
    web_pod(api)
    watch = watches(config_for(api))
    api.watching()
    rv = api.run_container("web", "proxy")
    api.wait_until(lambda s: len(s.events_sent) == 1)
    api.inject("cut_mid_line", on="watch")
    api.end_watches()
    api.watching(count=2)
    api.ready("web", "app")
    api.watching(count=3)
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"
    watches_made = api.requests_of("watch")
    assert [w.query["resourceVersion"][0] for w in watches_made[1:]] == [str(rv), str(rv)]
    assert len(api.requests_of("list")) == 1


def test_events_split_across_chunks(api, watches):
    web_pod(api)
    api.inject("split_chunks", on="watch", pieces=7)
    watch = watches(config_for(api))
    api.watching()
    api.run_container("web", "proxy")
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"


def test_a_silent_birth_watch_is_replaced_by_a_fresh_list(api, watches, monkeypatch):
    """No byte for URGENT_SILENCE (30 s; 1 s here): the pod is read again, and a
    readiness change made during the silence is seen."""
    monkeypatch.setattr(podwatch, "URGENT_SILENCE", 1.0)
    web_pod(api)
    api.inject("stall", on="watch")
    log = RecordingLog()
    watch = watches(config_for(api), log)
    api.watching()
    api.ready("web", "proxy")
    assert outcome(watch, 0.5) == "pending"
    assert outcome(watch, 5) == "ready"
    assert [r.kind for r in api.requests] == ["list", "watch", "list"]
    assert any("stalled (nothing for 1s)" in msg for _, msg, _ in log.lines)


def test_long_watches_keep_their_silence_bound_and_tcp_keepalive(api, monkeypatch):
    """KUBEXIT_WATCH_POD's watch: silence allowed up to timeoutSeconds + 30 (one request per
    5 minutes on a healthy idle watch), and keepalive finds a dead peer within 60 s."""
    import socket

    web_pod(api)
    follower = podwatch.PodFollower(config_for(api), RecordingLog())
    follower.subscribe(Reader())
    try:
        api.watching()
        sock = follower._client._sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        idle, interval, count = (sock.getsockopt(socket.IPPROTO_TCP, option) for option in (
            socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT))
        assert idle + interval * count <= 60
        assert sock.gettimeout() == podwatch.WATCH_TIMEOUT_SECONDS + apiclient.STALL_GRACE_SECONDS
        (watch,) = api.requests_of("watch")
        assert watch.query["timeoutSeconds"] == ["300"]
    finally:
        follower.close()


def test_rotated_token_is_reread_after_401(api, watches):
    web_pod(api)
    watch = watches(config_for(api))
    api.watching()
    old = api.token
    api.rotate_token()
    api.watching(count=3)
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"
    auth = [r.authorization for r in api.requests]
    assert auth == ["Bearer " + old] * 3 + ["Bearer " + api.token]


def test_token_older_than_a_minute_is_reread_before_reconnecting(api, watches, monkeypatch):
    monkeypatch.setattr(apiclient, "TOKEN_MAX_AGE", 0.0)
    web_pod(api)
    watch = watches(config_for(api))
    api.watching()
    old = api.token
    api.token = "rotated"
    api.valid_tokens = {old, "rotated"}
    api.write_service_account()
    api.end_watches()
    api.watching(count=2)
    api.ready("web", "proxy")
    assert outcome(watch) == "ready"
    assert [r.authorization for r in api.requests] == ["Bearer " + old] * 2 + ["Bearer rotated"]


def test_forbidden_fails_fast_naming_verb_and_rule(api, watches):
    web_pod(api)
    api.denied_verbs = {"list", "watch"}
    watch = watches(config_for(api))
    message = outcome(watch, 3)
    assert message.startswith(
        "failed: service account system:serviceaccount:default:kubexit may not list pods "
        "in namespace default (403 Forbidden)"
    )
    assert '{apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"]}' in message
    assert len(api.requests) == 1 and "\n" not in message


def test_forbidden_watch_names_watch(api, watches):
    web_pod(api)
    api.denied_verbs = {"watch"}
    message = outcome(watches(config_for(api)), 3)
    assert "may not watch pods" in message and [r.kind for r in api.requests] == ["list", "watch"]


def test_unauthorized_after_reread_fails_fast(api, watches):
    web_pod(api)
    api.valid_tokens = set()
    message = outcome(watches(config_for(api)), 3)
    assert "401 Unauthorized" in message and api.sa_dir + "/token" in message
    assert len(api.requests) == 2


def test_missing_pod_fails_fast(api, watches):
    web_pod(api)
    message = outcome(watches(config_for(api, pod="wbe")), 3)
    assert message.startswith(
        'failed: pod "wbe" not found in namespace "default": set KUBEXIT_POD_NAME'
    )


def test_unknown_dep_lists_the_containers(api, watches):
    api.add_pod("web", containers=["app"], sidecars=["proxy"])
    message = outcome(watches(config_for(api, deps=("proxy", "prxy"))), 3)
    assert message == (
        "failed: KUBEXIT_BIRTH_DEPS names prxy, which is no container of pod default/web "
        "(its containers: proxy, app); fix KUBEXIT_BIRTH_DEPS"
    )


@pytest.mark.parametrize("how", ["deletionTimestamp", "DELETED"])
def test_pod_deletion_fails_fast(api, watches, how):
    web_pod(api)
    watch = watches(config_for(api))
    api.watching()
    if how == "DELETED":
        api.delete_pod("web")
        assert "was deleted while waiting" in outcome(watch, 3)
    else:
        api.mark_deleting("web")
        assert "is being deleted" in outcome(watch, 3)


def test_pod_deleted_before_start_is_refused(api, watches):
    web_pod(api)
    api.mark_deleting("web")
    assert "is being deleted" in outcome(watches(config_for(api)), 3)


def test_changed_uid_fails_fast(api, watches):
    """Deleted and re-created while the stream delivered nothing; the relist after 410 shows it."""
    web_pod(api)
    api.inject("stall", on="watch")
    watch = watches(config_for(api))
    api.watching()
    old_uid = api.pod("web")["metadata"]["uid"]
    api.recreate_pod("web")
    api.compact()
    api.end_watches()
    message = outcome(watch, 5)
    assert (
        "was replaced while waiting for birth deps (uid %s, now %s)"
        % (old_uid, api.pod("web")["metadata"]["uid"])
        in message
    )


def test_missing_token_fails(api, watches):
    web_pod(api)
    os.unlink(os.path.join(api.sa_dir, "token"))
    message = outcome(watches(config_for(api)), 3)
    assert (
        "no service-account token at %s/token: set automountServiceAccountToken: true" % api.sa_dir
        in message
    )
    assert api.requests == []


def test_untrusted_certificate_fails(api, watches):
    web_pod(api)
    shutil.copy(api.certs.other_ca_crt, os.path.join(api.sa_dir, "ca.crt"))
    message = outcome(watches(config_for(api)), 3)
    assert "has a certificate that %s/ca.crt does not verify" % api.sa_dir in message


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_host(api6, watches, host):
    web_pod(api6, ready_proxy=True)
    assert outcome(watches(config_for(api6, host=host))) == "ready"


def test_connection_refused_retries_with_backoff(api, watches):
    web_pod(api)
    log = RecordingLog()
    config = config_for(api)._replace(api_port=closed_port())
    watch = watches(config, log)
    assert outcome(watch, 1.0) == "pending"
    retries = [
        fields for level, msg, fields in log.lines if level == "warn" and "cannot reach" in msg
    ]
    delays = [float(f["delay"].rstrip("s")) for f in retries]
    assert 3 <= len(retries) < 12 and delays[-1] > delays[0]


def test_close_is_prompt_while_streaming_and_while_backing_off(api):
    web_pod(api)
    api.inject("stall", on="watch")
    watch = follow_births(config_for(api), RecordingLog())
    api.watching()
    start = time.monotonic()
    watch.close()
    assert time.monotonic() - start < 0.5 and not watch._thread.is_alive()
    api.wait_until(lambda s: s.open_watches == 0, 3)

    api.inject("status", on="any", code=429, retry_after=30)
    watch = follow_births(config_for(api), RecordingLog())
    api.wait_until(lambda s: len(s.requests) == 3)
    start = time.monotonic()
    watch.close()
    assert time.monotonic() - start < 0.5 and not watch._thread.is_alive()
    with pytest.raises(OSError):
        os.fstat(watch.fileno())


def test_pipe_fds_are_close_on_exec_and_non_blocking(api, watches):
    web_pod(api)
    watch = watches(config_for(api))
    assert not os.get_inheritable(watch.fileno()) and not os.get_blocking(watch.fileno())
    watch.drain()
    assert not watch.finished


def closed_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
