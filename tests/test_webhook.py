"""--webhook (contract section 9): real HTTPS POSTs of AdmissionReviews to the built pyz, from a
client that verifies the server against the test CA; patches applied with a JSONPatch
implementation must give exactly what --inject writes."""

import base64
import copy
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl

import jsonpatch
import pytest
from kube.certs import make_certs

SERVING = re.compile(r"serving https://127\.0\.0\.1:(\d+) ")


def annotated_pod(annotations=None):
    annotations = {"kubexit/inject": "true", "kubexit/sidecars": "proxy"} \
        if annotations is None else annotations
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "report-x7k2p", "namespace": "jobs", "annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": "app:1", "command": ["python3", "job.py"]},
                {"name": "proxy", "image": "proxy:1", "command": ["python3", "-m", "proxy"],
                 "readinessProbe": {"tcpSocket": {"port": 5432}},
                 "volumeMounts": [{"name": "kube-api-access-abcde", "readOnly": True,
                                   "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]},
            ],
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": []}}],
        },
    }


def admission_review(pod, uid="705ab4f5-6393-11e8-b7cc-42010a800002"):
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "jobs", "operation": "CREATE", "object": pod,
                        "dryRun": False}}


class Webhook:
    def __init__(self, proc, port, ca):
        self.proc = proc
        self.port = port
        self.context = ssl.create_default_context(cafile=ca)

    def connection(self):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context,
                                           timeout=10)

    def post(self, body, path="/mutate", headers=None, connection=None):
        connection = connection or self.connection()
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        connection.request("POST", path, data, dict({"Content-Type": "application/json"},
                                                    **(headers or {})))
        response = connection.getresponse()
        return response.status, response.read()

    def review(self, pod, **kwargs):
        status, body = self.post(admission_review(pod, **kwargs))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["kind"] == "AdmissionReview"
        return answer["response"]

    def healthy(self):
        connection = self.connection()
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        return response.status == 200 and response.read() == b"ok\n"


@pytest.fixture
def webhook(start_kubexit, certs):
    proc = start_kubexit({}, ["--webhook", "--cert", certs.server_crt, "--key",
                              certs.server_key, "--listen", "127.0.0.1:0"])
    line = proc.err.wait_for(lambda text: SERVING.search(text), timeout=10)
    return Webhook(proc, int(SERVING.search(line).group(1)), certs.ca_crt)


def test_healthz(webhook):
    assert webhook.healthy()


def test_the_patch_gives_exactly_what_inject_writes(webhook, run_kubexit):
    pod = annotated_pod()
    response = webhook.review(pod, uid="uid-1")
    assert response["uid"] == "uid-1"
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), patch)
    injected = run_kubexit({}, ["--inject"], input=json.dumps(pod))
    assert injected.returncode == 0, injected
    assert patched == json.loads(injected.stdout)
    assert patched != pod
    # The service-account volume the API server added is kept.
    assert patched["spec"]["volumes"][0] == pod["spec"]["volumes"][0]


def test_a_pod_without_the_annotation_is_untouched(webhook):
    for annotations in ({}, {"kubexit/sidecars": "proxy"}, {"kubexit/inject": "false"}):
        response = webhook.review(annotated_pod(annotations))
        assert response == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}


def test_an_injected_pod_is_not_patched_again(webhook, run_kubexit):
    """reinvocationPolicy: IfNeeded sends the pod again after other webhooks."""
    injected = json.loads(run_kubexit({}, ["--inject"], input=json.dumps(annotated_pod())).stdout)
    response = webhook.review(injected)
    assert response["allowed"] is True and "patch" not in response


def test_a_bad_annotation_is_refused_with_the_message(webhook):
    response = webhook.review(annotated_pod({"kubexit/inject": "true",
                                             "kubexit/sidecars": "proxi"}))
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert "annotation kubexit/sidecars names proxi, which is no container" in \
        response["status"]["message"]
    assert webhook.healthy()


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400),
    (b"[]", 400),
    (json.dumps({"kind": "AdmissionReview"}).encode(), 400),
    (json.dumps({"kind": "Pod"}).encode(), 400),
])
def test_malformed_bodies_are_refused_and_the_server_keeps_serving(webhook, body, status):
    assert webhook.post(body)[0] == status
    assert webhook.healthy()
    assert webhook.review(annotated_pod())["allowed"] is True


