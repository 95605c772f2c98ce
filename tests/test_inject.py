"""--inject (contract section 9): plain manifests in, coordinated pods out, run as the pyz."""

import copy
import json

import pytest

TEMPLATE_PATHS = {
    "Pod": (),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
}
PREFIX = ["python3", "-I", "-S", "/kubexit/kubexit.pyz"]


def main_container(**extra):
    return dict({"name": "main", "image": "app:1", "command": ["python3", "job.py"],
                 "args": ["--rows", "10"]}, **extra)


def proxy_container(**extra):
    return dict({"name": "proxy", "image": "proxy:1", "command": ["python3", "-m", "proxy"],
                 "ports": [{"name": "http", "containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}}, **extra)


def pod_template(annotations=None, containers=None, restart_policy="Never", **spec):
    template = {"metadata": {"labels": {"app": "report"}},
                "spec": dict({"restartPolicy": restart_policy,
                              "containers": containers or [main_container(), proxy_container()]},
                             **spec)}
    if annotations is not None:
        template["metadata"]["annotations"] = annotations
    return template


def workload(kind, template, name="report"):
    """`template` placed where `kind` keeps its pod template."""
    if kind == "Pod":
        return dict({"apiVersion": "v1", "kind": "Pod", "metadata": dict(
            template["metadata"], name=name)}, spec=template["spec"])
    obj = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}}
    node = obj
    path = TEMPLATE_PATHS[kind]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = template
    return obj


def template_of(obj):
    for key in TEMPLATE_PATHS[obj["kind"]]:
        obj = obj[key]
    return obj


def env_of(container):
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def container(template, name):
    return next(c for c in template["spec"]["containers"] if c["name"] == name)


@pytest.fixture
def inject(run_kubexit):
    """inject(objects, *options) -> the parsed output documents; asserts exit 0."""

    def run(objects, *options, expect_warning=False):
        text = "".join(json.dumps(o) + "\n" for o in objects)
        result = run_kubexit({}, ["--inject", *options], input=text)
        assert result.returncode == 0, result
        assert bool(result.stderr) == expect_warning, result.stderr
        decoder, documents, index = json.JSONDecoder(), [], 0
        while index < len(result.stdout.rstrip()):
            document, index = decoder.raw_decode(result.stdout, index)
            documents.append(document)
            while index < len(result.stdout) and result.stdout[index].isspace():
                index += 1
        return documents

    return run


@pytest.fixture
def check(run_kubexit):
    def run(objects):
        return run_kubexit({}, ["--check"], input="".join(json.dumps(o) for o in objects))

    return run


def assert_wired(template, image="kubexit:latest", restart_policy="Never"):
    """The side-load, the volumes, and the main waiting for the proxy, which ends with it."""
    spec = template["spec"]
    init = spec["initContainers"][0]
    assert init["name"] == "kubexit" and init["image"] == image
    assert init["imagePullPolicy"] == "IfNotPresent"
    assert init["command"] == ["cp", "/usr/local/bin/kubexit", "/kubexit/kubexit.pyz"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["kubexit"] == {"name": "kubexit", "emptyDir": {}}
    assert volumes["kubexit-graveyard"]["emptyDir"] == {"medium": "Memory"}
    main, proxy = container(template, "main"), container(template, "proxy")
    assert main["command"] == PREFIX + ["python3", "job.py"]
    assert main["args"] == ["--rows", "10"]
    assert proxy["command"] == PREFIX + ["python3", "-m", "proxy"]
    for wrapped in (main, proxy):
        mounts = {m["name"]: m for m in wrapped["volumeMounts"]}
        assert mounts["kubexit"] == {"name": "kubexit", "mountPath": "/kubexit",
                                     "readOnly": True}
        assert mounts["kubexit-graveyard"]["mountPath"] == "/graveyard"
    assert env_of(main) == {
        "KUBEXIT_NAME": "main", "KUBEXIT_GRAVEYARD": "/graveyard",
        "KUBEXIT_RESTART_POLICY": restart_policy, "KUBEXIT_BIRTH_DEPS": "proxy",
        "KUBEXIT_API": "off"}
    assert env_of(proxy) == {
        "KUBEXIT_NAME": "proxy", "KUBEXIT_GRAVEYARD": "/graveyard",
        "KUBEXIT_RESTART_POLICY": restart_policy, "KUBEXIT_DEATH_DEPS": "main",
        "KUBEXIT_DEATH_POLICY": "all", "KUBEXIT_SHUTDOWN_ORDER": "after-death-deps",
        "KUBEXIT_READINESS_PROBE": "http://127.0.0.1:8080/ready", "KUBEXIT_API": "off"}


@pytest.mark.parametrize("kind", sorted(TEMPLATE_PATHS))
def test_every_kind_is_wired_idempotently_and_passes_check(kind, inject, check):
    policy = "Always" if kind in ("Pod", "Deployment", "StatefulSet", "DaemonSet",
                                  "ReplicaSet") else "Never"
    original = workload(kind, pod_template({"kubexit/sidecars": "proxy"},
                                           restart_policy=policy))
    [injected] = inject([original])
    assert_wired(template_of(injected), restart_policy=policy)
    assert injected["metadata"] == original["metadata"]
    assert inject([injected]) == [injected]
    result = check([injected])
    assert result.returncode == 0, result
    assert result.stdout == ""


def test_a_list_is_wired_item_by_item_and_other_kinds_pass_through(inject):
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
               "spec": {"ports": [{"port": 80}]}}
    job = workload("Job", pod_template({"kubexit/sidecars": "proxy"}))
    [out] = inject([{"apiVersion": "v1", "kind": "List", "items": [service, job]}])
    assert out["items"][0] == service
    assert_wired(template_of(out["items"][1]))


def test_several_documents_in_several_out(inject):
    jobs = [workload("Job", pod_template({"kubexit/sidecars": "proxy"}), name=n)
            for n in ("a", "b")]
    out = inject(jobs)
    assert [o["metadata"]["name"] for o in out] == ["a", "b"]
    for document in out:
        assert_wired(template_of(document))


def test_without_sidecars_every_container_only_gets_its_tombstone(inject):
    [out] = inject([workload("Job", pod_template())])
    for name in ("main", "proxy"):
        assert env_of(container(template_of(out), name)) == {
            "KUBEXIT_NAME": name, "KUBEXIT_GRAVEYARD": "/graveyard",
            "KUBEXIT_RESTART_POLICY": "Never", "KUBEXIT_API": "off"}


def test_inject_false_leaves_the_template_alone(inject):
    original = workload("Job", pod_template({"kubexit/inject": "false",
                                              "kubexit/sidecars": "proxy"}))
    assert inject([original]) == [original]


def test_image_annotation_beats_the_option_which_beats_the_default(inject):
    job = workload("Job", pod_template({"kubexit/sidecars": "proxy"}))
    [by_option] = inject([job], "--image", "registry.local/kubexit:0.1")
    assert template_of(by_option)["spec"]["initContainers"][0]["image"] == \
        "registry.local/kubexit:0.1"
    annotated = workload("Job", pod_template({"kubexit/sidecars": "proxy",
                                              "kubexit/image": "mirror/kubexit:0.1"}))
    [by_annotation] = inject([annotated], "--image=registry.local/kubexit:0.1")
    assert template_of(by_annotation)["spec"]["initContainers"][0]["image"] == \
        "mirror/kubexit:0.1"


def test_python_option_names_the_interpreter(inject):
    [out] = inject([workload("Job", pod_template())], "--python", "/usr/local/bin/python3.12")
    assert container(template_of(out), "main")["command"][:2] == [
        "/usr/local/bin/python3.12", "-I"]


def test_explicit_kubexit_variables_win(inject):
    main = main_container(env=[{"name": "KUBEXIT_BIRTH_DEPS", "value": "proxy,cache"},
                               {"name": "KUBEXIT_BIRTH_TIMEOUT", "value": "2m"},
                               {"name": "KUBEXIT_NAME", "value": "job"},
                               {"name": "OTHER", "value": "x"}])
    proxy = proxy_container(env=[{"name": "KUBEXIT_READINESS_PROBE",
                                  "value": "tcp://127.0.0.1:9090"}])
    [out] = inject([workload("Job", pod_template({"kubexit/sidecars": "proxy"},
                                                 containers=[main, proxy]))])
    main_env = env_of(container(template_of(out), "main"))
    assert main_env["KUBEXIT_BIRTH_DEPS"] == "proxy,cache"
    assert main_env["KUBEXIT_BIRTH_TIMEOUT"] == "2m"
    assert main_env["KUBEXIT_NAME"] == "job"
    assert main_env["OTHER"] == "x"
    assert [i["name"] for i in container(template_of(out), "main")["env"]].count(
        "KUBEXIT_BIRTH_DEPS") == 1
    proxy_env = env_of(container(template_of(out), "proxy"))
    assert proxy_env["KUBEXIT_READINESS_PROBE"] == "tcp://127.0.0.1:9090"
    assert proxy_env["KUBEXIT_DEATH_DEPS"] == "job"   # the main's tombstone name


def test_skipped_sidecar_is_probed_and_told_to_quit(inject, check):
    envoy = {"name": "envoy", "image": "envoy:1",
             "readinessProbe": {"tcpSocket": {"port": 9901}}}
    annotations = {"kubexit/sidecars": "envoy", "kubexit/skip": "envoy",
                   "kubexit/quit-url.envoy": "http://127.0.0.1:9901/quitquitquit"}
    original = workload("Job", pod_template(annotations, containers=[main_container(), envoy]))
    [out] = inject([original])
    template = template_of(out)
    assert container(template, "envoy") == envoy
    main_env = env_of(container(template, "main"))
    assert main_env["KUBEXIT_WAIT_FOR"] == "tcp://127.0.0.1:9901"
    assert main_env["KUBEXIT_QUIT_URLS"] == "http://127.0.0.1:9901/quitquitquit"
    assert "KUBEXIT_BIRTH_DEPS" not in main_env
    assert check([out]).returncode == 0


def test_skipped_main_makes_the_sidecars_watch_the_pod(inject, check):
    main = {"name": "main", "image": "go-app:1"}
    annotations = {"kubexit/sidecars": "proxy", "kubexit/skip": "main"}
    [out] = inject([workload("Job", pod_template(annotations,
                                                 containers=[main, proxy_container()]))],
                   expect_warning=True)
    proxy_env = env_of(container(template_of(out), "proxy"))
    assert proxy_env["KUBEXIT_WATCH_POD"] == "true"
    assert proxy_env["KUBEXIT_DEATH_DEPS"] == "main"
    assert proxy_env["KUBEXIT_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "KUBEXIT_API" not in proxy_env
    result = check([out])
    assert result.returncode == 0, result


@pytest.mark.parametrize("probe, expected", [
    ({"httpGet": {"path": "healthz", "port": 8443, "scheme": "HTTPS"}},
     "https://127.0.0.1:8443/healthz"),
    ({"httpGet": {"port": 80, "host": "::1"}}, "http://[::1]:80/"),
    ({"tcpSocket": {"port": "http"}}, "tcp://127.0.0.1:8080"),
    ({"exec": {"command": ["cat", "/tmp/ready file"]}}, "exec:cat '/tmp/ready file'"),
])
def test_readiness_probes_become_kubexit_probes(inject, probe, expected):
    proxy = proxy_container(readinessProbe=probe)
    [out] = inject([workload("Job", pod_template({"kubexit/sidecars": "proxy"},
                                                 containers=[main_container(), proxy]))])
    assert env_of(container(template_of(out), "proxy"))["KUBEXIT_READINESS_PROBE"] == expected


def test_a_grpc_probe_becomes_a_tcp_probe_with_a_warning(inject):
    proxy = proxy_container(readinessProbe={"grpc": {"port": 9000}})
    [out] = inject([workload("Job", pod_template({"kubexit/sidecars": "proxy"},
                                                 containers=[main_container(), proxy]))],
                   expect_warning=True)
    assert env_of(container(template_of(out), "proxy"))["KUBEXIT_READINESS_PROBE"] == \
        "tcp://127.0.0.1:9000"


def test_sidecars_without_probes_count_once_started(inject):
    proxy = proxy_container()
    del proxy["readinessProbe"]
    cache = {"name": "cache", "image": "c:1", "command": ["python3", "cache.py"]}
    [alone] = inject([workload("Job", pod_template({"kubexit/sidecars": "proxy"},
                                                   containers=[main_container(), proxy]))])
    assert env_of(container(template_of(alone), "main"))["KUBEXIT_BIRTH_CONDITION"] == \
        "started"
    assert "KUBEXIT_READINESS_PROBE" not in env_of(container(template_of(alone), "proxy"))
    [mixed] = inject([workload("Job", pod_template(
        {"kubexit/sidecars": "proxy,cache"},
        containers=[main_container(), proxy_container(), cache]))])
    assert "KUBEXIT_BIRTH_CONDITION" not in env_of(container(template_of(mixed), "main"))
    assert env_of(container(template_of(mixed), "cache"))["KUBEXIT_READINESS_PROBE"] == \
        "file:/kubexit/kubexit.pyz"


def test_a_short_grace_period_shortens_the_sidecars_hold(inject):
    [out] = inject([workload("Deployment", pod_template(
        {"kubexit/sidecars": "proxy"}, restart_policy="Always",
        terminationGracePeriodSeconds=15))])
    assert env_of(container(template_of(out), "proxy"))["KUBEXIT_SHUTDOWN_TIMEOUT"] == "10s"


def test_annotations_on_the_workload_itself_are_warned_of(run_kubexit):
    job = workload("Job", pod_template())
    job["metadata"]["annotations"] = {"kubexit/sidecars": "proxy"}
    result = run_kubexit({}, ["--inject"], input=json.dumps(job))
    assert result.returncode == 0
    assert "pod template's metadata" in result.stderr


def bad_inputs():
    no_command = workload("Job", pod_template({"kubexit/sidecars": "proxy"}))
    del template_of(no_command)["spec"]["containers"][0]["command"]
    no_template = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                   "spec": {"replicas": 1}}
    port_name = workload("Job", pod_template({"kubexit/sidecars": "proxy"}, containers=[
        main_container(), proxy_container(readinessProbe={"tcpSocket": {"port": "grpc"}})]))
    return [
        ("not json", "apiVersion: v1\nkind: Pod\n", "not JSON"),
        ("array", "[1, 2]", "JSON array"),
        ("empty", "  \n", "no JSON object"),
        ("no template", json.dumps(no_template), "Deployment/d has no pod template"),
        ("unknown sidecar", json.dumps(workload("Job", pod_template(
            {"kubexit/sidecars": "proxi"}))), "names proxi, which is no container"),
        ("typo annotation", json.dumps(workload("Job", pod_template(
            {"kubexit/sidecar": "proxy"}))), "did you mean kubexit/sidecars?"),
        ("inject yes", json.dumps(workload("Job", pod_template(
            {"kubexit/inject": "yes"}))), 'write "true" or "false"'),
        ("quit url of a wrapped container", json.dumps(workload("Job", pod_template(
            {"kubexit/sidecars": "proxy", "kubexit/quit-url.proxy": "http://x/q"}))),
         "not a sidecar in kubexit/skip"),
        ("bad quit url", json.dumps(workload("Job", pod_template(
            {"kubexit/sidecars": "proxy", "kubexit/skip": "proxy",
             "kubexit/quit-url.proxy": "ftp://x/q"}))), "is not an http:// or https:// URL"),
        ("no command", json.dumps(no_command), "container main has no command"),
        ("unknown port name", json.dumps(port_name), "port 'grpc' is neither a number"),
    ]


@pytest.mark.parametrize("text, message", [b[1:] for b in bad_inputs()],
                         ids=[b[0] for b in bad_inputs()])
@pytest.mark.parametrize("mode", ["--inject", "--check"])
def test_bad_input_is_one_line_and_exit_2(run_kubexit, mode, text, message):
    result = run_kubexit({}, [mode], input=text)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("kubexit %s: <stdin>: " % mode), result.stderr
    assert message in result.stderr, result.stderr


def test_a_file_argument_and_a_missing_file(run_kubexit, tmp_path):
    path = tmp_path / "job.json"
    original = workload("Job", pod_template({"kubexit/sidecars": "proxy"}))
    path.write_text(json.dumps(original))
    result = run_kubexit({}, ["--inject", str(path)])
    assert result.returncode == 0, result
    assert_wired(template_of(json.loads(result.stdout)))
    assert json.loads(path.read_text()) == original   # the user's file is never touched
    missing = run_kubexit({}, ["--inject", str(tmp_path / "nope.json")])
    assert missing.returncode == 2
    assert "nope.json: cannot read it: No such file or directory" in missing.stderr


@pytest.mark.parametrize("args, message", [
    (["--inject", "a.json", "b.json"], "--inject takes at most one FILE"),
    (["--inject", "--image"], "--inject --image needs a value"),
    (["--check", "--image", "x"], "--check does not take --image"),
    (["--webhook", "--cert", "c"], "needs --cert FILE and --key FILE"),
])
def test_mode_usage_errors(run_kubexit, args, message):
    result = run_kubexit({}, args)
    assert result.returncode == 2, result
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def test_injection_changes_nothing_but_what_it_adds(inject):
    """Every field the user wrote is still there, unchanged, beside kubexit's."""
    original = workload("StatefulSet", pod_template(
        {"kubexit/sidecars": "proxy"}, restart_policy="Always",
        volumes=[{"name": "data", "emptyDir": {}}],
        initContainers=[{"name": "migrate", "image": "app:1", "command": ["migrate"]}]))
    [out] = inject([copy.deepcopy(original)])
    before, after = template_of(original)["spec"], template_of(out)["spec"]
    assert after["volumes"][0] == before["volumes"][0]
    assert [c["name"] for c in after["initContainers"]] == ["kubexit", "migrate"]
    assert after["initContainers"][1] == before["initContainers"][0]
    for name in ("main", "proxy"):
        old, new = container({"spec": before}, name), container({"spec": after}, name)
        for key, value in old.items():
            if key != "command":
                assert new[key] == value, key


def test_the_manifest_modes_load_their_modules_only_when_used(pyz, kubexit_python):
    """The supervising path's import check (test_probes) can fail: --check and --inject do
    bring these in."""
    import subprocess

    from conftest import clean_environment

    result = subprocess.run([kubexit_python, "-X", "importtime", str(pyz), "--check"],
                            input=json.dumps(workload("Job", pod_template(
                                {"kubexit/sidecars": "proxy"}))),
                            env=clean_environment(), capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:")}
    assert {"kubexit.manifests", "kubexit.inject", "kubexit.check", "json"} <= modules
    assert "kubexit.webhook" not in modules and "ssl" not in modules


def test_a_skipped_sidecars_exec_probe_is_not_run_from_the_others(inject):
    envoy = {"name": "envoy", "image": "envoy:1",
             "readinessProbe": {"exec": {"command": ["envoy-ready"]}}}
    [out] = inject([workload("Job", pod_template(
        {"kubexit/sidecars": "envoy", "kubexit/skip": "envoy"},
        containers=[main_container(), envoy]))], expect_warning=True)
    assert "KUBEXIT_WAIT_FOR" not in env_of(container(template_of(out), "main"))
