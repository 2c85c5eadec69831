"""optim.torch.QuantizedState: one state slot kept as liboptim's 8-bit
block-quantized state (OPTIM_INT8_BLOCK, state_dtype="int8";
docs/PRECISION.md, "optim.torch: state_dtype").

torch has no block-quantized dtype, so optimizer.state[p]['exp_avg'] of an
optimizer made with state_dtype="int8" is a QuantizedState, not a tensor:

  codes    a uint8 tensor of the parameter's shape (and its state layout):
           the element's 8-bit code; over the C memory while it is the
           optimizer's live state
  scales   a float32 tensor of one scale per block of 256 elements, the
           blocks taken in memory order (codes.flatten() order for a
           contiguous parameter); over the C memory too
  kind     'signed', 'nonneg' or 'positive': the slot's code (signed: E4M3;
           the others E5M3, positive never storing a positive value as 0)
  dequantize()  a float32 tensor (a copy) of the values, code value * scale,
           bit for bit as the step dequantizes them
  shape, dtype ('int8'), block_size (256)

Lifetime: like the float state views, codes and scales keep the C object
alive (not the optimizer), so a QuantizedState held after `del opt` reads
memory that still exists; when the optimizer replaces the state
(load_state_dict, state[p] = ..., a parameter leaving param_groups) the old
object gets memory of its own holding the values of then (Tensor.set_).
copy.deepcopy, pickle and torch.save give an object with its own memory.

torch.optim cannot step or load such a state: a QuantizedState is not a
tensor, and reading a tensor method from it raises an AttributeError that
says so (dequantize_state_dict gives a state_dict torch.optim can load).
"""
import copy
from collections.abc import Mapping

import numpy as np
import torch

from .. import _constants as C
from . import _tensors

__all__ = ["QuantizedState", "dequantize_state_dict", "KIND_NAMES", "BLOCK", "nblocks", "scales_offset",
           "scales_problem"]

BLOCK = C.OPTIM_INT8_BLOCK_SIZE
KIND_NAMES = {C.OPTIM_SLOT_SIGNED: "signed", C.OPTIM_SLOT_NONNEG: "nonneg", C.OPTIM_SLOT_POSITIVE: "positive"}
_KINDS = set(KIND_NAMES.values())
_NAN_BITS = 0x7fc00000  # the canonical NaN the library stores for code 0xff


def nblocks(n):
    return (n + BLOCK - 1) // BLOCK


def scales_offset(n):
    """OPTIM_INT8_BLOCK_SCALES_OFFSET(n): the byte where a slot's scales start."""
    return (n + 63) // 64 * 64


_FLT_MIN = float(np.finfo(np.float32).tiny)


def scales_problem(scales):
    """None if every scale of float32 tensor `scales` is one the library
    stores (finite and at least FLT_MIN: max(largest finite |x|, FLT_MIN));
    else the text naming the first bad one. A NaN, infinite, zero or
    negative scale would turn the whole block into NaN, infinities or
    sign-flipped values at the next step."""
    if scales.numel() == 0:
        return None
    bad = ~(torch.isfinite(scales) & (scales >= _FLT_MIN))
    if not bool(bad.any()):
        return None
    b = int(bad.nonzero()[0, 0])
    return ("has scale %r at block %d: a scale must be finite and at least FLT_MIN (%r), as the library stores it"
            % (float(scales[b]), b, _FLT_MIN))


def _table(signed):
    """The value of every code at scale 1 (include/optim.h, OPTIM_INT8_BLOCK):
    signed: sign, e (4 bits), f (3 bits), 2^(e-15) (1 + f/8), f 2^-17 for
    e = 0; unsigned: e (5 bits), f (3 bits), 2^(e-31) (1 + f/8), f 2^-33 for
    e = 0, codes above 248 read as 248; 0xff is NaN. Exact in float32."""
    out = np.empty(256, dtype=np.float64)
    bias = 15 if signed else 31
    for code in range(256):
        mag = code & 0x7f if signed else min(code, 248)
        e, f = mag >> 3, mag & 7
        v = f * 2.0 ** -(bias + 2) if e == 0 else 2.0 ** (e - bias) * (1 + f / 8)
        out[code] = -v if signed and code & 0x80 else v
    t = torch.from_numpy(out.astype(np.float32))
    t.view(torch.int32)[255] = _NAN_BITS
    return t


_TABLES = {True: _table(True), False: _table(False)}


