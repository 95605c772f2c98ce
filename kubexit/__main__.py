"""Entry point of kubexit.pyz (its top-level __main__) and of `python3 -m kubexit`.

The version gate comes first and parses on any Python, so that an image whose python3 is
too old gets one line that says so instead of a traceback.
"""

import marshal
import sys

if sys.version_info < (3, 8):  # noqa: UP036 (the gate is for those older ones)
    sys.stderr.write(
        "kubexit: needs CPython 3.8 or newer, but %s is %d.%d; run it with a newer python3 "
        "(kubexit --inject --python PATH), or put it in an image that has one\n"
        % ((sys.executable or "python3",) + tuple(sys.version_info[:2])))
    try:  # best effort: a sibling waiting on this container learns that it died
        import os

        from kubexit.cli import failed_start

        failed_start(2, os.environ)
    except Exception:
        pass
    sys.exit(2)


class CodeTable:
    """Imports kubexit's modules from the pyz's code table for this interpreter (the
    entry `bytecode/X.Y`, see build_zipapp.py): one read of the archive, where zipimport
    would open it for each module and parse, at each start, the directory entries of
    every file for every version. Each module is unmarshalled from its slice of the
    read, only when imported."""

    def __init__(self, sources, table):
        self.sources = sources    # the pyz's zipimporter: the modules' source, for tracebacks
        size = int.from_bytes(table[4:8], "little")
        self.index = marshal.loads(table[8:8 + size])   # name -> (offset, length)
        self.codes = table[8 + size:]

    def __repr__(self):
        return "<CodeTable %s/bytecode/%d.%d>" % ((self.sources.archive,)
                                                   + tuple(sys.version_info[:2]))

    def find_spec(self, name, path=None, target=None):
        if name not in self.index:
            return None
        from importlib.machinery import ModuleSpec  # imported already by runpy

        package = name == "kubexit"
        where = "%s/%s" % (self.sources.archive, name.replace(".", "/"))
        spec = ModuleSpec(name, self, is_package=package,
                          origin=where + ("/__init__.py" if package else ".py"))
        if package:
            spec.submodule_search_locations = [where]
        spec.has_location = True
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        offset, length = self.index[module.__name__]
        exec(marshal.loads(self.codes[offset:offset + length]), module.__dict__)

    def get_source(self, name):
        return self.sources.get_source(name)


def use_code_table(loader):
    """Put this interpreter's table first, when the pyz was built with one; without it,
    zipimport compiles the archive's sources at each start."""
    import importlib.util  # imported already by runpy

    try:
        table = loader.get_data("%s/bytecode/%d.%d" % ((loader.archive,)
                                                      + tuple(sys.version_info[:2])))
    except OSError:
        return
    table = memoryview(table)  # slices without copies
    if table[:4] == importlib.util.MAGIC_NUMBER:
        sys.meta_path.insert(0, CodeTable(loader, table))


if getattr(__loader__, "archive", None):  # noqa: F821 (set by the import system)
    use_code_table(__loader__)  # noqa: F821

from kubexit.cli import main  # noqa: E402

sys.exit(main())
