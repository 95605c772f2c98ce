#!/usr/bin/env python3
"""Build dist/kubexit.pyz: one executable file, byte-for-byte reproducible.

The package goes in as source, and as one code table per CPython version, compiled by
that interpreter (this one, and each `--bytecode-for PYTHON`): the entry `bytecode/X.Y`,
that version's bytecode magic number, the length of the index (4 bytes, little-endian),
the index (marshalled {module name: (offset, length)}), then each module's marshalled
code at its offset. __main__ imports kubexit from its version's table: one read,
where zipimport would open the archive for each module and parse the directory entry of
every file of every version at each start. A version without a table compiles every
module it imports from source at each start (about 14 ms for the supervising path).
Entries have a fixed date, mode and order, so the same source and the same interpreters
give the same sha256.
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


# Run by each interpreter: {archive name: source} on stdin (marshal version 2, which
# 3.8 reads), [[major, minor], code table] out, in that interpreter's own marshal.
COMPILE_TABLE = """
import importlib.util, marshal, sys
sources = marshal.loads(sys.stdin.buffer.read())
index, codes, offset = {}, [], 0
for name, source in sorted(sources.items()):
    module = name[:-3].replace("/", ".")
    if module.endswith(".__init__"):
        module = module[:-len(".__init__")]
    code = marshal.dumps(compile(source, name, "exec", dont_inherit=True))
    index[module] = (offset, len(code))
    codes.append(code)
    offset += len(code)
head = marshal.dumps(index)
table = importlib.util.MAGIC_NUMBER + len(head).to_bytes(4, "little") + head + b"".join(codes)
sys.stdout.buffer.write(marshal.dumps([list(sys.version_info[:2]), table]))
"""


def code_tables(pythons, package):
    """{(major, minor): code table} of the package's modules, one per minor version of
    the interpreters in `pythons` (3.8+; the first of a version wins)."""
    found = {}
    for python in pythons:
        result = subprocess.run([python, "-I", "-S", "-c", COMPILE_TABLE],
                                input=marshal.dumps(package, 2), capture_output=True,
                                env=dict(os.environ, PYTHONHASHSEED="0"), check=False)
        if result.returncode != 0:
            sys.exit("build_zipapp: %s cannot compile kubexit: %s"
                     % (python, result.stderr.decode(errors="replace").strip()[-300:]))
        version, table = marshal.loads(result.stdout)
        version = tuple(version)
        if version >= (3, 8) and version not in found:
            found[version] = table
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


def add(archive, arcname, data):
    """Stored, not deflated: inflating costs every start more than the bytes it saves."""
    info = zipfile.ZipInfo(arcname, FIXED_DATE)
    info.external_attr = 0o644 << 16
    info.create_system = 3
    archive.writestr(info, data)


def build(output, pythons=()):
    """The pyz at `output` with code tables for this interpreter and `pythons`;
    (sha256, the versions that have a table)."""
    os.makedirs(os.path.dirname(output), exist_ok=True)
    temporary = output + ".tmp"
    sources = dict(entries())
    package = {name: source for name, source in sources.items() if name.startswith("kubexit/")}
    tables = code_tables([sys.executable] + list(pythons), package)
    with open(temporary, "wb") as raw:
        raw.write(SHEBANG)
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as archive:
            add(archive, "__main__.py", sources["__main__.py"])
            add(archive, "__main__.pyc", bytecode(sources["__main__.py"], "__main__.py"))
            for name, source in package.items():
                add(archive, name, source)
            for version in sorted(tables):
                add(archive, "bytecode/%d.%d" % version, tables[version])
    os.chmod(temporary, 0o755)
    os.replace(temporary, output)
    with open(output, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest(), set(tables)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=os.path.join(ROOT, "dist", "kubexit.pyz"))
    parser.add_argument("--bytecode-for", nargs="*", default=[], metavar="PYTHON",
                        help="other CPython interpreters to add a code table for")
    args = parser.parse_args()
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Frozenset constants are marshalled in hash order: pin it for reproducibility.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    digest, versions = build(args.output, args.bytecode_for)
    print("%s  %s  (bytecode for Python %s)" % (
        digest, os.path.relpath(args.output),
        ", ".join("%d.%d" % v for v in sorted(versions))))


if __name__ == "__main__":
    main()