def _memory_order(t):
    """A 1-D view of dense tensor t's elements in memory order."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


class QuantizedState:
    """One int8 block-quantized state slot (see the module's docstring)."""

    __slots__ = ("codes", "scales", "kind")
    dtype = "int8"
    block_size = BLOCK

    def __init__(self, codes, scales, kind):
        if kind not in _KINDS:
            raise ValueError("QuantizedState: kind = %r must be one of %s" % (kind, ", ".join(sorted(_KINDS))))
        if not torch.is_tensor(codes) or codes.dtype is not torch.uint8 or codes.layout is not _tensors.STRIDED \
                or codes.device.type != "cpu" or not _tensors.is_dense(codes.shape, codes.stride()):
            raise ValueError("QuantizedState: codes must be a dense CPU uint8 tensor, got %s"
                             % (_tensors.describe(codes) if torch.is_tensor(codes) else type(codes).__name__))
        nb = nblocks(codes.numel())
        if not torch.is_tensor(scales) or scales.dtype is not torch.float32 or tuple(scales.shape) != (nb,) \
                or scales.device.type != "cpu" or (nb and scales.stride() != (1,)):
            raise ValueError("QuantizedState: scales must be a contiguous CPU float32 tensor of shape (%d,) (one per "
                             "block of %d codes), got %s" % (nb, BLOCK, _tensors.describe(scales) if
                                                             torch.is_tensor(scales) else type(scales).__name__))
        for what, t in (("codes", codes), ("scales", scales)):
            problem = _tensors.storage_problem(t)
            if problem:
                raise ValueError("QuantizedState: %s (%s) %s" % (what, _tensors.describe(t), problem))
        self.codes = codes
        self.scales = scales
        self.kind = kind

    @property
    def shape(self):
        return self.codes.shape

    def size(self, dim=None):
        return self.codes.size() if dim is None else self.codes.size(dim)

    def numel(self):
        return self.codes.numel()

    def dim(self):
        return self.codes.dim()

    def stride(self):
        """The strides of codes: the state's layout (the order of the blocks)."""
        return self.codes.stride()

    def dequantize(self):
        """A float32 tensor (a copy, codes' shape and strides): code value *
        its block's scale, the bits the step computes."""
        codes, n = self.codes, self.codes.numel()
        out = torch.empty_strided(codes.shape, codes.stride(), dtype=torch.float32)
        if n:
            flat = _memory_order(codes).long()
            scale = self.scales.repeat_interleave(BLOCK)[:n]
            values = _TABLES[self.kind == "signed"][flat] * scale
            values.view(torch.int32)[flat == 0xff] = _NAN_BITS
            _memory_order(out).copy_(values)
        return out

    def clone(self):
        """A QuantizedState with memory of its own, the same codes, scales and layout."""
        return QuantizedState(self.codes.clone(), self.scales.clone(), self.kind)

    def _own_memory(self):
        """Keep the values of now in memory of its own (the optimizer no longer holds this state)."""
        self.codes.set_(self.codes.clone())
        self.scales.set_(self.scales.clone())

    def __reduce__(self):
        # pickle and deepcopy copy the tensors' values (and the codes' strides).
        return (QuantizedState, (self.codes, self.scales, self.kind))

    def __getattr__(self, name):
        # Only for names the class lacks: a tensor method read by code expecting a tensor (torch.optim's step).
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            "%r: this optimizer state is int8 block-quantized (optim.torch.QuantizedState, state_dtype='int8'), not a "
            "tensor: read .dequantize() for its float32 values. torch.optim cannot load or step it: load the "
            "state_dict into an optim.torch optimizer, or convert it first with "
            "optim.torch.dequantize_state_dict(state_dict)" % name)

    def __repr__(self):
        return "QuantizedState(shape=%s, kind=%r, %d blocks of %d)" % (tuple(self.shape), self.kind,
                                                                      self.scales.numel(), BLOCK)


QuantizedState.__module__ = "optim.torch"  # pickles name it where users import it from


def dequantize_state_dict(state_dict):
    """A copy of an optimizer state_dict whose QuantizedState values are
    replaced by their float32 values (dequantize()): a state that
    torch.optim (and an optim.torch optimizer with float32 state) loads."""
    def convert(v):
        if isinstance(v, QuantizedState):
            return v.dequantize()
        if torch.is_tensor(v):
            return v.clone()
        if isinstance(v, Mapping):
            return {k: convert(x) for k, x in v.items()}
        return copy.deepcopy(v)
    out = dict(state_dict)
    out["state"] = {k: convert(v) for k, v in state_dict["state"].items()}
    return out
