"""Tensors handed to liboptim: what makes one safe to give to C, and how its
memory is kept alive while C uses it.

The binding never hands C a pointer it does not keep alive for the whole
call, and never one to memory that cannot hold what C will read or write:

- check: a tensor is given to C only if it is a dense CPU tensor of an
  element type the library steps (ELEMENT_TYPES), in a layout it steps
  (contiguous, today), and its storage holds every byte its shape, strides
  and offset reach. `t.storage().resize_(0)` (or a smaller size) leaves a
  tensor whose numel is unchanged over memory that is gone; such a tensor is
  refused, naming what it needs and what its storage holds.
- pin: the storage object of every tensor whose address is passed is held
  by the caller (a list of storages, kept in a local variable) until the
  call returns. ctypes releases the GIL during the call, so another thread
  may meanwhile run `p.data = other` or `p.grad = None`, which would
  otherwise free the memory C is writing: the pinned storage keeps it.
  Freeing a storage's memory in place (`storage().resize_()`) while a call
  runs cannot be prevented from Python, as for torch's own operations: that
  is the caller's to avoid (README, "Threads").

Room for more element types: ELEMENT_TYPES maps each torch dtype liboptim
can step to the name C knows it by; today only float32.
"""
import ctypes

import torch

__all__ = ["ELEMENT_TYPES", "describe", "storage_of", "storage_problem", "check_readable", "EMPTY_PTR"]

ELEMENT_TYPES = {torch.float32: "float32"}
F32 = torch.float32
STRIDED = torch.strided

# The storage object of a tensor (torch 2.x: untyped_storage(); 1.13: _storage()).
# Holding it keeps the memory alive whatever happens to the tensor.
storage_of = getattr(torch.Tensor, "untyped_storage", None) or torch.Tensor._storage

# An empty tensor's data_ptr() may be 0, which liboptim reads as "no
# gradient"; an empty gradient points here instead so that its step still
# counts, as in torch. Never read or written: only used for 0 elements.
_EMPTY = ctypes.c_float()
EMPTY_PTR = ctypes.addressof(_EMPTY)


# A tensor with torch's lazy negation bit (torch._neg_view) holds -x in memory
# that stores x: C would read and write the stored values.
NEG_VIEW = "is a lazy negation view (its memory holds the negated values): use .resolve_neg()"


def describe(t):
    """'shape (3, 4), dtype torch.float64, device cpu' for error messages."""
    text = "shape %s, dtype %s, device %s" % (tuple(t.shape), t.dtype, t.device)
    if t.layout is not STRIDED:
        text += ", layout %s" % (t.layout,)
    return text


def storage_problem(t):
    """None if the storage of strided tensor t holds every element t reaches
    (its offset, and its shape and strides); else the text of what is wrong,
    to follow "<tensor> ". A tensor of 0 elements reaches nothing."""
    if t.numel() == 0:
        return None
    try:
        st = storage_of(t)
    except (RuntimeError, NotImplementedError, TypeError) as e:
        return "has no storage that C could use (%s)" % (str(e).splitlines()[0] if str(e) else type(e).__name__)
    nbytes = st.nbytes()
    offset = t.storage_offset()
    last = offset + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    need = (last + 1) * t.element_size()
    if offset < 0 or need > nbytes or not st.data_ptr():
        return ("reaches %d bytes of its storage (offset %d, strides %s) but the storage holds %d: its memory was "
                "freed or shrunk (storage().resize_()) or is too small (set_())" % (need, offset, tuple(t.stride()), nbytes))
    return None


def check_readable(t, what):
    """ValueError naming `what` if torch cannot read dense tensor t without
    reading memory its storage does not hold (torch's own operations do not
    check: .item() or a copy of such a tensor reads freed memory)."""
    if t.layout is STRIDED and t.device.type != "meta":
        problem = storage_problem(t)
        if problem:
            raise ValueError("%s: the tensor (%s) %s" % (what, describe(t), problem))
