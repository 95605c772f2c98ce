"""The test API server is faithful: the official Kubernetes Python client and raw HTTP agree.

If this file passes, what kubexit's tests prove against the server holds against the
protocol as kube-apiserver speaks it, not against an invention.
"""

import http.client
import json
import ssl
import time

import pytest

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402
from kubernetes.config.incluster_config import InClusterConfigLoader  # noqa: E402


def official_client(api):
    """A CoreV1Api configured exactly as in a pod: from the environment and service account."""
    env = api.env("web")
    configuration = k8s.Configuration()
    loader = InClusterConfigLoader(
        token_filename=api.sa_dir + "/token",
        cert_filename=api.sa_dir + "/ca.crt",
        environ={
            "KUBERNETES_SERVICE_HOST": env["KUBERNETES_SERVICE_HOST"],
            "KUBERNETES_SERVICE_PORT": env["KUBERNETES_SERVICE_PORT"],
        },
    )
    loader._load_config()
    loader._set_config(configuration)
    return k8s.CoreV1Api(k8s.ApiClient(configuration))


def raw_get(api, path, token=None, scheme="Bearer"):
    context = ssl.create_default_context(cafile=api.certs.ca_crt)
    conn = http.client.HTTPSConnection(api.host, api.port, context=context, timeout=10)
    conn.request("GET", path, headers={"Authorization": "%s %s" % (scheme, token or api.token)})
    return conn, conn.getresponse()


def test_official_client_lists_and_watches_the_same_events(api):
    api.add_pod("web", containers=["app"], sidecars=["proxy"])
    api.add_pod("other", containers=["x"])
    v1 = official_client(api)
    pods = v1.list_namespaced_pod("default", field_selector="metadata.name=web")
    assert [p.metadata.name for p in pods.items] == ["web"]
    assert int(pods.metadata.resource_version) >= int(
        api.pod("other")["metadata"]["resourceVersion"]
    )
    assert pods.items[0].status.init_container_statuses[0].name == "proxy"
    list_rv = pods.metadata.resource_version

    api.script(
        [
            (0.05, api.run_container, "web", "proxy"),
            (0.05, api.ready, "other", "x"),
            (0.05, api.ready, "web", "proxy"),
            (0.05, api.bookmark),
            (0.05, api.ready, "web", "app"),
        ]
    )
    seen = []
    w = k8s_watch.Watch()
    for event in w.stream(
        v1.list_namespaced_pod,
        "default",
        field_selector="metadata.name=web",
        resource_version=list_rv,
        allow_watch_bookmarks=True,
        timeout_seconds=10,
    ):
        if event["type"] == "BOOKMARK":
            seen.append(("BOOKMARK", event["raw_object"]["metadata"]["resourceVersion"]))
            continue
        pod = event["object"]
        ready = {
            s.name: s.ready
            for s in pod.status.container_statuses + pod.status.init_container_statuses
        }
        seen.append((event["type"], pod.metadata.resource_version, ready))
        if ready["app"]:
            w.stop()
    sent = [(kind, obj["metadata"]["resourceVersion"]) for _, kind, obj in api.events_sent]
    assert [s[:2] for s in seen] == sent
    assert [s[0] for s in seen] == ["MODIFIED", "MODIFIED", "BOOKMARK", "MODIFIED"]
    assert seen[1][2] == {"app": False, "proxy": True} and seen[3][2] == {
        "app": True,
        "proxy": True,
    }
    versions = [int(s[1]) for s in seen]
    assert versions == sorted(versions) and versions[0] > int(list_rv)
    requests = api.requests_of("watch")
    assert requests[0].query["allowWatchBookmarks"] == ["true"]
    # The official client writes "bearer": the server must match the scheme in any case.
    assert requests[0].authorization.lower() == "bearer " + api.token


def test_official_client_sees_watch_expiry_as_410(api):
    api.add_pod("web")
    v1 = official_client(api)
    old_rv = v1.list_namespaced_pod(
        "default", field_selector="metadata.name=web"
    ).metadata.resource_version
    api.ready("web", "app")
    api.compact()
    with pytest.raises(k8s.ApiException) as raised:
        for _ in k8s_watch.Watch().stream(
            v1.list_namespaced_pod,
            "default",
            resource_version=old_rv,
            timeout_seconds=5,
            _request_timeout=10,
        ):
            pass
    assert raised.value.status == 410 and "Expired" in raised.value.reason


def test_official_client_reads_status_bodies(api):
    api.add_pod("web")
    v1 = official_client(api)
    api.inject("forbidden", on="list")
    with pytest.raises(k8s.ApiException) as raised:
        v1.list_namespaced_pod("default", field_selector="metadata.name=web")
    body = json.loads(raised.value.body)
    assert raised.value.status == 403
    assert body["kind"] == "Status" and body["reason"] == "Forbidden"
    assert 'cannot list resource "pods"' in body["message"]

    # urllib3 under the official client honours Retry-After on 429 by itself: one retry, 1 s later.
    api.inject("status", on="list", code=429, retry_after=1)
    start = time.monotonic()
    assert len(v1.list_namespaced_pod("default").items) == 1
    assert time.monotonic() - start >= 0.9
    assert len(api.requests_of("list")) == 3

    with pytest.raises(k8s.ApiException) as raised:
        v1.read_namespaced_pod("missing", "default")
    assert raised.value.status == 404 and json.loads(raised.value.body)["reason"] == "NotFound"
    assert (
        v1.read_namespaced_pod("web", "default").metadata.uid == api.pod("web")["metadata"]["uid"]
    )


