#!/usr/bin/env python3
"""Build dist/kubexit.pyz: one executable file, byte-for-byte reproducible.

Each module goes in as source and as bytecode compiled by this interpreter (unchecked
hash-based .pyc, PEP 552, so no timestamps): an interpreter of the same minor version
starts from bytecode. `--bytecode-for PYTHON...` adds, under bytecode/X.Y/, the bytecode
of other CPython versions (compiled by those interpreters; deflated), which __main__
puts first on sys.path: without it a version compiles every module it imports at each
start (about 14 ms for the supervising path). Any other CPython 3.8+ falls back to the
source. Entries have a fixed date, mode and order, so the same source and the same
interpreters give the same sha256.
"""

import argparse
import hashlib
import importlib.util
import marshal
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.abspath(__file__))
SHEBANG = b"#!/usr/bin/env python3\n"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def bytecode(source, filename):
    """An unchecked hash-based pyc (flags=0b01): valid whatever the file's mtime."""
    code = compile(source, filename, "exec", dont_inherit=True)
    header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
    return header + importlib.util.source_hash(source) + marshal.dumps(code)


# Run by another interpreter: {name: source bytes} on stdin (marshal), {name: pyc} out.
COMPILE_ELSEWHERE = """
import importlib.util, marshal, sys
sources = marshal.loads(sys.stdin.buffer.read())
header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
out = {name: header + importlib.util.source_hash(source)
       + marshal.dumps(compile(source, name, "exec", dont_inherit=True))
       for name, source in sources.items()}
sys.stdout.buffer.write(marshal.dumps([list(sys.version_info[:2]), out]))
"""


def other_bytecode(pythons, sources):
    """{(major, minor): {name: pyc}} from each interpreter in `pythons` (3.8+, one per
    minor version, the building one's left out: its bytecode is in the archive's root)."""
    found = {}
    for python in pythons:
        result = subprocess.run([python, "-I", "-S", "-c", COMPILE_ELSEWHERE],
                                input=marshal.dumps(sources, 2), capture_output=True,
                                env=dict(os.environ, PYTHONHASHSEED="0"), check=False)
        if result.returncode != 0:
            sys.exit("build_zipapp: %s cannot compile kubexit: %s"
                     % (python, result.stderr.decode(errors="replace").strip()[-300:]))
        version, pycs = marshal.loads(result.stdout)
        version = tuple(version)
        if version >= (3, 8) and version != sys.version_info[:2] and version not in found:
            found[version] = pycs
    return found


def entries():
    """(archive name, bytes) for the package and the zip's __main__, in a fixed order."""
    package = os.path.join(ROOT, "kubexit")
    modules = sorted(n for n in os.listdir(package) if n.endswith(".py"))
    with open(os.path.join(package, "__main__.py"), "rb") as file:
        yield "__main__.py", file.read()   # the version gate, then kubexit.cli.main
    for name in modules:
        with open(os.path.join(package, name), "rb") as file:
            yield "kubexit/" + name, file.read()


def add(archive, arcname, data, compress=zipfile.ZIP_STORED):
    info = zipfile.ZipInfo(arcname, FIXED_DATE)
    info.external_attr = 0o644 << 16
    info.create_system = 3
    info.compress_type = compress
    archive.writestr(info, data)


def build(output, pythons=()):
    os.makedirs(os.path.dirname(output), exist_ok=True)
    temporary = output + ".tmp"
    sources = dict(entries())
    others = other_bytecode(pythons, sources)
    with open(temporary, "wb") as raw:
        raw.write(SHEBANG)
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as archive:
            for name, source in sources.items():
                add(archive, name, source)
                add(archive, name[:-3] + ".pyc", bytecode(source, name))
            for version in sorted(others):
                for name, pyc in sorted(others[version].items()):
                    if name.startswith("kubexit/"):
                        add(archive, "bytecode/%d.%d/%s" % (version + (name[:-3] + ".pyc",)),
                            pyc, zipfile.ZIP_DEFLATED)
    os.chmod(temporary, 0o755)
    os.replace(temporary, output)
    with open(output, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest(), set(others)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=os.path.join(ROOT, "dist", "kubexit.pyz"))
    parser.add_argument("--bytecode-for", nargs="*", default=[], metavar="PYTHON",
                        help="other CPython interpreters whose bytecode to add")
    args = parser.parse_args()
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Frozenset constants are marshalled in hash order: pin it for reproducibility.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    digest, versions = build(args.output, args.bytecode_for)
    print("%s  %s  (bytecode for Python %s)" % (
        digest, os.path.relpath(args.output),
        ", ".join("%d.%d" % v for v in sorted(versions | {sys.version_info[:2]}))))


if __name__ == "__main__":
    main()
