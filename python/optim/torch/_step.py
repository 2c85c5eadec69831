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

from .. import _constants as C
from .. import _core
from . import _distributed, _tensors
from ._tensors import EMPTY_PTR, STRIDED, describe

__all__ = ["Pins", "bind", "param_error", "grad_error", "NonFiniteGradientError", "nonfinite_error", "sam_guard"]

_ITEMSIZE = _tensors.ITEMSIZE


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
    if p.dtype is not c.dtypes[i] and (p.dtype in _tensors.ELEMENT_TYPES or p.dtype in _tensors.COMPLEX_TYPES):
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
        if g.layout is not torch.sparse_coo or not c.rule.sparse:
            # RuntimeError, as torch.optim's "<class> does not support sparse gradients".
            hint = ", please consider SparseAdam instead" if c.rule.rule_name == "adam" else ""
            return RuntimeError("%s does not support sparse gradients%s: %s is sparse" % (c.owner, hint, what))
        if not g.is_cpu:
            return TypeError("%s is not on the CPU" % what)
        if g.dtype is not c.dtypes[i]:
            return TypeError("%s is not of the parameter's dtype %s" % (what, c.dtypes[i]))
        if g.shape != c.shapes[i]:
            return ValueError("%s does not have the parameter's shape %s" % (what, tuple(c.shapes[i])))
        return ValueError("%s cannot be stepped" % what)
    if not g.is_cpu:
        return TypeError("%s is not on the CPU" % what)
    if g.dtype is not c.dtypes[i]:
        return TypeError("%s is not of the parameter's dtype %s" % (what, c.dtypes[i]))
    if g.shape != c.shapes[i]:
        return ValueError("%s does not have the parameter's shape %s" % (what, tuple(c.shapes[i])))
    if g.is_neg():
        return ValueError("%s %s" % (what, _tensors.NEG_VIEW))
    if g.is_conj():
        return ValueError("%s %s" % (what, _tensors.CONJ_VIEW))
    return ValueError("%s %s" % (what, _tensors.storage_problem(g) or "cannot be read"))


class Pins(list):
    """The storages (and working copies) a C call uses, to hold until it
    returns, and the working copies to write back into their parameters
    after a call that changed them (write_back)."""

    __slots__ = ("back", "sparse")

    def __init__(self):
        super().__init__()
        self.back = []  # (the parameter's memory as checked, its working copy)
        self.sparse = None  # the c_void_p array of SparseGrad addresses, when a gradient is sparse

    def write_back(self):
        """Copy each working copy into the parameter memory it was made from
        (by logical index), after a C call that wrote the parameters."""
        for p, w in self.back:
            p.copy_(w)


def _copy_in(c, i, t, layout):
    """A new tensor of t's values in the parameter's state layout (its strides
    `layout`): the working copy C steps for a parameter, or a gradient in
    the parameter's storage order. t was checked: readable, not a negation
    or conjugate view (a parameter also not overlapping itself)."""
    w = torch.empty_strided(c.shapes[i], layout, dtype=c.dtypes[i])
    w.copy_(t)
    return w


def _param_copy_error(c, i, p):
    """The error for a parameter that cannot be stepped through a working copy."""
    what = "%s: parameter %d (%s, strides %s)" % (c.owner, i, describe(p), tuple(p.stride()))
    if _tensors.overlaps_itself(p.shape, p.stride()):
        return ValueError("%s %s" % (what, _tensors.OVERLAPS))
    problem = _tensors.storage_problem(p)
    return ValueError("%s %s" % (what, problem)) if problem else None