def test_official_client_reassembles_events_split_across_chunks(api):
    api.add_pod("web")
    v1 = official_client(api)
    rv = v1.list_namespaced_pod("default").metadata.resource_version
    api.inject("split_chunks", on="watch", pieces=5)
    api.script([(0.05, api.run_container, "web", "app"), (0.05, api.ready, "web", "app")])
    w = k8s_watch.Watch()
    kinds = []
    for event in w.stream(
        v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=10
    ):
        kinds.append((event["type"], event["object"].status.container_statuses[0].ready))
        if len(kinds) == 2:
            w.stop()
    assert kinds == [("MODIFIED", False), ("MODIFIED", True)]


def test_watch_protocol_on_the_wire(api):
    """Chunked framing, kind/apiVersion on watch objects, bookmarks only when asked, timeout."""
    api.add_pod("web")
    conn, response = raw_get(
        api, "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb"
    )
    body = json.loads(response.read())
    assert response.status == 200 and body["kind"] == "PodList" and "kind" not in body["items"][0]
    rv = body["metadata"]["resourceVersion"]
    start = time.monotonic()
    api.script([(0.05, api.bookmark), (0.05, api.ready, "web", "app")])
    conn, response = raw_get(
        api,
        "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%%3Dweb"
        "&watch=1&resourceVersion=%s&timeoutSeconds=1" % rv,
        scheme="bEaReR",
    )
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    events = [json.loads(line) for line in response.read().splitlines()]
    assert 0.9 < time.monotonic() - start < 5
    assert [e["type"] for e in events] == ["MODIFIED"]
    assert events[0]["object"]["kind"] == "Pod" and events[0]["object"]["apiVersion"] == "v1"

    conn, response = raw_get(
        api,
        "/api/v1/namespaces/default/pods?watch=true&allowWatchBookmarks=true"
        "&timeoutSeconds=1&resourceVersion=%s" % rv,
    )
    api.bookmark()
    events = [json.loads(line) for line in response.read().splitlines()]
    assert [e["type"] for e in events] == ["MODIFIED", "BOOKMARK"]
    assert (
        events[1]["object"]["metadata"]["resourceVersion"]
        == events[0]["object"]["metadata"]["resourceVersion"]
    )


def test_watch_without_resource_version_starts_with_the_current_state(api):
    api.add_pod("web")
    conn, response = raw_get(api, "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1")
    events = [json.loads(line) for line in response.read().splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "web")]


def test_errors_are_status_objects(api):
    api.add_pod("web")
    cases = [
        ("status", {"code": 503}, 503, "ServiceUnavailable"),
        ("status", {"code": 500}, 500, "InternalError"),
        ("status", {"code": 410}, 410, "Expired"),
    ]
    for kind, params, code, reason in cases:
        api.inject(kind, on="list", **params)
        conn, response = raw_get(api, "/api/v1/namespaces/default/pods")
        body = json.loads(response.read())
        assert (
            response.status,
            body["kind"],
            body["apiVersion"],
            body["status"],
            body["code"],
            body["reason"],
        ) == (code, "Status", "v1", "Failure", code, reason)
    conn, response = raw_get(api, "/api/v1/namespaces/default/pods", token="wrong")
    assert response.status == 401 and json.loads(response.read())["reason"] == "Unauthorized"
    conn, response = raw_get(api, "/api/v1/namespaces/default/pods", scheme="Basic")
    assert response.status == 401
    old = api.token
    api.rotate_token()
    conn, response = raw_get(api, "/api/v1/namespaces/default/pods", token=old)
    assert response.status == 401
    with open(api.sa_dir + "/token") as file:
        assert file.read() == api.token != old
    assert [r.authorization for r in api.requests][-1] == "Bearer " + old


def test_cut_stream_and_expired_event_on_the_wire(api):
    api.add_pod("web")
    api.inject("cut_mid_line", on="watch")
    conn, response = raw_get(api, "/api/v1/namespaces/default/pods?watch=1")
    with pytest.raises(http.client.IncompleteRead) as raised:
        response.read()
    assert raised.value.partial.startswith(
        b'{"type":"ADDED"'
    ) and not raised.value.partial.endswith(b"\n")

    api.inject("expired_event", on="watch")
    conn, response = raw_get(api, "/api/v1/namespaces/default/pods?watch=1&resourceVersion=1")
    events = [json.loads(line) for line in response.read().splitlines()]
    assert events == [{"type": "ERROR", "object": events[0]["object"]}]
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_tls_is_verified_against_the_generated_ca(api):
    context = ssl.create_default_context(cafile=api.certs.other_ca_crt)
    conn = http.client.HTTPSConnection(api.host, api.port, context=context, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/api/v1/namespaces/default/pods")


def test_ipv6_server(api6):
    api6.add_pod("web")
    conn, response = raw_get(api6, "/api/v1/namespaces/default/pods")
    assert (
        response.status == 200
        and json.loads(response.read())["items"][0]["metadata"]["name"] == "web"
    )
    assert api6.url.startswith("https://[::1]:")


def test_big_lists_come_chunked_as_from_go(api):
    sidecars = ["sidecar-%02d" % i for i in range(12)]
    api.add_pod("web", containers=["app"], sidecars=sidecars)
    conn, response = raw_get(api, "/api/v1/namespaces/default/pods")
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Length") is None
    assert len(json.loads(response.read())["items"][0]["status"]["initContainerStatuses"]) == 12
    pods = official_client(api).list_namespaced_pod("default")
    assert [s.name for s in pods.items[0].status.init_container_statuses] == sidecars
