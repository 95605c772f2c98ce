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


def other_interpreter():
    """A CPython 3.8+ of another minor version than the test's, from pyenv, or None."""
    import glob
    import os

    mine = "%d.%d." % sys.version_info[:2]
    for path in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))):
        version = path.split("/versions/")[1].split("/")[0]
        if not version.startswith(mine) and tuple(map(int, version.split(".")[:2])) >= (3, 8):
            return path
    return None


def test_other_versions_start_from_their_own_bytecode(tmp_path):
    import pytest

    python = other_interpreter()
    if python is None:
        pytest.skip("no CPython 3.8+ of another minor version under ~/.pyenv")
    output = tmp_path / "kubexit.pyz"
    subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "-o", str(output),
                    "--bytecode-for", python], check=True, capture_output=True, timeout=120,
                   env=clean_environment())
    bare = tmp_path / "bare.pyz"
    build(bare, ROOT)
    for pyz, expected in ((output, True), (bare, False)):
        result = subprocess.run([python, "-I", "-S", "-v", str(pyz), "--version"],
                                capture_output=True, text=True, timeout=20,
                                env=clean_environment())
        assert result.returncode == 0, result
        loaded = [line for line in result.stderr.splitlines()
                  if line.startswith("import 'kubexit.cli'")]
        assert len(loaded) == 1, result.stderr[-2000:]
        assert ("/bytecode/" in loaded[0]) == expected, loaded


def test_the_bytecode_set_does_not_depend_on_the_order_given(tmp_path):
    import pytest

    python = other_interpreter()
    if python is None:
        pytest.skip("no CPython 3.8+ of another minor version under ~/.pyenv")
    digests = []
    for name, pythons in (("a", [python, sys.executable]), ("b", [sys.executable, python])):
        output = tmp_path / name / "kubexit.pyz"
        subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "-o", str(output),
                        "--bytecode-for"] + pythons, check=True, capture_output=True,
                       timeout=120, env=clean_environment())
        digests.append(hashlib.sha256(output.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
