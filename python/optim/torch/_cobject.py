"""The C optimizer object as optim.torch sees it: its handle, the rule it
runs, and the parameters registered in it.

CObject holds what the other rooms share: the Handle (optim._core: the C
object and its lifetime), the class's Rule (the rule's id, slots, keys and
hyperparameter ids), the parameters in C order with their shapes and
groups, the hyperparameter values last pushed per group, which parameters
hold state given by Python, and the views of the state memory. It refers to
no Python optimizer and no mapping given to the user, so an optimizer, its
`state` mapping and its state views never form a reference cycle: the C
object is freed when the last of them goes (a view of the state memory
keeps the Handle alive, not the optimizer).

Every operation of an optimizer holds `lock` (the Handle's re-entrant lock)
from its first check to its last C call, so that one optimizer's operations
never interleave (two threads stepping it are serialized) and the pointers a
call passes are the ones it checked and pinned.
"""
import ctypes
import math

import numpy as np
import torch

from .. import _constants as C
from .. import _core
from .._capi import OptimError
from . import _precision, _tensors
from ._quantized import KIND_NAMES, QuantizedState, nblocks, scales_offset
from ._groups import FUSED_CLASSES as _FUSED_CLASSES
from ._tensors import F32, describe

_ITEMSIZE = _tensors.ITEMSIZE

__all__ = ["Rule", "CObject"]


def _share_memory(a, b):
    """True if tensors a and b, whose extents overlap, have a byte in common
    (exact; run only for such pairs, when parameters are added)."""
    if a is b or _tensors.is_dense(a.shape, a.stride()) and _tensors.is_dense(b.shape, b.stride()):
        return True  # two runs without gaps whose extents overlap share memory

    def addresses(t):  # every byte of every element of t
        off = torch.zeros(t.shape, dtype=torch.int64)
        for d, (sz, st) in enumerate(zip(t.shape, t.stride())):
            off = off + (torch.arange(sz, dtype=torch.int64) * st).view([sz if k == d else 1 for k in range(t.dim())])
        starts = t.data_ptr() + off.reshape(-1) * t.element_size()
        return (starts.view(-1, 1) + torch.arange(t.element_size(), dtype=torch.int64)).reshape(-1)

    return bool(torch.isin(addresses(a), addresses(b)).any())


class Rule:
    """What an optim.torch class says about its rule, resolved once per class
    (the C ids of its rule, slots and hyperparameters)."""

    def __init__(self, cls):
        self.owner = cls.__name__
        self.rule_name = cls._rule_name
        self.rule = _core.rule_id(cls._rule_name)
        self.slot_names = _core.slot_names(self.rule)
        self.hp_spec = cls._hp_spec
        self.fixed = dict(cls._fixed)
        self.step_kind = cls._step_kind
        self.sparse = _core.rule_sparse(self.rule)  # 0: refuses sparse gradients, 1: takes them, 2: only them
        self.required_slots = cls._required_slots
        # Scalar state keys beside 'step': NAdam's 'mu_product', ASGD's 'eta' and
        # 'mu'. The first is held in C's mu_product field (NAdam's product, ASGD's
        # eta); ASGD's 'mu' is a function of the step and the group's t0.
        self.scalar_keys = tuple(cls._scalar_keys)
        self.has_mu_product = bool(self.scalar_keys)
        self.eager_state = cls._eager_state
        # Complex parameters: None (refused: complex_reason says why), "real" (torch 1.13 steps
        # torch.view_as_real of the parameter, gradient and state: so does liboptim, the same
        # bits) or "rounding" (torch computes the same real-linear arithmetic on the complex
        # tensors, rounding some multiply-adds in two steps: liboptim steps the real view with
        # its fused ones; docs/FIDELITY.md) or "complex" (torch computes genuinely complex arithmetic:
        # the parameter is added with OPTIM_PARAM_COMPLEX and liboptim computes the same, to rounding).
        # SGD: torch makes the momentum buffer as a clone of the gradient at its first step, in
        # the gradient's layout (torch.clone keeps it), not the parameter's (_step.state_layout).
        self.state_from_grad = getattr(cls, "_state_from_grad", False)
        # A rule whose arithmetic reads a parameter as a matrix (Muon: rows x cols, row-major) and not
        # element by element: its state, and the parameter and gradient memory C steps, are always in
        # row-major (contiguous) order; a parameter in another layout (transposed, channels_last, p.data
        # replaced by such a tensor) goes through a working copy (layout_for, _step.bind).
        self.row_major = getattr(cls, "_row_major", False)
        # A rule whose slots follow the parameter's shape (Adafactor: row_var (..., R, 1), col_var
        # (..., 1, C), or variance): geometry(shape, s) -> the slot's shape, or None where the parameter
        # has no such slot (its C slot holds 0 elements). None: every slot has the parameter's shape.
        self.slot_geometry = getattr(cls, "_slot_geometry", None)
        self.hp_fields = [f for _, _, fields in cls._hp_spec for f in fields]  # the order of CObject.pushed
        self.complex = getattr(cls, "_complex", None)
        self.complex_reason = getattr(cls, "_complex_reason", None)
        self.complex_refuse = dict(getattr(cls, "_complex_refuse", {}))
        # fused=True is accepted where torch 2.x has it (_groups.FUSED_CLASSES),
        # also by a user's subclass of such a class.
        self.fused_ok = any(k.__name__ in _FUSED_CLASSES and k.__module__.startswith("optim.torch")
                            for k in cls.__mro__)
        # The code of each slot under state_dtype="int8" (QuantizedState.kind)
        self.slot_kinds = tuple(KIND_NAMES[_core.slot_kind(self.rule, s)] for s in range(len(self.slot_names)))
        self.c_keys = frozenset((["step"] if cls._step_kind else []) + list(self.scalar_keys)
                                + list(self.slot_names) + [_precision.MASTER_KEY])
        ids = []
        for _, _, fields in cls._hp_spec:
            ids.extend(_core.hparam_id(f) for f in fields)
        ids.extend(_core.hparam_id(f) for f in self.fixed)
        self.hp_ids = (ctypes.c_int * len(ids))(*ids)

    @classmethod
    def of(cls, opt_cls):
        rule = opt_cls.__dict__.get("_rule_cache")
        if rule is None:
            rule = cls(opt_cls)
            opt_cls._rule_cache = rule
        return rule


