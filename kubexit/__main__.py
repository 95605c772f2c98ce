"""Entry point of kubexit.pyz (its top-level __main__) and of `python3 -m kubexit`.

The version gate comes first and parses on any Python, so that an image whose python3 is
too old gets one line that says so instead of a traceback.
"""

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

# In the pyz: this interpreter's own bytecode, when the build added it (build_zipapp.py
# --bytecode-for), is found before the archive's root; without it, the root's.
if getattr(__loader__, "archive", None):  # noqa: F821 (set by the import system)
    sys.path.insert(0, "%s/bytecode/%d.%d" % ((__loader__.archive,)  # noqa: F821
                                              + tuple(sys.version_info[:2])))

from kubexit.cli import main  # noqa: E402

sys.exit(main())