def _meta(t):
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def state_layout(c, i, p, g):
    """The strides torch 1.13 gives parameter i's state if it makes it now,
    with parameter p and gradient g (or None): zeros_like(p, memory_format=
    torch.preserve_format), p's layout; but SGD's momentum buffer is
    torch.clone(d_p) of its first step, d_p = -g if maximize, + weight_decay
    * p: the layout torch's operations give d_p (computed on meta tensors,
    which run torch's own layout rules without memory). int8_block state
    always takes p's layout: its blocks follow the memory order, so state in
    another layout could not be written to a checkpoint in the parameter's
    layout without requantizing (docs/CHECKPOINT.md)."""
    rule = c.rule
    if rule.state_from_grad and g is not None and c.state_type(p.dtype) != C.OPTIM_INT8_BLOCK:
        values = dict(zip(rule.hp_fields, c.pushed[c.group_of[i]]))
        if values.get("momentum"):
            d = _meta(g)
            if values.get("maximize"):
                d = -d
            if values.get("weight_decay"):
                d = d.add(_meta(p))
            return _tensors.layout_of(d)
    return c.layout_for(p)


def _complex_refusal(c, i, p):
    """RuntimeError if complex parameter i's group has an option with which
    torch 1.13 fails to step complex parameters (Adam's amsgrad)."""
    gi = c.group_of[i]
    values = dict(zip(c.rule.hp_fields, c.pushed[gi]))
    for field, why in c.rule.complex_refuse.items():
        if values.get(field):
            raise RuntimeError("%s: parameter %d (%s) is complex and param group %d has %s=True: %s; nothing "
                               "was changed" % (c.owner, i, describe(p), gi, field, why))


def _sparse_grad(c, i, p, g, k, layout, pins):
    """The sparse gradient g of parameter i as liboptim takes it: a SparseGrad
    (rows, values; optim_sparse.h) over tensors appended to pins, or, for SGD
    with momentum, the dense gradient (a tensor in pins). torch 1.13's
    refusals first, with its exception types. Coalesced with torch's own
    coalesce (duplicate indices summed, rows sorted), as torch's optimizers do."""
    rule = c.rule
    if not g.is_cpu or g.dtype is not c.dtypes[i] or g.shape != c.shapes[i]:
        raise grad_error(c, i, g)
    values = dict(zip(rule.hp_fields, c.pushed[c.group_of[i]]))
    if values.get("weight_decay"):
        if rule.rule_name == "sgd":  # torch: d_p.add(param, alpha=weight_decay) on a sparse d_p
            raise RuntimeError("add(sparse, dense) is not supported. Use add(dense, sparse) instead. (%s: the "
                               "gradient of parameter %d is sparse and param group %d has weight_decay=%r)"
                               % (c.owner, i, c.group_of[i], values["weight_decay"]))
        raise RuntimeError("weight_decay option is not compatible with sparse gradients (%s: parameter %d, param "
                           "group %d)" % (c.owner, i, c.group_of[i]))
    if values.get("momentum"):
        # torch keeps a sparse momentum buffer that decays every row it ever held at every step; liboptim's
        # is dense: the step is the dense step with the densified gradient (the same values, rounded as the
        # dense step rounds them; docs/TORCH.md).
        d = g.to_dense()
        if not _tensors.same_layout(c.shapes[i], d.stride(), layout):
            d = _copy_in(c, i, d, layout)
        pins.append(d)
        return d
    shape = tuple(c.shapes[i])
    if k and not _tensors.same_layout(shape, _tensors.contiguous_strides(shape), layout):
        raise ValueError("%s: parameter %d (%s) has a sparse gradient but its state is not in row-major "
                         "(contiguous) layout (strides %s): sparse steps update whole rows of contiguous "
                         "parameters" % (c.owner, i, describe(p), tuple(p.stride())))
    if rule.rule_name == "sgd" and not g.is_coalesced() and not c.h.get_clip_grad_norm()[0]:
        # torch's SGD adds an uncoalesced gradient entry by entry (param.add_(d_p, alpha=-lr)): its entries
        # sorted by row, stably (repeats keep their order), applied one after another (optim_sparse.h).
        # (With fused norm clipping the gradient is coalesced first, so that the norm is the summed one's.)
        gc = g
    else:
        gc = g.coalesce()
    sd = gc.sparse_dim()
    row_len = 1
    for sz in shape[sd:]:
        row_len *= sz
    desc = _core.SparseGrad()
    desc.row_len = row_len if row_len > 0 else 1
    nnz = gc._nnz()
    desc.nrows = nnz if k else 0
    pins.append(gc)
    if nnz and k:
        idx = gc._indices()
        if sd == 1:
            rows = idx[0].contiguous()
        else:
            mult = torch.tensor(_tensors.contiguous_strides(shape[:sd]), dtype=torch.int64).view(-1, 1)
            rows = (idx * mult).sum(0).contiguous()
        vals = gc._values()
        if gc is g:  # uncoalesced (SGD): sorted by row, stably
            rows, order = torch.sort(rows, stable=True)
            vals = vals.index_select(0, order)
        vals = vals.contiguous()
        if vals.is_neg() or vals.is_conj():
            vals = vals.resolve_neg().resolve_conj()
        pins.append(rows)
        pins.append(vals)
        desc.rows = rows.data_ptr()
        desc.values = vals.data_ptr()
    pins.append(desc)
    return desc


