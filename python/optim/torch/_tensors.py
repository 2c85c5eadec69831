"""Tensors handed to liboptim: what makes one safe to give to C, and how its
memory is kept alive while C uses it.

The binding never hands C a pointer it does not keep alive for the whole
call, and never one to memory that cannot hold what C will read or write:

- check: a tensor is given to C only if it is a dense CPU tensor of an
  element type the library steps (ELEMENT_TYPES, or a complex type whose
  real view is one: COMPLEX_TYPES), and its storage holds every byte its
  shape, strides and offset reach. `t.storage().resize_(0)` (or a smaller size) leaves a
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

Element types: ELEMENT_TYPES maps each torch dtype liboptim steps to its
optim_dtype value (float32, float64, bfloat16, float16); a parameter's
gradient is of its dtype (as torch requires). A complex64 (complex128)
parameter is stepped as its real view, float32 (float64) of twice the
elements (COMPLEX_TYPES), for the classes that step complex parameters.

Layouts: what C steps is a run of memory, element after element. A tensor
whose elements fill a run without gaps or overlap (contiguous, channels_last,
transposed, any permutation of strides: `is_dense`) is stepped in place in
its storage order; its state is a run in the same order, seen by the user
with the tensor's strides, as torch's zeros_like(p, memory_format=
torch.preserve_format) makes it (`layout_of`). Any other tensor goes through
a working copy in that layout (_step).
"""
import ctypes

import torch

from .. import _constants as C

__all__ = ["ELEMENT_TYPES", "TORCH_TYPES", "COMPLEX_TYPES", "ITEMSIZE", "is_dense", "contiguous_strides", "overlaps_itself", "layout_of",
           "same_layout", "describe", "storage_of", "storage_problem", "check_readable", "EMPTY_PTR"]

ELEMENT_TYPES = {torch.float32: C.OPTIM_FLOAT32, torch.float64: C.OPTIM_FLOAT64, torch.bfloat16: C.OPTIM_BFLOAT16,
                 torch.float16: C.OPTIM_FLOAT16}
# optim_dtype value -> torch dtype (of state slots as C reports them)
TORCH_TYPES = {v: k for k, v in ELEMENT_TYPES.items()}
# complex dtype -> the torch dtype of its real view (torch.view_as_real), which C steps
COMPLEX_TYPES = {torch.complex64: torch.float32, torch.complex128: torch.float64}
# real dtype -> its complex dtype (of a complex parameter's state views)
COMPLEX_OF = {v: k for k, v in COMPLEX_TYPES.items()}
ITEMSIZE = {torch.uint8: 1, torch.float32: 4, torch.float64: 8, torch.bfloat16: 2, torch.float16: 2, torch.complex64: 8,
            torch.complex128: 16}
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
# torch.view_as_real refuses these too (torch 1.13's optimizers step complex tensors through it).
CONJ_VIEW = "is a lazy conjugate view (its memory holds the conjugated values): use .resolve_conj()"
# torch's in-place operations refuse a tensor whose elements share memory.
OVERLAPS = ("overlaps itself (an expanded tensor, or strides under which two elements may share memory): an "
            "in-place update of it is undefined (torch's in-place operations refuse it too); use a tensor of "
            "its own, e.g. .clone()")


def is_dense(shape, strides):
    """True if a tensor of this shape and these strides has its elements in
    one run of memory without gaps or overlap, in some order of its
    dimensions (torch's is_non_overlapping_and_dense); dimensions of size 1
    do not count, and a tensor of 0 elements is dense."""
    dims = sorted((st, sz) for sz, st in zip(shape, strides) if sz != 1)
    if any(sz == 0 for _, sz in dims):
        return True
    expect = 1
    for st, sz in dims:
        if st != expect:
            return False
        expect *= sz
    return True


def contiguous_strides(shape):
    """The strides of a contiguous (row-major) tensor of this shape."""
    strides, acc = [], 1
    for sz in reversed(shape):
        strides.append(acc)
        acc *= max(sz, 1)
    return tuple(reversed(strides))


def overlaps_itself(shape, strides):
    """True unless the strides prove that no two elements share memory (each
    dimension, in increasing stride, steps over everything the smaller ones
    reach). Expanded tensors (stride 0) overlap; some exotic as_strided
    layouts that do not overlap are counted as overlapping too."""
    dims = sorted((st, sz) for sz, st in zip(shape, strides) if sz != 1)
    if any(sz == 0 for _, sz in dims):
        return False
    reach = 0  # the largest offset the smaller dimensions reach
    for st, sz in dims:
        if st <= reach:
            return True
        reach += (sz - 1) * st
    return False


def layout_of(t):
    """The strides of torch.zeros_like(t, memory_format=torch.preserve_format):
    t's own when t is dense, else the dense strides in the order of t's
    (torch 1.13's empty_like; computed on the meta device, no memory)."""
    strides = t.stride()
    if is_dense(t.shape, strides):
        return tuple(strides)
    return tuple(torch.empty_like(t, device="meta").stride())


def same_layout(shape, a, b):
    """True if strides a and b put every element of a tensor of this shape
    at the same offset (they may differ in dimensions of size 1)."""
    return a == b or all(x == y for sz, x, y in zip(shape, a, b) if sz != 1) or 0 in shape


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
