"""The step's tensors: every parameter and gradient checked and pinned, and
the pointer arrays of one call over every parameter (optim_step_with, SAM's
halves, optim_rebind); and the errors that name a refused tensor.

bind() is the only way the optimizers hand parameter or gradient memory to C.
Each pointer it passes is computed from a storage object it pins (see
_tensors) and checked against that storage's size, so even if another
thread replaces a tensor's data while bind() runs, C gets an address inside
memory the caller holds for the call. The caller holds the CObject's lock
from bind() to the end of the C call, and keeps the returned pins until then.
"""
import ctypes

import torch

from . import _tensors
from ._tensors import EMPTY_PTR, STRIDED, describe

__all__ = ["bind", "param_error", "grad_error", "NonFiniteGradientError", "nonfinite_error", "sam_guard"]

_ITEMSIZE = {torch.float32: 4, torch.float64: 8, torch.bfloat16: 2, torch.float16: 2}  # _tensors.ELEMENT_TYPES


class NonFiniteGradientError(RuntimeError):
    """A step of an optimizer with nonfinite='error' (or SAM's first_step or
    second_step over one) met a gradient holding NaN or Inf. Nothing was
    updated; a step() so refused counts in optimizer.skipped_steps.

    Attributes:
        index: the parameter's position in the optimizer (counting through
            param_groups in order), or None if it could not be found again.
        group: the index of its parameter group (or None).
        param: the parameter tensor (or None).
    """

    def __init__(self, message, index=None, group=None, param=None):
        super().__init__(message)
        self.index = index
        self.group = group
        self.param = param


def param_error(c, i, p):
    """The TypeError or ValueError that names what is wrong with parameter i."""
    if p.shape != c.shapes[i]:
        return ValueError("%s: parameter %d changed shape from %s to %s since it was added"
                          % (c.owner, i, tuple(c.shapes[i]), tuple(p.shape)))
    if p.dtype is not c.dtypes[i] and p.dtype in _tensors.ELEMENT_TYPES:
        return TypeError("%s: parameter %d changed dtype from %s to %s since it was added (its state and "
                         "storage are of the first)" % (c.owner, i, c.dtypes[i], p.dtype))
    try:
        c.check_new_param(i, p)
    except (TypeError, ValueError) as e:
        return e
    return RuntimeError("%s: parameter %d (%s) cannot be stepped" % (c.owner, i, describe(p)))


def grad_error(c, i, g):
    what = "%s: the gradient of parameter %d (%s)" % (c.owner, i, describe(g))
    if g.layout is not STRIDED:
        # RuntimeError, as torch.optim's "<class> does not support sparse gradients".
        torch_name = c.rule.rule_name
        if torch_name in ("sgd", "adagrad"):
            return RuntimeError("%s is sparse: torch.optim's %s accepts sparse gradients, optim.torch's does not "
                                "yet (use torch.optim, or step with p.grad = p.grad.to_dense())"
                                % (what, c.owner))
        hint = ", please consider SparseAdam instead" if torch_name == "adam" else ""
        return RuntimeError("%s does not support sparse gradients%s: %s is sparse" % (c.owner, hint, what))
    if not g.is_cpu:
        return TypeError("%s is not on the CPU" % what)
    if g.dtype is not c.dtypes[i]:
        return TypeError("%s is not of the parameter's dtype %s" % (what, c.dtypes[i]))
    if g.shape != c.shapes[i]:
        return ValueError("%s does not have the parameter's shape %s" % (what, tuple(c.shapes[i])))
    if not g.is_contiguous():
        return ValueError("%s is not contiguous" % what)
    if g.is_neg():
        return ValueError("%s %s" % (what, _tensors.NEG_VIEW))
    return ValueError("%s %s" % (what, _tensors.storage_problem(g) or "cannot be read"))


