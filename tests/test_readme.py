"""The README is a promise: its quick start and webhook commands run as written.

kubectl and docker are not on this machine: kubectl's two calls in the quick start's
pipeline go to tests/fake_kubectl (YAML to JSON, and storing what is applied); the image
build and the completed Job are `make e2e`'s (it builds the Dockerfile with podman and plays
the injected quick-start pod)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

README = (ROOT / "README.md").read_text()
FAKE_KUBECTL = Path(__file__).resolve().parent / "fake_kubectl"


def section(title):
    start = README.index("\n## %s\n" % title)
    end = README.find("\n## ", start + 1)
    return README[start:end]


def shell_block(text):
    [block] = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line for line in block.splitlines() if line.strip()]


def run_shell(command, tmp_path, **env):
    environ = dict(os.environ, PATH="%s:%s:%s" % (FAKE_KUBECTL, Path(sys.executable).parent,
                                                 os.environ["PATH"]), **env)
    environ.pop("KUBEXIT_NAME", None)
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=60)


def injected_job(text):
    job = json.loads(text)
    spec = job["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["name"] == "kubexit"
    assert all(c["command"][:4] == ["python3", "-I", "-S", "/kubexit/kubexit.pyz"]
               for c in spec["containers"])
    return job


def test_quick_start_is_three_commands_and_its_pipeline_applies_an_injected_job(tmp_path):
    build, pipeline, wait = shell_block(section("Quick start"))
    assert build == "make build && docker build -t kubexit:latest ."
    assert wait.startswith("kubectl wait --for=condition=complete job/quickstart")
    applied = tmp_path / "applied.json"
    result = run_shell(pipeline, tmp_path, FAKE_KUBECTL_APPLIED=str(applied))
    assert result.returncode == 0, result
    assert result.stderr == ""
    job = injected_job(applied.read_text())
    assert job["metadata"]["name"] == "quickstart"
    checked = subprocess.run([sys.executable, str(ROOT / "dist/kubexit.pyz"), "--check",
                              str(applied)], capture_output=True, text=True, timeout=20)
    assert checked.returncode == 0, checked


def test_the_no_cluster_command_shows_the_injected_job(tmp_path):
    [command] = re.findall(r"`(python3 -c 'import json, sys, yaml;[^`]*)`", section("Quick start"))
    result = run_shell(command, tmp_path)
    assert result.returncode == 0, result
    injected_job(result.stdout)


def test_the_webhook_installation_makes_what_it_applies(tmp_path):
    make, apply, label = shell_block(section("Injection: --inject, --check and the webhook"))
    target = "/tmp/kubexit-webhook"
    assert target in make and apply == "kubectl apply -f %s/webhook.yaml" % target
    assert label == "kubectl label namespace default kubexit-injection=enabled"
    result = run_shell(make.replace(target, str(tmp_path / "hook")), tmp_path)
    assert result.returncode == 0, result
    assert "CA_BUNDLE" not in (tmp_path / "hook" / "webhook.yaml").read_text()
