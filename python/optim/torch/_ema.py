"""The EMA of the weights in optim.torch (include/optim_ema.h, docs/EMA.md):
the ema_decay= and ema_warmup= keywords of every class, swap_ema() and
ema_state(), and what state_dict(), pickling and a rebuilt C object carry
of it.

The averages live in the C object (float32, float64 for float64
parameters), in each parameter's C element order (its state layout,
CObject.layouts); they are read and written here by copies, by logical
index, so no view of them is ever handed out (turning the EMA off frees
them).
"""
import math
import numbers

import torch

from .._capi import OptimError
from . import _tensors

__all__ = ["STATE_KEY", "parse", "apply", "swapped", "refuse_swapped", "read", "write", "export", "check",
           "restore", "carry", "relayout", "swap", "state"]

STATE_KEY = "optim_ema"  # the top-level key of state_dict() (and of a pickle's defaults)


def parse(decay, warmup, where):
    """(decay or None, warmup) from the keywords: decay None (off) or a real
    number in [0, 1); warmup a bool."""
    if decay is not None:
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real):
            raise TypeError("%s: ema_decay must be None or a number in [0, 1), got %s" % (where, type(decay).__name__))
        if not (math.isfinite(float(decay)) and 0.0 <= float(decay) < 1.0):
            raise ValueError("%s: ema_decay = %r must be in [0, 1) (None: no EMA)" % (where, decay))
        decay = float(decay)
    if not isinstance(warmup, bool):
        raise TypeError("%s: ema_warmup must be True or False, got %r" % (where, warmup))
    return decay, warmup


def apply(c, decay, warmup):
    """Turn the C object's EMA on (decay) or off (None). The caller holds the lock."""
    try:
        if decay is None:
            c.h.ema_off()
        else:
            c.h.set_ema(decay, warmup)
    except OptimError as e:
        raise ValueError("%s: %s" % (c.owner, e)) from None


def swapped(c):
    return c.h.get_ema()[4]


def refuse_swapped(c, what):
    """RuntimeError while the parameters hold the averages (swap_ema)."""
    if swapped(c):
        raise RuntimeError("%s: %s: the parameters hold the EMA (swap_ema()); call swap_ema() again to put the "
                           "trained weights back first" % (c.owner, what))


def _dtype(c, i):
    real = _tensors.COMPLEX_TYPES.get(c.dtypes[i], c.dtypes[i])
    return torch.float64 if real is torch.float64 else torch.float32


def _geometry(c, i, layout=None):
    """(shape, strides) of parameter i's average in C's element order (the
    state layout c.layouts[i], or `layout`; a complex parameter: its real
    view's)."""
    shape, layout = tuple(c.shapes[i]), tuple(c.layouts[i] if layout is None else layout)
    if c.dtypes[i] in _tensors.COMPLEX_TYPES:
        return shape + (2,), tuple(2 * s for s in layout) + (1,)
    return shape, layout


def read(c, i):
    """Parameter i's average as a new tensor of the parameter's shape
    (float32, or float64 for float64 parameters; complex for complex ones)."""
    shape, strides = _geometry(c, i)
    buf = torch.empty_strided(shape, strides, dtype=_dtype(c, i))
    c.h.ema_read(i, buf.data_ptr() if buf.numel() else None)  # buf is held through the call
    out = buf.contiguous()
    if c.dtypes[i] in _tensors.COMPLEX_TYPES:
        out = torch.view_as_complex(out)
    return out


def write(c, i, value):
    """Parameter i's average from a tensor of its shape (checked by the caller)."""
    shape, strides = _geometry(c, i)
    buf = torch.empty_strided(shape, strides, dtype=_dtype(c, i))
    if c.dtypes[i] in _tensors.COMPLEX_TYPES:
        value = torch.view_as_real(value.to(c.dtypes[i]).resolve_conj())  # the complex type: its (re, im) pairs
    buf.copy_(value)
    c.h.ema_write(i, buf.data_ptr() if buf.numel() else None)


def _counts(c, count):
    """Each parameter's own count, or None when every one is the optimizer's
    (a parameter added after the EMA began has fewer: include/optim_ema.h)."""
    counts = [c.h.ema_param_count(i) for i in range(len(c.params))]
    return None if all(n == count for n in counts) else counts


def export(c):
    """None when the EMA is off, else {'decay', 'warmup', 'count', 'averages'
    (one tensor per parameter, in the order of param_groups' params)}, and
    'counts' (each parameter's own count) when a parameter added after the
    EMA began has fewer averages: copies of now. RuntimeError while swapped."""
    on, decay, warmup, count, _ = c.h.get_ema()
    if not on:
        return None
    refuse_swapped(c, "state_dict")
    out = {"decay": decay, "warmup": warmup, "count": count, "averages": [read(c, i) for i in range(len(c.params))]}
    counts = _counts(c, count)
    if counts is not None:
        out["counts"] = counts
    return out


