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


def imported_from(python, pyz, module="kubexit.cli"):
    """The line of `python -v` that says where `module` came from, running the pyz."""
    result = subprocess.run([python, "-I", "-S", "-v", str(pyz), "--version"],
                            capture_output=True, text=True, timeout=20, env=clean_environment())
    assert result.returncode == 0, result
    loaded = [line for line in result.stderr.splitlines()
              if line.startswith("import %r" % module)]
    assert len(loaded) == 1, result.stderr[-2000:]
    return loaded[0]


def test_modules_come_from_the_code_table_and_keep_their_source(tmp_path):
    output = tmp_path / "kubexit.pyz"
    build(output, ROOT)
    assert "<CodeTable %s/bytecode/%d.%d>" % ((output,) + sys.version_info[:2]) \
        in imported_from(sys.executable, output)
    # A traceback through a module from the table shows its source lines.
    script = ("import runpy, sys, traceback\n"
              "sys.argv = ['kubexit', '--version']\n"
              "try:\n    runpy.run_path(sys.argv.pop(), run_name='__main__')\n"
              "except SystemExit:\n    pass\n"
              "from kubexit import cli\n"
              "print(cli.__loader__, file=sys.stderr)\n"
              "try:\n    cli.failed_start(1, None)\n"
              "except AttributeError:\n    traceback.print_exc()\n")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script.replace(
        "sys.argv.pop()", repr(str(output)))], capture_output=True, text=True, timeout=20,
        env=clean_environment())
    assert "<CodeTable " in result.stderr, result.stderr
    assert "target = failed_start_record(environ)" in result.stderr, result.stderr


def test_a_table_of_another_bytecode_falls_back_to_the_source(tmp_path):
    """A table whose magic number is not this interpreter's is never unmarshalled."""
    import zipfile

    output = tmp_path / "kubexit.pyz"
    build(output, ROOT)
    tampered = tmp_path / "tampered.pyz"
    name = "bytecode/%d.%d" % sys.version_info[:2]
    with zipfile.ZipFile(str(output)) as source, zipfile.ZipFile(str(tampered), "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, b"\0\0\0\0" + data[4:] if info.filename == name else data)
    assert "zipimporter" in imported_from(sys.executable, tampered)


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
        assert ("<CodeTable " in imported_from(python, pyz)) == expected


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