class CObject:
    """One C optimizer object and the parameters registered in it."""

    def __init__(self, rule):
        self.rule = rule
        self.owner = rule.owner
        self.h = _core.Handle(rule.rule)
        if rule.rule_name == "muon":
            from .. import _muon  # liboptim_muon: the matrix products, over OpenBLAS (loaded on first use)
            _muon.attach(self.h)
        self.lock = self.h.lock
        self.params = []     # C index -> tensor
        self.index = {}      # tensor -> C index
        self.shapes = []
        self.numels = []
        self.dtypes = []     # C index -> the torch dtype it was added with (fixed: C's types are)
        # C index -> the strides of its state tensors (torch's zeros_like(p, memory_format=
        # torch.preserve_format) at its first step): the order in which C steps its elements
        self.layouts = []
        self.group_of = []
        self.touched = []    # state given by load_state_dict or assignment
        self.pushed = []     # per group: the hyperparameter values last pushed to C
        # The gradient checks as C holds them (its defaults), and the last
        # parse of the groups' values (so that a step re-parses only on change).
        self.checks_pushed = (_core.NONFINITE_POLICIES["propagate"], None, None)
        self.checks_cache = None
        self.ptrs = None     # the pointer arrays of a call over every parameter (reused; filled under the lock)
        self._views = {}     # (i, s) -> the tensor over slot s of parameter i given to the user
        # State slots given while the option that uses them is off (max_exp_avg_sq
        # with amsgrad off, SGD's momentum_buffer at momentum 0): i -> {s: a
        # copy in its own dtype}, written into the slot when a push allocates it (_groups.push), as
        # torch keeps such a value in the state and uses it when the option comes on.
        self.pending = {}
        # The rank whose ZeroRedundancyOptimizer built this optimizer as its local
        # optimizer, over that rank's shard (None otherwise; _distributed).
        self.zero_rank = None
        self.zero_group = None  # its process group; zero_hook: the loss scale's OverflowAgreement when on
        self.zero_hook = None
        self.zero_prec = None   # the precision state last written into the param groups (_distributed.publish)
        # A weak reference to that ZeroRedundancyOptimizer, on any number of ranks (None otherwise): its
        # global order keys stochastic rounding (_distributed.sr_origins; sr_origins: the global indices
        # last set in C, per C index). zero_agreed: the loss scale mode the ranks last agreed on
        # (_distributed.Agreed).
        self.zero_ref = None
        self.sr_origins = None
        self.zero_agreed = None
        self.names = []      # C index -> the name the user gave, or None ("param<i>")
        # Per group: the ids of the tensors of its 'params' list when they
        # were last registered here (the tensors are held in self.params, so
        # their ids are not reused): a step compares them with the groups'
        # lists to see a hand edit (_members).
        self.members = []
        # The 0-dim tensors given to the user for 'step' and 'mu_product'
        # ((i, key) -> tensor): torch's are state tensors that its step
        # mutates in place, so a tensor (or a state_dict) kept by the user
        # follows the training; refresh_scalars() rewrites them after every C
        # call that changes the counters.
        self.scalars = {}
        self.skipped_base = 0  # skipped steps counted by the C objects this one replaced (_members)
        # The state's dtype for every parameter (state_dtype=): None (the parameter's, as torch), a torch
        # dtype, or "int8" (OPTIM_INT8_BLOCK: slots are QuantizedState objects).
        self.state_dtype = None
        # Reduced precision (_precision): set before parameters are added (their C flags depend on them).
        self.master_weights = False
        self.stochastic_rounding = False
        self.masters = []    # C index -> whether it has an fp32 master

    def layout_for(self, p):
        """The state layout a fresh state of parameter p takes: torch's zeros_like(p,
        memory_format=torch.preserve_format) (_tensors.layout_of), or row-major for a
        rule that reads parameters as matrices (Rule.row_major)."""
        if self.rule.row_major:
            return _tensors.contiguous_strides(p.shape)
        return _tensors.layout_of(p)

    def state_type(self, dtype):
        """The optim_dtype value of the state of a parameter of torch dtype
        `dtype`: the parameter's own dtype by default, as torch.optim keeps it
        (a complex parameter's: the type of its real view)."""
        dtype = _tensors.COMPLEX_TYPES.get(dtype, dtype)
        sdt = _precision.state_dtype_for(self, dtype)
        return C.OPTIM_INT8_BLOCK if sdt == "int8" else _tensors.ELEMENT_TYPES[sdt]

    # ---- parameters ---------------------------------------------------------------

    def add_params(self, gi, params, names, layouts=None):
        """Register tensors (checked by the caller, disjoint) in group gi.
        layouts: their state layouts (default: each tensor's, layout_for)."""
        h = self.h
        base = len(self.params)
        # Memory standing in for parameters stepped through a working copy: held
        # until every parameter is added, as C compares each new address with the
        # ones it recorded (a freed stand-in's address could come back).
        stand_ins = []
        for j, p in enumerate(params):
            i = base + j
            n = p.numel()
            layout = layouts[j] if layouts is not None else self.layout_for(p)
            real = _tensors.COMPLEX_TYPES.get(p.dtype, p.dtype)
            width = 2 if real is not p.dtype else 1  # a complex parameter: C steps its real view
            # The address C records must stay valid during the call: the
            # parameter's first element in memory when it is stepped in place,
            # else memory of the size C will step (bind passes the working copy).
            if not n:
                pin, addr = None, None
            elif _tensors.same_layout(p.shape, p.stride(), layout):
                pin = _tensors.storage_of(p)
                addr = pin.data_ptr() + p.storage_offset() * p.element_size()
            else:
                # p's values in the layout C steps: an fp32 master is made from them.
                pin = torch.empty_strided(p.shape, layout, dtype=p.dtype)
                pin.copy_(p.detach())
                addr = pin.data_ptr()
                stand_ins.append(pin)
            name = names[j] if names is not None else None
            flags = _precision.flags_for(self, real)
            if width == 2 and self.rule.complex == "complex":
                flags |= _precision.C.OPTIM_PARAM_COMPLEX  # liboptim computes in complex numbers, as torch
            h.add_param(gi, addr, n * width, name if name is not None else "param%d" % i,
                        _tensors.ELEMENT_TYPES[real], self.state_type(p.dtype), flags)
            self.masters.append(bool(flags & _precision.C.OPTIM_PARAM_MASTER))
            del pin
            h.set_param_shape(i, tuple(p.shape) + ((2,) if width == 2 else ()))  # checked by load_checkpoint
            self.layouts.append(layout)
            self.params.append(p)
            self.index[p] = i
            self.shapes.append(p.shape)
            self.numels.append(n)
            self.dtypes.append(p.dtype)
            self.group_of.append(gi)
            self.touched.append(False)
            self.names.append(name)
        while len(self.members) <= gi:
            self.members.append([])
        self.members[gi].extend(id(p) for p in params)
        self.ptrs = None

    def check_disjoint(self, new, base):
        """No two parameters may share memory (liboptim updates each in place
        once); say which, before anything is added."""
        spans = []
        both = self.params + list(new)
        for i, p in enumerate(both):
            n = p.numel()
            if n:
                a = p.data_ptr()  # the first element in memory: strides are never negative
                reach = 1 + sum((sz - 1) * st for sz, st in zip(p.shape, p.stride()))
                spans.append((a, a + p.element_size() * reach, i))
        spans.sort()
        for k, (a0, a1, i) in enumerate(spans):
            for b0, b1, j in spans[k + 1:]:
                if b0 >= a1:
                    break
                if not _share_memory(both[i], both[j]):
                    continue  # interleaved (slices with a step of one base), no element shared
                i, j = min(i, j), max(i, j)
                raise ValueError("%s: parameter %d %s parameter %d: each parameter must have its own memory"
                                 % (self.owner, j, "is the same tensor as" if both[i] is both[j] else
                                    "shares memory with", i))

    def check_new_param(self, index, p):
        """TypeError or ValueError naming a tensor that cannot be a parameter."""
        owner = self.owner
        if not isinstance(p, torch.Tensor):
            raise TypeError("optimizer can only optimize Tensors, but one of the params is " + torch.typename(p))
        what = "%s: parameter %d (%s)" % (owner, index, describe(p))
        if p.layout is not _tensors.STRIDED:
            raise TypeError("%s is not dense: optim.torch updates dense CPU tensors" % what)
        if not p.is_cpu:
            raise TypeError("%s is not on the CPU: optim.torch updates CPU tensors (use torch.optim "
                            "for other devices)" % what)
        if p.dtype in _tensors.COMPLEX_TYPES:
            if self.rule.complex is None:
                raise TypeError("%s is complex: %s" % (what, self.rule.complex_reason or
                                                       "optim.torch.%s does not step complex parameters" % owner))
            if self.state_dtype is not None:
                raise TypeError("%s is complex: its state is kept in the type of its real view (a state dtype "
                                "setting does not apply)" % what)
        elif p.dtype not in _tensors.ELEMENT_TYPES:
            raise TypeError("%s is not of a type optim.torch updates (float32, float64, bfloat16, float16), nor "
                            "complex64 or complex128" % what)
        elif self.state_dtype is not None:
            # What liboptim refuses (float64 parameters keep float64 state), before anything changes.
            master = self.master_weights and p.dtype in (torch.bfloat16, torch.float16)
            try:
                _core.state_dtype_check(C.OPTIM_FLOAT32 if master else _tensors.ELEMENT_TYPES[p.dtype],
                                        self.state_type(p.dtype))
            except OptimError as e:
                raise ValueError("%s: state_dtype=%s: %s" % (what, _precision.state_dtype_text(self.state_dtype), e)) \
                    from None
        if p.numel() and _tensors.overlaps_itself(p.shape, p.stride()):
            raise ValueError("%s, strides %s, %s" % (what, tuple(p.stride()), _tensors.OVERLAPS))
        if p.is_neg():
            raise ValueError("%s %s" % (what, _tensors.NEG_VIEW))
        if p.is_conj():
            raise ValueError("%s %s" % (what, _tensors.CONJ_VIEW))
        problem = _tensors.storage_problem(p)
        if problem:
            raise ValueError("%s %s" % (what, problem))
        # What liboptim refuses, checked before anything changes (add_param_group
        # registers the group's tensors one by one: a refusal half-way would leave
        # the optimizer half-changed).
        if p.dim() > _core.MAX_NDIM:
            raise ValueError("%s has %d dimensions: liboptim's checkpoints store shapes of at most %d"
                             % (what, p.dim(), _core.MAX_NDIM))
        if p.numel() and p.data_ptr() % p.element_size():
            raise ValueError("%s is at address 0x%x, not aligned to its element size (%d bytes): C would load "
                             "%s elements from where none starts (a tensor made by torch.frombuffer at an odd "
                             "offset?)" % (what, p.data_ptr(), p.element_size(), p.dtype))
        if not (p.is_leaf or p.retains_grad):
            raise ValueError("can't optimize a non-leaf Tensor")

    # ---- state ----------------------------------------------------------------------

    def has_state(self, i):
        return self.rule.eager_state or self.touched[i] or self.h.get_step(i) > 0

    def scalar_value(self, i, key):
        """The C object's value of scalar state `key` of parameter i, and the
        dtype of its tensor: 'step' (float32, as torch 1.13's), NAdam's
        'mu_product' (float64: the C object keeps it in double), ASGD's 'eta'
        (float32, as torch's; C holds that float32 value) and 'mu' (float32,
        torch's 1 / max(1, step - t0), from the group's t0)."""
        h = self.h
        if key == "step":
            return float(h.get_step(i)), F32
        if key == "mu_product":
            return h.get_mu_product(i), torch.float64
        if key == "eta":
            return h.get_mu_product(i), F32
        if key == "mu":
            step = h.get_step(i)
            if step == 0:
                return 1.0, F32
            t0 = h.group_get_hparam(self.group_of[i], _core.hparam_id("t0"))
            return float(np.float32(1.0 / max(1.0, step - t0))), F32
        raise KeyError(key)

    def scalar(self, i, key):
        """The user's tensor for scalar state `key` of parameter i (see
        scalar_value), holding the C object's value now: the same tensor at
        every read, rewritten by refresh_scalars() after each step (torch's
        step += 1 in place)."""
        t = self.scalars.get((i, key))
        value, dtype = self.scalar_value(i, key)
        if t is None or t.shape != () or t.dtype is not dtype:
            t = torch.tensor(value, dtype=dtype)
            self.scalars[(i, key)] = t
        else:
            t.fill_(value)
        return t

    def refresh_scalars(self, only=None):
        """Rewrite every 'step', 'mu_product', 'eta' and 'mu' tensor given out (of
        parameter `only`, if given) with the C object's values (after a step
        or a load)."""
        for (i, key), t in self.scalars.items():
            if only is None or i == only:
                t.fill_(self.scalar_value(i, key)[0])

    def release(self, i):
        """Cut the user's tensors of parameter i (slot views, 'step',
        'mu_product') from the C object: each keeps the values it has now in
        memory of its own (Tensor.set_ onto a copy), as torch's old state
        tensors do once the optimizer has made new ones (load_state_dict,
        state[p] = ...). Returns {key: tensor} of those tensors."""
        out = {}
        for s, name in enumerate(self.rule.slot_names):
            v = self._views.pop((i, s), None)
            if isinstance(v, QuantizedState):
                v._own_memory()
                out[name] = v
            elif v is not None:
                v.set_(v.clone())
                out[name] = v
        for key in ("step",) + self.rule.scalar_keys:
            t = self.scalars.pop((i, key), None)
            if t is not None:
                out[key] = t
        v = self._views.pop((i, _precision.MASTER_KEY), None)
        if v is not None:
            v.set_(v.clone())
            out[_precision.MASTER_KEY] = v
        return out

    def master_tensor(self, i):
        """A new float32 tensor over parameter i's fp32 master (None without
        one); it keeps the C object alive, as slot_tensor's."""
        addr = self.h.master_data(i) if self.masters[i] else None
        if addr is None:
            return None
        return self._tensor_over(i, addr, torch.float32)

    def master_view(self, i):
        """state[p]['master']: the same tensor every time, as view()."""
        key = (i, _precision.MASTER_KEY)
        v = self._views.get(key)
        addr = self.h.master_data(i)
        if (v is None or v.data_ptr() != addr or v.shape != self.shapes[i] or v.dtype is not torch.float32
                or not _tensors.same_layout(v.shape, v.stride(), self.layouts[i])):
            v = self.master_tensor(i)
            self._views[key] = v
        return v

    def slot_dtype(self, i, dtype):
        """The torch dtype of parameter i's state slots that C keeps as optim_dtype
        `dtype` (a complex parameter's state is complex, as torch's)."""
        t = _tensors.TORCH_TYPES[dtype]
        return _tensors.COMPLEX_OF[t] if self.dtypes[i] in _tensors.COMPLEX_TYPES else t

    def slot_shape(self, i, s):
        """(shape, strides) of slot s of parameter i: the parameter's shape and state layout,
        or the rule's slot geometry (contiguous); None where parameter i has no slot s."""
        if self.rule.slot_geometry is None:
            return self.shapes[i], self.layouts[i]
        shape = self.rule.slot_geometry(tuple(self.shapes[i]), s)
        if shape is None:
            return None
        shape = torch.Size(shape)
        return shape, (self.layouts[i] if shape == self.shapes[i] else _tensors.contiguous_strides(shape))

    def slot_tensor(self, i, s):
        """A new tensor over slot s of parameter i (None if not allocated), with
        the parameter's state layout (c.layouts[i]: the strides torch gives its
        state); for int8_block state a QuantizedState over its codes and
        scales. It keeps the C object alive (the memory is freed with it, never
        before)."""
        addr, dtype, _ = self.h.state_slot_data(i, s)
        if addr is None:
            return None
        if dtype == C.OPTIM_INT8_BLOCK:
            n = self.numels[i]
            codes = self._tensor_over(i, addr, torch.uint8)
            scales = self._flat_over(addr + scales_offset(n), nblocks(n), torch.float32)
            return QuantizedState(codes, scales, self.rule.slot_kinds[s])
        return self._tensor_over(i, addr, self.slot_dtype(i, dtype), s)

    def slot_write(self, i, s, value):
        """Set allocated slot s of parameter i from `value` (a tensor of the
        parameter's shape, or a QuantizedState), converting once: into float
        state as Tensor.copy_ converts (a QuantizedState dequantized first);
        into int8_block state a QuantizedState of the slot's kind and layout
        bit for bit (codes and scales), anything else quantized by liboptim
        as a step stores it."""
        dst = self.slot_tensor(i, s)
        if not isinstance(dst, QuantizedState):
            dst.copy_(value.dequantize() if isinstance(value, QuantizedState) else value)
            return
        if isinstance(value, QuantizedState) and value.kind == dst.kind and value.shape == dst.shape \
                and _tensors.same_layout(dst.shape, value.stride(), dst.stride()):
            dst.codes.copy_(value.codes)
            dst.scales.copy_(value.scales)
            return
        if not self.numels[i]:
            return
        f32 = torch.empty_strided(dst.shape, dst.stride(), dtype=torch.float32)  # in C's element order
        f32.copy_(value.dequantize() if isinstance(value, QuantizedState) else value)
        self.h.state_slot_write_f32(i, s, f32.data_ptr())
        del f32  # held until the call returned

    def _flat_over(self, addr, count, tdtype):
        """A 1-D tensor of `count` elements of tdtype over C memory at addr (kept alive by it)."""
        buf = (ctypes.c_uint8 * (count * _ITEMSIZE[tdtype])).from_address(addr)
        buf._owner = self.h  # the C memory lives as long as any view of it
        return torch.from_numpy(np.frombuffer(buf, dtype=np.uint8)).view(tdtype)

    def _tensor_over(self, i, addr, tdtype, s=None):
        """A tensor of dtype tdtype over parameter i's numel elements of C
        memory at addr, in the parameter's state layout (c.layouts[i]: the
        strides torch gives its state); for slot s of a rule with a slot
        geometry, over that slot's elements in its shape (slot_shape)."""
        shape, layout = (self.shapes[i], self.layouts[i]) if s is None else self.slot_shape(i, s)
        n = math.prod(shape)
        buf = (ctypes.c_uint8 * (n * _ITEMSIZE[tdtype])).from_address(addr)
        buf._owner = self.h  # the C memory lives as long as any view of it
        # Through bytes: numpy has no bfloat16; torch reinterprets the bytes.
        flat = torch.from_numpy(np.frombuffer(buf, dtype=np.uint8)).view(tdtype)
        return flat.as_strided(shape, layout) if n else flat.view(shape)

    def view(self, i, s):
        """The user's view of slot s of parameter i: the same tensor every time
        (slots never move), made again if the user pointed it elsewhere
        (view.data = ..., view.set_(...))."""
        v = self._views.get((i, s))
        addr, dtype, _ = self.h.state_slot_data(i, s)
        if dtype == C.OPTIM_INT8_BLOCK:
            if (v is None or addr is None or not isinstance(v, QuantizedState) or v.codes.data_ptr() != addr
                    or v.shape != self.shapes[i] or v.codes.dtype is not torch.uint8
                    or v.scales.data_ptr() != addr + scales_offset(self.numels[i])
                    or not _tensors.same_layout(v.shape, v.stride(), self.layouts[i])):
                v = self.slot_tensor(i, s)
                self._views[(i, s)] = v
            return v
        shape, layout = self.slot_shape(i, s)
        if (v is None or addr is None or v.data_ptr() != addr or v.shape != shape
                or v.dtype is not self.slot_dtype(i, dtype)
                or not _tensors.same_layout(v.shape, v.stride(), layout)):
            v = self.slot_tensor(i, s)
            self._views[(i, s)] = v
        return v