def test_an_oversized_body_is_refused_unread(webhook):
    connection = webhook.connection()
    connection.putrequest("POST", "/mutate")
    connection.putheader("Content-Length", str(3 * 1024 * 1024 + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert webhook.healthy()


def test_a_client_that_never_finishes_its_handshake_blocks_no_one(webhook):
    with socket.create_connection(("127.0.0.1", webhook.port)) as silent:
        silent.sendall(b"\x16\x03\x01")   # the start of a ClientHello, then nothing
        assert webhook.healthy()
        assert webhook.review(annotated_pod())["allowed"] is True


def test_keep_alive_serves_many_reviews_on_one_connection(webhook):
    connection = webhook.connection()
    for number in range(5):
        status, body = webhook.post(admission_review(annotated_pod(), uid="u%d" % number),
                                    connection=connection)
        assert status == 200 and json.loads(body)["response"]["uid"] == "u%d" % number


def test_sigterm_drains_and_exits_0(webhook):
    assert webhook.healthy()
    webhook.proc.send_signal(signal.SIGTERM)
    assert webhook.proc.wait(timeout=10) == 0
    webhook.proc.err.wait_for("kubexit --webhook: stopped")
    with pytest.raises(OSError):
        webhook.healthy()


def test_a_bad_certificate_is_one_line_and_exit_2(run_kubexit, tmp_path):
    missing = tmp_path / "none.crt"
    result = run_kubexit({}, ["--webhook", "--cert", missing, "--key", missing,
                              "--listen", "127.0.0.1:0"])
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "cannot load them: No such file or directory" in result.stderr


def test_the_example_installation_serves_with_its_own_certificate(start_kubexit, tmp_path):
    """examples/webhook/make-certs.sh, as the README runs it: a certificate the API server
    accepts for the Service's name, and a manifest whose caBundle is its CA."""
    import subprocess

    import yaml
    from conftest import ROOT

    out = tmp_path / "install"
    made = subprocess.run(["bash", str(ROOT / "examples/webhook/make-certs.sh"), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    documents = {d["kind"]: d for d in yaml.safe_load_all((out / "webhook.yaml").read_text())}
    [hook] = documents["MutatingWebhookConfiguration"]["webhooks"]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == (out / "ca.crt").read_bytes()
    assert (hook["sideEffects"], hook["failurePolicy"], hook["reinvocationPolicy"]) == (
        "None", "Fail", "IfNeeded")
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["namespaceSelector"] == {"matchLabels": {"kubexit-injection": "enabled"}}
    assert hook["clientConfig"]["service"]["path"] == "/mutate"
    secret = documents["Secret"]["data"]
    assert base64.b64decode(secret["tls.crt"]) == (out / "tls.crt").read_bytes()
    container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][1] == "--webhook"

    proc = start_kubexit({}, ["--webhook", "--cert", out / "tls.crt", "--key", out / "tls.key",
                              "--listen", "127.0.0.1:0"])
    port = int(SERVING.search(proc.err.wait_for(lambda t: SERVING.search(t), 10)).group(1))
    context = ssl.create_default_context(cafile=str(out / "ca.crt"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="kubexit-webhook.kubexit.svc") as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 200")


def secret_volume(directory, crt, key, version):
    """The kubelet's layout of a Secret volume: tls.crt -> ..data/tls.crt, ..data -> a
    timestamped directory; an update writes a new directory and swaps ..data at once."""
    target = directory / ("..%s" % version)
    target.mkdir()
    shutil.copy(crt, target / "tls.crt")
    shutil.copy(key, target / "tls.key")
    swap = directory / "..data_tmp"
    os.symlink(target.name, swap)
    os.rename(swap, directory / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            os.symlink("..data/" + name, directory / name)


def handshake_error(port, ca):
    """None when a client trusting `ca` connects and gets /healthz; else its TLS error."""
    try:
        return None if Webhook(None, port, ca).healthy() else "not healthy"
    except ssl.SSLError as err:
        return err


def test_a_renewed_certificate_is_served_without_a_restart(start_kubexit, certs, tmp_path):
    renewed = make_certs(str(tmp_path / "renewed"))   # another CA, as after a re-issue
    volume = tmp_path / "tls"
    volume.mkdir()
    secret_volume(volume, certs.server_crt, certs.server_key, "1")
    proc = start_kubexit({}, ["--webhook", "--cert", volume / "tls.crt", "--key",
                              volume / "tls.key", "--listen", "127.0.0.1:0"])
    port = int(SERVING.search(proc.err.wait_for(lambda t: SERVING.search(t), 10)).group(1))
    assert handshake_error(port, certs.ca_crt) is None

    secret_volume(volume, renewed.server_crt, renewed.server_key, "2")
    assert handshake_error(port, renewed.ca_crt) is None
    assert isinstance(handshake_error(port, certs.ca_crt), ssl.SSLCertVerificationError)
    reloaded = "kubexit --webhook: --cert %s --key %s changed: serving the new certificate" % (
        volume / "tls.crt", volume / "tls.key")
    proc.err.wait_for(reloaded)

    # A pair that does not match (renewed certificate, old key) is refused, said once, and
    # the last good one is served meanwhile.
    secret_volume(volume, renewed.server_crt, certs.server_key, "3")
    for _ in range(3):
        assert handshake_error(port, renewed.ca_crt) is None
    secret_volume(volume, certs.server_crt, certs.server_key, "4")
    assert handshake_error(port, certs.ca_crt) is None
    # The second reload's line comes after every refusal line there is.
    proc.err.wait_for_count(reloaded, 2)
    refusals = [line for line in proc.err.lines if "cannot be loaded" in line]
    assert len(refusals) == 1 and "still serving the previous certificate" in refusals[0]


def test_connections_over_the_limit_wait_and_threads_stay_bounded(webhook):
    """Clients that connect and never speak hold a thread each for the handshake timeout:
    past MAX_CONNECTIONS, new ones wait in the backlog instead of each getting a thread."""
    limit = 64   # kubexit.webhook.MAX_CONNECTIONS
    silent = [socket.create_connection(("127.0.0.1", webhook.port)) for _ in range(limit + 8)]
    try:
        webhook.proc.err.wait_for(
            "kubexit --webhook: %d connections open: new ones wait until one closes" % limit,
            timeout=10)
        with open("/proc/%d/status" % webhook.proc.pid) as status:
            threads = int(next(line for line in status if line.startswith("Threads:")).split()[1])
        assert threads <= limit + 2, "%d threads for %d connections" % (threads, len(silent))
    finally:
        for connection in silent:
            connection.close()
    assert webhook.healthy()
    assert webhook.review(annotated_pod())["allowed"] is True