def bind(c, grads=True):
    """(count, params, grads, pins) for a C call over every parameter of
    CObject c: ctypes arrays of addresses (a gradient's None when it has none,
    or when grads is False) and a Pins of the storages and working copies to
    hold until the call returns. Every parameter and gradient is checked
    first: CPU, of its registered dtype, of the parameter's registered shape,
    and over a storage that holds it; TypeError or ValueError naming the
    first bad one, and nothing is passed to C.

    Layouts: a parameter whose strides are its state's layout (c.layouts[i];
    dense: contiguous, channels_last, transposed, any permutation) is passed
    in place, from its first element in memory; any other (a slice with a
    step, a dense tensor whose layout changed since its state was made) as a
    working copy in the state's layout, which the caller writes back into the
    parameter after a call that changed it (pins.write_back()). A gradient in
    the state's layout is passed in place, any other (other strides,
    expanded) as a copy in that layout: the state, the parameter and the
    gradient are matched element by element by logical index, as torch's
    elementwise operations match them.

    Each address is the pinned storage's address plus the tensor's offset,
    checked against that storage's size with the same offset (read once), so
    that it lies inside memory the caller holds whatever another thread does
    to the tensor meanwhile. (The loop is written out: it runs for every
    tensor at every step.)"""
    # Under ZeroRedundancyOptimizer, stochastic rounding keyed by the whole model's numbering (set in C
    # when it changed), before any call that hands C the parameters: a step, and schedule-free's train() and
    # eval(), which round bfloat16 parameters too (and may come first after a rebuild or a load).
    _distributed.sr_origins(c)
    params = c.params
    n = len(params)
    if c.ptrs is None:
        c.ptrs = ((ctypes.c_void_p * max(n, 1))(), (ctypes.c_void_p * max(n, 1))())
    pp, gp = c.ptrs
    shapes, numels, layouts = c.shapes, c.numels, c.layouts
    dtypes = c.dtypes
    strided, storage_of, itemsize = STRIDED, _tensors.storage_of, _ITEMSIZE
    same_layout = _tensors.same_layout
    pins = Pins()
    pin = pins.append
    for i in range(n):
        p = params[i]
        shape = shapes[i]
        dt = dtypes[i]
        size = itemsize[dt]
        if p.dtype is not dt or p.shape != shape or not p.is_cpu or p.is_neg() or p.is_conj():
            raise param_error(c, i, p)
        k = numels[i]
        layout = layouts[i]
        if c.rule.complex_refuse and dt in _tensors.COMPLEX_TYPES:
            _complex_refusal(c, i, p)
        if k:
            strides = p.stride()
            if (c.rule.state_from_grad or not same_layout(shape, strides, layout)) and not c.has_state(i):
                # No state yet: its layout is the one torch gives it at this step, which makes it.
                layout = layouts[i] = state_layout(c, i, p, p.grad if grads else None)
            if same_layout(shape, strides, layout):
                st = storage_of(p)
                base = st.data_ptr()
                offset = p.storage_offset()
                if not base or (offset + k) * size > st.nbytes():
                    raise param_error(c, i, p)
                pin(st)
                pp[i] = base + offset * size
            else:
                e = _param_copy_error(c, i, p)
                if e is not None:
                    raise e
                w = _copy_in(c, i, p, layout)
                pin(w)
                pins.back.append((p.detach(), w))
                pp[i] = w.data_ptr()
        else:
            pp[i] = None  # 0 elements: C reads nothing
        g = p.grad if grads else None
        if g is None:
            gp[i] = None
            continue
        if g.layout is not strided and g.layout is torch.sparse_coo and c.rule.sparse:
            d = _sparse_grad(c, i, p, g, k, layout, pins)
            if isinstance(d, _core.SparseGrad):
                if pins.sparse is None:
                    pins.sparse = (ctypes.c_void_p * max(n, 1))()
                pins.sparse[i] = ctypes.addressof(d)
                gp[i] = None
            else:
                gp[i] = d.data_ptr() if k else EMPTY_PTR
            continue
        if c.rule.sparse == 2:
            raise RuntimeError("%s does not support dense gradients, please consider Adam instead (the gradient "
                               "of parameter %d, %s, is dense)" % (c.owner, i, describe(g)))
        if (g.layout is not strided or g.dtype is not dt or g.shape != shape or not g.is_cpu or g.is_neg()
                or g.is_conj()):
            raise grad_error(c, i, g)
        if k:
            if same_layout(shape, g.stride(), layout):
                st = storage_of(g)
                base = st.data_ptr()
                offset = g.storage_offset()
                if not base or (offset + k) * size > st.nbytes():
                    raise grad_error(c, i, g)
                pin(st)
                gp[i] = base + offset * size
            else:
                if _tensors.storage_problem(g):
                    raise grad_error(c, i, g)
                w = _copy_in(c, i, g, layout)
                pin(w)
                gp[i] = w.data_ptr()
        else:
            gp[i] = EMPTY_PTR  # not NULL, which would mean "no gradient": the step still counts, as in torch
    return n, pp, gp, pins


