"""--check (contract section 9): the lint finds each wiring mistake, and passes what works:
every manifest in examples/ and the README, and whatever --inject writes."""

import json
import re
import textwrap

import pytest
import yaml
from conftest import ROOT

GRAVEYARD_MOUNT = {"name": "graveyard", "mountPath": "/graveyard"}


def wrapped(name, env=None, mounts=None, command=None):
    """A container run by kubexit with its own tombstone name."""
    return {
        "name": name, "image": "app:1",
        "command": command or ["python3", "/kubexit/kubexit.pyz", "python3", "%s.py" % name],
        "env": [{"name": "KUBEXIT_NAME", "value": name}] + [
            {"name": k, "value": v} for k, v in (env or {}).items()],
        "volumeMounts": [GRAVEYARD_MOUNT] if mounts is None else mounts,
    }


def pod(*containers, volumes=None, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": dict({"containers": list(containers),
                          "volumes": volumes if volumes is not None else [
                              {"name": "graveyard", "emptyDir": {}}]}, **spec)}


@pytest.fixture
def check(run_kubexit):
    def run(*objects):
        return run_kubexit({}, ["--check"], input="\n".join(json.dumps(o) for o in objects))

    return run


def problems_of(result):
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    return result.stdout.splitlines()


def test_a_correct_pod_is_clean(check):
    result = check(pod(wrapped("main"), wrapped("proxy", {"KUBEXIT_DEATH_DEPS": "main"})))
    assert result.returncode == 0, result
    assert result.stdout == ""
    assert "1 pod template, no problems" in result.stderr


def test_a_dep_that_is_no_container(check):
    [line] = problems_of(check(pod(wrapped("main"),
                                   wrapped("proxy", {"KUBEXIT_DEATH_DEPS": "mian"}))))
    assert line == ("<stdin>: Pod/p: container proxy: KUBEXIT_DEATH_DEPS names mian, which is "
                    "no container of this pod (containers: main, proxy); did you mean main?")


def test_a_death_dep_without_kubexit_is_never_seen(check):
    plain = {"name": "main", "image": "app:1", "command": ["app"]}
    [line] = problems_of(check(pod(plain, wrapped("proxy", {"KUBEXIT_DEATH_DEPS": "main"}))))
    assert "runs without kubexit" in line and "KUBEXIT_WATCH_POD=true" in line


def test_a_birth_dep_cycle_is_named_in_full(check):
    [line] = problems_of(check(pod(
        wrapped("a", {"KUBEXIT_BIRTH_DEPS": "b", "KUBEXIT_API": "off"}),
        wrapped("b", {"KUBEXIT_BIRTH_DEPS": "c", "KUBEXIT_API": "off"}),
        wrapped("c", {"KUBEXIT_BIRTH_DEPS": "a", "KUBEXIT_API": "off"}),
        wrapped("d", {"KUBEXIT_BIRTH_DEPS": "a", "KUBEXIT_API": "off"}))))
    assert line == "<stdin>: Pod/p: birth deps form a cycle, so none of them ever starts: " \
                   "a -> b -> c -> a"


def test_a_graveyard_on_no_volume_and_one_not_shared(check):
    lines = problems_of(check(pod(
        wrapped("main"),
        wrapped("proxy", mounts=[{"name": "other", "mountPath": "/graveyard"}]),
        wrapped("cache", mounts=[]),
        volumes=[{"name": "graveyard", "emptyDir": {}}, {"name": "other", "emptyDir": {}}])))
    assert len(lines) == 2, lines
    assert "container cache: its graveyard /graveyard is on no volume" in lines[0]
    assert "container proxy: its graveyard (volume other, .) is not container main's " \
           "(volume graveyard, .)" in lines[1]


def test_a_graveyard_that_outlives_the_pod(check):
    [line] = problems_of(check(pod(wrapped("main"), volumes=[
        {"name": "graveyard", "persistentVolumeClaim": {"claimName": "x"}}])))
    assert "volume graveyard, which is not an emptyDir" in line


