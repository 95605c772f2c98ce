#!/usr/bin/env python3
"""Build dist/kubexit.pyz: one executable file, byte-for-byte reproducible.

Each module goes in as source and as bytecode compiled by this interpreter (unchecked
hash-based .pyc, PEP 552, so no timestamps): an interpreter of the same minor version
starts from bytecode, any other CPython 3.8+ falls back to the source. Entries have a
fixed date, mode and order, so the same source and build interpreter give the same
sha256.
"""

import argparse
import hashlib
import importlib.util
import marshal
import os
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


def entries():
    """(archive name, bytes) for the package and the zip's __main__, in a fixed order."""
    package = os.path.join(ROOT, "kubexit")
    modules = sorted(n for n in os.listdir(package) if n.endswith(".py"))
    with open(os.path.join(package, "__main__.py"), "rb") as file:
        yield "__main__.py", file.read()   # the version gate, then kubexit.cli.main
    for name in modules:
        with open(os.path.join(package, name), "rb") as file:
            yield "kubexit/" + name, file.read()


def build(output):
    os.makedirs(os.path.dirname(output), exist_ok=True)
    temporary = output + ".tmp"
    with open(temporary, "wb") as raw:
        raw.write(SHEBANG)
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as archive:
            for name, source in entries():
                for arcname, data in ((name, source),
                                      (name[:-3] + ".pyc", bytecode(source, name))):
                    info = zipfile.ZipInfo(arcname, FIXED_DATE)
                    info.external_attr = 0o644 << 16
                    info.create_system = 3
                    archive.writestr(info, data)
    os.chmod(temporary, 0o755)
    os.replace(temporary, output)
    with open(output, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=os.path.join(ROOT, "dist", "kubexit.pyz"))
    args = parser.parse_args()
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Frozenset constants are marshalled in hash order: pin it for reproducibility.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    digest = build(args.output)
    print("%s  %s  (bytecode for Python %d.%d)" % (
        digest, os.path.relpath(args.output), *sys.version_info[:2]))


if __name__ == "__main__":
    main()
