"""optim.torch.clip_grad_norm_ and clip_grad_value_: torch.nn.utils's
functions of the same names, computed by liboptim in one call over every
gradient (include/optim_clip.h).

Gradients must be dense (strided) CPU float32 tensors: any order of
dimensions is read in place in storage order (so a norm sums in that
order), a gradient with gaps (a slice with a step) goes through a
contiguous copy written back; an expanded one is refused (torch's in-place
scaling refuses it too). Anything else is refused with an error naming the
parameter, rather than handed to torch: a
silent fallback would hide a slow path and give other roundings, and a model
whose gradients are on another device or in another dtype is better served
by torch.nn.utils directly.
"""
import math
import re

import torch

from .. import _core
from .._capi import OptimError
from . import _tensors
from ._step import Pins
from ._tensors import F32, STRIDED, describe

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(fn, parameters):
    """([(position in parameters, grad)], [address], [size], pins) for the
    parameters that have a gradient, each checked to be a dense (strided)
    CPU float32 tensor over memory that holds it (pins.write_back() after
    a call that changed them: gradients with gaps are passed as copies). The addresses come from the
    storages in pins: hold pins until the C call returns (another thread may
    replace a .grad meanwhile)."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    out, ptrs, sizes, pins = [], [], [], Pins()
    for i, p in enumerate(parameters):
        if not isinstance(p, torch.Tensor):
            raise TypeError("%s: parameters must be tensors, but item %d is a %s" % (fn, i, type(p).__name__))
        g = p.grad
        if g is None:
            continue
        what = "%s: the gradient of parameter %d (%s)" % (fn, i, describe(g))
        if g.layout is not STRIDED:
            raise TypeError("%s is sparse: optim's clipping needs dense gradients "
                            "(torch.nn.utils.%s handles other kinds)" % (what, fn))
        if not g.is_cpu:
            raise TypeError("%s is not on the CPU: optim's clipping runs on CPU float32 gradients "
                            "(torch.nn.utils.%s handles other devices)" % (what, fn))
        if g.dtype is not F32:
            raise TypeError("%s is not float32: optim's clipping runs on float32 gradients "
                            "(torch.nn.utils.%s handles other dtypes)" % (what, fn))
        if g.is_neg():
            raise ValueError("%s %s" % (what, _tensors.NEG_VIEW))
        n = g.numel()
        addr = None  # 0 elements: C skips a NULL array, and an empty one adds nothing to the norm
        if n and _tensors.is_dense(g.shape, g.stride()):
            # Any order of dimensions: C reads the run of memory in storage order.
            st = _tensors.storage_of(g)
            offset = g.storage_offset()
            if not st.data_ptr() or (offset + n) * 4 > st.nbytes():
                raise ValueError("%s %s" % (what, _tensors.storage_problem(g)))
            pins.append(st)
            addr = st.data_ptr() + 4 * offset
        elif n:
            if _tensors.overlaps_itself(g.shape, g.stride()):
                raise ValueError("%s, strides %s, %s" % (what, tuple(g.stride()), _tensors.OVERLAPS))
            problem = _tensors.storage_problem(g)
            if problem:
                raise ValueError("%s %s" % (what, problem))
            w = g.contiguous()  # with gaps (a slice with a step): a copy, written back after the call
            pins.append(w)
            pins.back.append((g, w))
            addr = w.data_ptr()
        out.append((i, g))
        ptrs.append(addr)
        sizes.append(n)
    return out, ptrs, sizes, pins


def _number(fn, name, value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError("%s: %s = %r is not a number" % (fn, name, value)) from None


def _library_error(fn, grads, e):
    """A ValueError for an OptimError of liboptim's clipping, with the
    positions of the parameters instead of the indices of the arrays."""
    text = str(e)
    if e.code == _core.EOVERLAP:
        m = re.search(r"grads\[(\d+)\] overlaps grads\[(\d+)\]", text)
        if m:
            a, b = grads[int(m.group(1))][0], grads[int(m.group(2))][0]
            return ValueError("%s: the gradients of parameters %d and %d share memory (is the same parameter "
                              "listed twice?): each would be scaled twice" % (fn, min(a, b), max(a, b)))
    return ValueError("%s: %s" % (fn, text))


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Clip the gradients of `parameters` to a total norm of `max_norm`, in place,
    as torch.nn.utils.clip_grad_norm_ (torch 1.13): the norm of all gradients
    together as one vector; every gradient is multiplied by
    min(1, max_norm / (total_norm + 1e-6)).

    Args:
        parameters (Iterable[Tensor] or Tensor): tensors whose .grad is clipped;
            those without a .grad are skipped.
        max_norm (float): the largest total norm, >= 0 (inf: no clipping).
        norm_type (float): the p of the p-norm, any p > 0 (p in (0, 1) too, as
            torch), or inf (also 'inf').
        error_if_nonfinite (bool): raise RuntimeError, leaving the gradients
            unchanged, when the total norm is NaN or Inf (default: False, as torch).

    Returns:
        The total norm before clipping, a 0-dim float32 tensor (tensor(0.) if
        no parameter has a gradient).

    Computed by liboptim in one call: the norm in double precision in a fixed
    order (the same bits for any thread count), so it may differ from torch's
    float32 norm in the last bits. It is inf where torch's float32 norm
    overflows although the exact one would not (the sum of |g|^p beyond
    float32's range: for p = 2 any |g| > 1.8e19), so that error_if_nonfinite
    raises and the factor max_norm / inf = 0 zeroes the gradients, as torch.
    The factor is formed from the float32 norm with torch's float32 operations:
    for the same float32 norm the gradients are torch's bit for bit. With
    max_norm = inf torch's factor is 1 (NaN for an infinite norm), as here.
    Gradients must be dense (strided), non-overlapping CPU float32 tensors
    (TypeError or ValueError naming the parameter otherwise); norm_type 0 (which torch
    takes: a count of non-zero entries) and negative ones raise ValueError.
    """
    fn = "clip_grad_norm_"
    grads, ptrs, sizes, pins = _grads(fn, parameters)
    max_norm = _number(fn, "max_norm", max_norm)
    norm_type = _number(fn, "norm_type", norm_type)
    if not norm_type > 0:
        raise ValueError("%s: norm_type = %r is not supported: optim computes p-norms with p > 0 or inf "
                         "(torch.nn.utils.clip_grad_norm_ also takes 0, a count of non-zero entries, and negative "
                         "orders, which are not norms)" % (fn, norm_type))
    if not max_norm >= 0:
        raise ValueError("%s: max_norm = %r must be a number >= 0 (torch would scale the gradients by a "
                         "negative or NaN factor)" % (fn, max_norm))
    if not grads:
        return torch.tensor(0.0)
    try:
        total = _core.clip_grad_norm(ptrs, sizes, max_norm, norm_type, error_if_nonfinite)
    except OptimError as e:
        if e.code != _core.ENONFINITE:
            raise _library_error(fn, grads, e) from None
        raise RuntimeError(
            "The total norm of order %s for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`" % (norm_type,)) from None
    pins.write_back()  # gradients with gaps were scaled in a copy
    del pins  # held until the call returned
    return torch.tensor(total, dtype=F32)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element of `parameters` to [-clip_value, clip_value],
    in place, as torch.nn.utils.clip_grad_value_ (NaN stays NaN). Returns None.

    Args:
        parameters (Iterable[Tensor] or Tensor): tensors whose .grad is clipped;
            those without a .grad are skipped.
        clip_value (float): the bound, >= 0 (inf changes nothing).

    Computed by liboptim in one call over every gradient. Gradients must be
    dense (strided), non-overlapping CPU float32 tensors (TypeError or
    ValueError naming the parameter otherwise). A negative or NaN clip_value raises ValueError
    (torch would set every element to clip_value).
    """
    fn = "clip_grad_value_"
    grads, ptrs, sizes, pins = _grads(fn, parameters)
    clip_value = _number(fn, "clip_value", clip_value)
    if not clip_value >= 0:
        raise ValueError("%s: clip_value = %r must be a number >= 0 (torch would set every element to it)"
                         % (fn, clip_value))
    if not grads or math.isinf(clip_value):
        return None
    try:
        _core.clip_grad_value(ptrs, sizes, clip_value)
    except OptimError as e:
        raise _library_error(fn, grads, e) from None
    pins.write_back()  # gradients with gaps were clipped in a copy
    del pins  # held until the call returned
    return None