def test_invalid_values_use_kubexits_own_messages(check):
    lines = problems_of(check(pod(
        wrapped("main", {"KUBEXIT_GRACE_PERIOD": "30"}),
        wrapped("proxy", {"KUBEXIT_DEATHDEPS": "main"}))))
    assert lines == [
        "<stdin>: Pod/p: container main: KUBEXIT_GRACE_PERIOD='30' has no unit; write 30s "
        "(or ms, m, h)",
        "<stdin>: Pod/p: container proxy: unknown variable KUBEXIT_DEATHDEPS is ignored; did "
        "you mean KUBEXIT_DEATH_DEPS?",
    ]


def test_api_birth_deps_need_the_pod_name_from_the_downward_api(check):
    [line] = problems_of(check(pod(wrapped("app", {"KUBEXIT_BIRTH_DEPS": "proxy"}),
                                   {"name": "proxy", "image": "proxy:1"})))
    assert "container app: reads the pod from the Kubernetes API but has no KUBEXIT_POD_NAME" \
        in line
    fixed = wrapped("app", {"KUBEXIT_BIRTH_DEPS": "proxy"})
    fixed["env"].append({"name": "KUBEXIT_POD_NAME",
                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    assert check(pod(fixed, {"name": "proxy", "image": "proxy:1"})).returncode == 0


def test_required_api_without_a_token_is_an_error(check):
    app = wrapped("app", {"KUBEXIT_BIRTH_DEPS": "proxy", "KUBEXIT_API": "required",
                          "KUBEXIT_POD_NAME": "p"})
    [line] = problems_of(check(pod(app, {"name": "proxy", "image": "proxy:1"},
                                   automountServiceAccountToken=False)))
    assert "needs a service-account token" in line


def test_kubexit_variables_on_a_command_without_kubexit(check):
    [line] = problems_of(check(pod(wrapped("main", command=["python3", "main.py"]))))
    assert "sets KUBEXIT_* variables, but its command does not run kubexit" in line


def test_two_containers_with_one_tombstone_name(check):
    twin = wrapped("proxy")
    twin["env"][0]["value"] = "main"
    [line] = problems_of(check(pod(wrapped("main"), twin)))
    assert "KUBEXIT_NAME=main is also container main's" in line


def test_an_annotated_template_is_checked_as_injected(check):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
           "spec": {"template": {
               "metadata": {"annotations": {"kubexit/sidecars": "proxy"}},
               "spec": {"restartPolicy": "Never", "containers": [
                   {"name": "main", "image": "a", "command": ["a"],
                    "env": [{"name": "KUBEXIT_DEATH_DEPS", "value": "ghost"}]},
                   {"name": "proxy", "image": "p", "command": ["p"]}]}}}}
    [line] = problems_of(check(job))
    assert line.startswith("<stdin>: Job/j: container main: KUBEXIT_DEATH_DEPS names ghost")


def yaml_objects(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_every_example_passes(run_kubexit):
    paths = sorted((ROOT / "examples").rglob("*.yaml"))
    assert {"quickstart", "webhook"} <= {path.parent.name for path in paths}
    for path in paths:
        listing = {"apiVersion": "v1", "kind": "List", "items": yaml_objects(path.read_text())}
        result = run_kubexit({}, ["--check"], input=json.dumps(listing))
        assert result.returncode == 0, (path.name, result.stdout, result.stderr)


# README blocks that are parts of a container, not manifests: checked inside the manifests
# that the same sections point to.
README_FRAGMENTS = {"KUBEXIT_POD_NAME"}


def readme_yaml_blocks():
    readme = (ROOT / "README.md").read_text()
    return [textwrap.dedent(block) for block in re.findall(
        r"^ *```yaml\n(.*?)^ *```", readme, re.M | re.S)]


def test_every_readme_manifest_passes(run_kubexit):
    blocks = readme_yaml_blocks()
    assert len(blocks) >= 3
    checked = 0
    for block in blocks:
        objects = yaml_objects(block)
        if any(word in block for word in README_FRAGMENTS) and "kind:" not in block:
            continue
        objects = [o if "kind" in o else {"apiVersion": "v1", "kind": "Pod",
                                          "metadata": {"name": "readme"}, "spec": o}
                   for o in objects]
        result = run_kubexit({}, ["--check"], input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": objects}))
        assert result.returncode == 0, (block, result.stdout, result.stderr)
        checked += 1
    assert checked >= 2