def check(c, saved, where):
    """A saved EMA checked against the optimizer's parameters: None, or the
    dict export() gives (ValueError or TypeError saying what is wrong)."""
    if saved is None:
        return None
    if not isinstance(saved, dict) or set(saved) - {"counts"} != {"decay", "warmup", "count", "averages"}:
        raise ValueError("%s: %s must be None or a dict with the keys 'decay', 'warmup', 'count', 'averages' "
                         "(and 'counts')" % (where, STATE_KEY))
    parse(saved["decay"], saved["warmup"], where)
    if saved["decay"] is None:
        raise ValueError("%s: %s['decay'] is None" % (where, STATE_KEY))
    count = saved["count"]
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise ValueError("%s: %s['count'] = %r must be an int >= 0" % (where, STATE_KEY, count))
    counts = saved.get("counts")
    if counts is not None and (not isinstance(counts, (list, tuple)) or len(counts) != len(c.params) or any(
            isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= count for n in counts)):
        raise ValueError("%s: %s['counts'] must be a list of %d ints in [0, count = %d] (one per parameter), got %r"
                         % (where, STATE_KEY, len(c.params), count, counts))
    avg = saved["averages"]
    if not isinstance(avg, (list, tuple)) or len(avg) != len(c.params):
        raise ValueError("%s: %s['averages'] must be a list of %d tensors (one per parameter)"
                         % (where, STATE_KEY, len(c.params)))
    for i, t in enumerate(avg):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(c.shapes[i]):
            raise ValueError("%s: %s['averages'][%d] must be a tensor of shape %s, got %s"
                             % (where, STATE_KEY, i, tuple(c.shapes[i]),
                                tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__))
    return saved


def restore(c, saved, where, keep_if_missing=True):
    """Install a checked EMA (check()); None: the EMA stays as set but its
    average restarts (count 0: the next step copies the parameters) when
    keep_if_missing, else it is turned off."""
    try:
        if saved is None:
            if keep_if_missing:
                if c.h.get_ema()[0]:
                    c.h.ema_set_count(0)
            else:
                c.h.ema_off()
            return
        c.h.set_ema(saved["decay"], saved["warmup"])
        for i, t in enumerate(saved["averages"]):
            write(c, i, t.detach())
        c.h.ema_set_count(int(saved["count"]))
        for i, n in enumerate(saved.get("counts") or ()):
            c.h.ema_set_param_count(i, int(n))
    except OptimError as e:
        raise ValueError("%s: %s" % (where, e)) from None


def carry(old, new, stays):
    """A rebuilt C object (_members) takes the old one's EMA: settings, count,
    and the averages and own counts of the tensors that stay (stays: new
    index -> old index, the same state layout); a tensor that comes in starts
    as one added late (its own count 0: its next average copies it)."""
    on, decay, warmup, count, _ = old.h.get_ema()
    if not on:
        return
    new.h.set_ema(decay, warmup)
    for j, i in stays.items():
        write(new, j, read(old, i))
    new.h.ema_set_count(count)
    for j in range(len(new.params)):
        new.h.ema_set_param_count(j, old.h.ema_param_count(stays[j]) if j in stays else 0)


def relayout(c, i, src, dst):
    """Rewrite parameter i's average from C element order `src` (strides) into
    `dst`, by logical index (_checkpoint._relayout; a complex parameter: its
    real view's pairs). Nothing while off or swapped."""
    on, _, _, _, sw = c.h.get_ema()
    if not on or sw or not c.numels[i]:
        return
    shape, src = _geometry(c, i, src)
    _, dst = _geometry(c, i, dst)
    flat = torch.empty(math.prod(shape), dtype=_dtype(c, i))
    c.h.ema_read(i, flat.data_ptr())
    out = torch.empty_strided(shape, dst, dtype=flat.dtype)
    out.copy_(flat.as_strided(shape, src))
    c.h.ema_write(i, out.data_ptr())


def swap(opt):
    """swap_ema(): the averages into the parameters, the parameters aside; again: back."""
    from ._members import sync
    from ._step import bind, sam_guard
    c = opt._c
    with c.lock:
        sam_guard(c, "swap_ema")
        if not swapped(c):
            # Swapping back runs on the object that swapped in, over its tensors: an edit of param_groups made
            # meanwhile is taken by the next sync (a rebuild is refused while swapped, so syncing here first
            # left no way back to the trained weights).
            c = sync(opt)
        if not c.h.get_ema()[0]:
            raise RuntimeError("%s.swap_ema: the EMA is off (ema_decay=None); give ema_decay= or call set_ema()"
                               % c.owner)
        n, pp, gp, pins = bind(c, grads=False)
        try:
            if n:
                c.h.rebind(n, pp, gp)
            c.h.ema_swap()
        except OptimError as e:
            raise RuntimeError("%s.swap_ema: %s" % (c.owner, e)) from None
        pins.write_back()  # parameters held through a working copy
        del pins
        return swapped(c)


def state(opt):
    """ema_state(): None when off, else {'decay', 'warmup', 'count', 'swapped',
    'averages'}: 'averages' a list of new tensors, one per parameter in the
    order of param_groups' params (None while swapped: the parameters hold
    them)."""
    from ._members import sync
    c = opt._c
    with c.lock:
        if not swapped(c):  # while swapped: the object that swapped (no rebuild then), as swap()
            c = sync(opt)
        on, decay, warmup, count, sw = c.h.get_ema()
        if not on:
            return None
        out = {"decay": decay, "warmup": warmup, "count": count, "swapped": sw,
               "averages": None if sw else [read(c, i) for i in range(len(c.params))]}
        counts = _counts(c, count)
        if counts is not None:
            out["counts"] = counts
        return out
