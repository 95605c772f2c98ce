"""libc calls that the os module lacks (prctl, inotify), at the price of `_ctypes` alone.

`import ctypes` costs about 3 ms of every start on these machines; its C core `_ctypes`
about 0.5 ms, and the core's call_function passes ints and bytes as C would. Where the
core lacks what this needs (another interpreter), ctypes does the call. A call that
fails is made once more through ctypes, which reads errno: failures are rare, and their
reason matters more than their speed.
"""

import os

try:
    import _ctypes

    _LIBC = _ctypes.dlopen(None, os.RTLD_NOW)
    _call_function = _ctypes.call_function
except (ImportError, AttributeError, OSError):
    _call_function = None
_addresses = {}


def call(name, *args):
    """libc's `name`(*args), ints and bytes only, returning its int; OSError on -1."""
    if _call_function is not None:
        address = _addresses.get(name)
        if address is None:
            address = _addresses[name] = _ctypes.dlsym(_LIBC, name)
        result = _call_function(address, args)
        if result != -1:
            return result
    import ctypes

    result = getattr(ctypes.CDLL(None, use_errno=True), name)(*args)
    if result == -1:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return result