def with_live_params(c, call):
    """call() with C's parameter addresses pointing at the parameters' memory
    now, held until call() returns. For the C calls that read a parameter
    outside a step (re-making an fp32 master from it: optim_param_reset_state,
    optim_param_master_sync): the addresses C recorded at the last step may
    be gone since (p.data replaced, or the working copy of a parameter with
    gaps, freed when its step returned)."""
    n, pp, gp, pins = bind(c, grads=False)
    if n:
        c.h.rebind(n, pp, gp)
    try:
        return call()
    finally:
        del pins


def nonfinite_error(c, owner, what, e):
    """The NonFiniteGradientError for liboptim's OPTIM_ENONFINITE `e`: the
    first parameter (in C order, as liboptim scans) whose gradient holds NaN
    or Inf, found again here. owner: "Adam: step"; what: what happened
    ("nothing was updated")."""
    # In a ZeroRedundancyOptimizer the index counts the rank's shard: say so.
    shard = "" if c.zero_rank is None else " of rank %d's shard" % c.zero_rank
    for i, p in enumerate(c.params):
        g = shown = p.grad
        if g is not None and g.layout is torch.sparse_coo:
            g = g.coalesce()._values()  # a sparse gradient: its values are what the step read
        if g is not None and g.numel() and not _tensors.storage_problem(g) and not bool(torch.isfinite(g).all()):
            gi = c.group_of[i]
            return NonFiniteGradientError(
                "%s: the gradient of parameter %d%s (%s, param group %d) holds NaN or Inf; %s "
                "(nonfinite='error')" % (owner, i, shard, describe(shown), gi, what), i, gi, p)
    return NonFiniteGradientError("%s: %s; %s (nonfinite='error')" % (owner, e, what))


def sam_guard(c, where):
    """RuntimeError while a SAM over this optimizer is between its halves: its
    own steps, added groups and checkpoints would act on w + e_hat or lose the
    way back to w (the C object refuses them too)."""
    if c.h.sam_active:
        raise RuntimeError("%s.%s: a SAM over this optimizer is between first_step and second_step (the "
                           "parameters are at w + e_hat); call its second_step() or restore() first"
                           % (c.owner, where))