def bind(c, grads=True):
    """(count, params, grads, pins) for a C call over every parameter of
    CObject c: ctypes arrays of addresses (a gradient's None when it has none,
    or when grads is False) and the storages to hold until the call returns.
    Every parameter and gradient is checked first: CPU, of its registered dtype, dense,
    contiguous, of the parameter's registered shape, and over a storage that
    holds it; TypeError or ValueError naming the first bad one, and nothing is
    passed to C.

    Each address is the pinned storage's address plus the tensor's offset,
    checked against that storage's size with the same offset (read once), so
    that it lies inside memory the caller holds whatever another thread does
    to the tensor meanwhile. (The loop is written out: it runs for every
    tensor at every step.)"""
    params = c.params
    n = len(params)
    if c.ptrs is None:
        c.ptrs = ((ctypes.c_void_p * max(n, 1))(), (ctypes.c_void_p * max(n, 1))())
    pp, gp = c.ptrs
    shapes, numels = c.shapes, c.numels
    dtypes = c.dtypes
    strided, storage_of, itemsize = STRIDED, _tensors.storage_of, _ITEMSIZE
    pins = []
    pin = pins.append
    for i in range(n):
        p = params[i]
        shape = shapes[i]
        dt = dtypes[i]
        size = itemsize[dt]
        if p.dtype is not dt or p.shape != shape or not p.is_contiguous() or not p.is_cpu or p.is_neg():
            raise param_error(c, i, p)
        k = numels[i]
        if k:
            st = storage_of(p)
            base = st.data_ptr()
            offset = p.storage_offset()
            if not base or (offset + k) * size > st.nbytes():
                raise param_error(c, i, p)
            pin(st)
            pp[i] = base + offset * size
        else:
            pp[i] = None  # 0 elements: C reads nothing
        g = p.grad if grads else None
        if g is None:
            gp[i] = None
            continue
        if (g.layout is not strided or g.dtype is not dt or g.shape != shape or not g.is_contiguous()
                or not g.is_cpu or g.is_neg()):
            raise grad_error(c, i, g)
        if k:
            st = storage_of(g)
            base = st.data_ptr()
            offset = g.storage_offset()
            if not base or (offset + k) * size > st.nbytes():
                raise grad_error(c, i, g)
            pin(st)
            gp[i] = base + offset * size
        else:
            gp[i] = EMPTY_PTR  # not NULL, which would mean "no gradient": the step still counts, as in torch
    return n, pp, gp, pins


def nonfinite_error(c, owner, what, e):
    """The NonFiniteGradientError for liboptim's OPTIM_ENONFINITE `e`: the
    first parameter (in C order, as liboptim scans) whose gradient holds NaN
    or Inf, found again here. owner: "Adam: step"; what: what happened
    ("nothing was updated")."""
    # In a ZeroRedundancyOptimizer the index counts the rank's shard: say so.
    shard = "" if c.zero_rank is None else " of rank %d's shard" % c.zero_rank
    for i, p in enumerate(c.params):
        g = p.grad
        if g is not None and g.numel() and not _tensors.storage_problem(g) and not bool(torch.isfinite(g).all()):
            gi = c.group_of[i]
            return NonFiniteGradientError(
                "%s: the gradient of parameter %d%s (%s, param group %d) holds NaN or Inf; %s "
                "(nonfinite='error')" % (owner, i, shard, describe(g), gi, what), i, gi, p)
    return NonFiniteGradientError("%s: %s; %s (nonfinite='error')" % (owner, e, what))


def sam_guard(c, where):
    """RuntimeError while a SAM over this optimizer is between its halves: its
    own steps, added groups and checkpoints would act on w + e_hat or lose the
    way back to w (the C object refuses them too)."""
    if c.h.sam_active:
        raise RuntimeError("%s.%s: a SAM over this optimizer is between first_step and second_step (the "
                           "parameters are at w + e_hat); call its second_step() or restore() first"
                           % (c.owner, where))
