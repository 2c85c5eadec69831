"""liboptim_muon (include/optim_muon.h), loaded on first use by optim.torch.Muon:
Muon's Newton-Schulz iterations over OpenBLAS, a library apart from liboptim so
that nothing else links BLAS.

Found, in order, at $OPTIM_MUON_LIBRARY, then beside the liboptim this package
loaded (the build tree and `pip install .` put liboptim_muon.so there), then on
the system's library path.
"""
import ctypes
import ctypes.util
import os

from . import _capi, _lib

__all__ = ["attach", "backend"]

_handle = None


def _load():
    global _handle
    if _handle is not None:
        return _handle
    tried = []
    env = os.environ.get("OPTIM_MUON_LIBRARY")
    cands = [env] if env else [os.path.join(os.path.dirname(os.path.abspath(_lib.path)), "liboptim_muon.so"),
                               ctypes.util.find_library("optim_muon")]
    for path in cands:
        if not path:
            continue
        try:
            h = _capi.declare_muon(ctypes.CDLL(path))
        except (OSError, AttributeError) as exc:
            tried.append("%s (%s)" % (path, exc))
            continue
        _handle = h
        return h
    raise ImportError("liboptim_muon.so (Muon's matrix products over OpenBLAS) not found: build it with `make` "
                      "(CMake option OPTIM_MUON, Debian's libopenblas-dev) or point OPTIM_MUON_LIBRARY at it"
                      + ("; tried: " + "; ".join(tried) if tried else ""))


def attach(handle):
    """Give the C optimizer of an optim._core.Handle (rule muon) liboptim_muon's iterations."""
    h = _load()
    handle._call(lambda ptr: h["optim_muon_attach"](ptr))


def backend():
    """OpenBLAS's configuration string, as liboptim_muon reports it."""
    return _load()["optim_muon_backend"]().decode()
