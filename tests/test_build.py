"""The zipapp build: reproducible, so a download can be checked by its sha256."""

import hashlib
import subprocess
import sys

from conftest import ROOT, clean_environment


def build(output, cwd):
    subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "-o", str(output)],
                   cwd=str(cwd), check=True, capture_output=True, timeout=60,
                   env=clean_environment())
    return hashlib.sha256(output.read_bytes()).hexdigest()


def test_build_is_byte_for_byte_reproducible(tmp_path):
    first = build(tmp_path / "a" / "kubexit.pyz", ROOT)
    second = build(tmp_path / "b" / "kubexit.pyz", tmp_path)
    assert first == second


def test_built_zipapp_runs(tmp_path):
    output = tmp_path / "kubexit.pyz"
    build(output, ROOT)
    result = subprocess.run([sys.executable, str(output), "--version"], capture_output=True,
                            text=True, timeout=20, env=clean_environment())
    assert result.returncode == 0, result
