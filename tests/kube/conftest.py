"""Fixtures for the Kubernetes API tests: one CA per session, one fresh API server per test."""

import os
import socket
import subprocess
import sys

import pytest

from .apiserver import ApiServer
from .certs import make_certs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYZ = os.path.join(ROOT, "dist", "kubexit.pyz")


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(str(tmp_path_factory.mktemp("kube-certs")))


@pytest.fixture
def api(certs, tmp_path):
    server = ApiServer(certs, str(tmp_path / "serviceaccount")).start()
    yield server
    server.stop()


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def api6(certs, tmp_path):
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    server = ApiServer(certs, str(tmp_path / "serviceaccount"), host="::1").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pyz():
    """dist/kubexit.pyz, built once if missing."""
    if not os.path.exists(PYZ):
        subprocess.run([sys.executable, "build_zipapp.py"], cwd=ROOT, check=True)
    return PYZ
