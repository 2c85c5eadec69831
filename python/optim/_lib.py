"""Loading liboptim with ctypes.

The library is found, in order, at:
  1. $OPTIM_LIBRARY (a path to liboptim.so);
  2. the library installed inside this package (optim/_native/liboptim.so,
     which `pip install .` puts there): an installed package uses its own
     library, never an older one lying in a build tree or on the system;
  3. the CMake build tree of this checkout that `make` uses, build/liboptim.so,
     then any other build*/liboptim.so next to python/ (newest first);
  4. the system's library path (ctypes.util.find_library("optim"), e.g. the
     Debian package CPack builds).
From a checkout no build step and no installation are needed: `make` builds
the library and the package finds it.

Only the loading is here: optim._capi declares the C functions (every one, in
one table) and reads the library's version.
"""
import ctypes
import ctypes.util
import glob
import os

__all__ = ["lib", "path"]  # and version, read through optim._capi (below)


def _candidates():
    env = os.environ.get("OPTIM_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    packaged = os.path.join(here, "_native", "liboptim.so")
    if os.path.exists(packaged):
        yield packaged
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
        "liboptim.so not found: install the package with `pip install .` from the optim checkout, or build "
        "it with `make` at the root of the checkout (it lands in build/), or point OPTIM_LIBRARY at a liboptim.so"
        + ("; tried: " + "; ".join(tried) if tried else "")
    )


lib, path = _load()


def __getattr__(name):
    # PEP 562: the version is read through optim._capi's declarations.
    if name == "version":
        from . import _capi
        return _capi.version
    raise AttributeError("module 'optim._lib' has no attribute %r" % (name,))
