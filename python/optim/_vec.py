"""liboptim's vector operations (include/optim_vec.h) over addresses the
caller keeps alive during each call: dot products, y += a x, y = a x, norms,
and L-BFGS's two-loop recursion. Results are the same bits for any thread
count and CPU path."""
import ctypes

from . import _capi as capi
from ._capi import Error, check

__all__ = ["dot", "axpy", "scale", "norm", "lbfgs_direction"]

_vp = ctypes.c_void_p
_size = ctypes.c_size_t
_dbl = ctypes.c_double


def _arrays(ptrs, sizes):
    count = len(ptrs)
    return count, (_vp * max(count, 1))(*ptrs), (_size * max(count, 1))(*sizes)


def dot(dtype, xs, ys, sizes, threads=0):
    """sum of x . y over the segments (xs[i], ys[i]) of sizes[i] elements."""
    count, x, n = _arrays(xs, sizes)
    y = (_vp * max(count, 1))(*ys)
    out, err = _dbl(), Error()
    check(capi.optim_vec_dot(dtype, count, x, y, n, threads, ctypes.byref(out), ctypes.byref(err)), err.message)
    return out.value


def axpy(dtype, a, xs, ys, sizes, threads=0):
    """y = fma(a, x, y) for every segment, in place."""
    count, x, n = _arrays(xs, sizes)
    y = (_vp * max(count, 1))(*ys)
    err = Error()
    check(capi.optim_vec_axpy(dtype, count, a, x, y, n, threads, ctypes.byref(err)), err.message)


def scale(dtype, a, xs, ys, sizes, threads=0):
    """y = a * x for every segment (y may be x)."""
    count, x, n = _arrays(xs, sizes)
    y = (_vp * max(count, 1))(*ys)
    err = Error()
    check(capi.optim_vec_scale(dtype, count, a, x, y, n, threads, ctypes.byref(err)), err.message)


def norm(dtype, xs, sizes, norm_type, threads=0):
    """The norm_type-norm (1, 2, p > 0, inf) of the segments together, in double."""
    count, x, n = _arrays(xs, sizes)
    out, err = _dbl(), Error()
    check(capi.optim_vec_norm(dtype, count, x, n, norm_type, threads, ctypes.byref(out), ctypes.byref(err)),
          err.message)
    return out.value


def lbfgs_direction(dtype, n, dirs, stps, ro, h_diag, g, d, threads=0):
    """optim_lbfgs_direction: writes d = -H g at address d; returns al (m floats)."""
    m = len(dirs)
    a_dirs = (_vp * max(m, 1))(*dirs)
    a_stps = (_vp * max(m, 1))(*stps)
    a_ro = (_dbl * max(m, 1))(*ro)
    al = (_dbl * max(m, 1))()
    err = Error()
    check(capi.optim_lbfgs_direction(dtype, n, m, a_dirs, a_stps, a_ro, h_diag, g, d, al, threads,
                                     ctypes.byref(err)), err.message)
    return list(al[:m])
