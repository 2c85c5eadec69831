"""Loading liboptim with ctypes, and the pieces of its C API every module uses.

The library is found, in order, at:
  1. $OPTIM_LIBRARY (a path to liboptim.so);
  2. the CMake build tree of this checkout that `make` uses, build/liboptim.so,
     then any other build*/liboptim.so next to python/ (newest first);
  3. the system's library path (ctypes.util.find_library("optim")).
No build step and no installation are needed: `make` builds the library and
the package finds it.

Modules that wrap a part of the C API declare the prototypes they use with
`declare(name, restype, *argtypes)` on first use.
"""
import ctypes
import ctypes.util
import glob
import os

from ._errors import OptimError

__all__ = ["lib", "declare", "OptimError", "check", "OPTIM_OK"]

OPTIM_OK = 0
_ERRMSG_MAX = 320


class Error(ctypes.Structure):
    """struct optim_error: the detail of a failure of a handle-less call."""

    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * _ERRMSG_MAX)]


def _candidates():
    env = os.environ.get("OPTIM_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    main = os.path.join(root, "build", "liboptim.so")
    if os.path.exists(main):
        yield main
    others = [p for p in glob.glob(os.path.join(root, "build*", "liboptim.so")) if p != main]
    for path in sorted(others, key=os.path.getmtime, reverse=True):
        yield path
    found = ctypes.util.find_library("optim")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        try:
            handle = ctypes.CDLL(path)
        except OSError as exc:
            tried.append("%s (%s)" % (path, exc))
            continue
        try:
            handle.optim_version_string
        except AttributeError:
            tried.append("%s (loads, but is not liboptim: it has no optim_version_string)" % path)
            continue
        return handle, path
    if os.environ.get("OPTIM_LIBRARY"):
        raise ImportError("OPTIM_LIBRARY=%s cannot be loaded: %s" % (os.environ["OPTIM_LIBRARY"], "; ".join(tried)))
    raise ImportError(
        "liboptim.so not found: build it with `make` at the root of the optim checkout "
        "(it lands in build/), or point OPTIM_LIBRARY at a liboptim.so"
        + ("; tried: " + "; ".join(tried) if tried else "")
    )


lib, path = _load()


def declare(name, restype, *argtypes):
    """Set and return the prototype of C function `name`."""
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


declare("optim_version_string", ctypes.c_char_p)
declare("optim_strerror", ctypes.c_char_p, ctypes.c_int)
declare("optim_err_name", ctypes.c_char_p, ctypes.c_int)


def check(code, message=None):
    """Raise OptimError for a non-zero status, with `message` (bytes or str)
    or else the library's fixed message for the code."""
    if code == OPTIM_OK:
        return
    name = lib.optim_err_name(code).decode()
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    if not message:
        message = lib.optim_strerror(code).decode()
    raise OptimError(code, name, message)


version = lib.optim_version_string().decode()
