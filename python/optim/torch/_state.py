"""optimizer.state: torch's mapping from each parameter to its state, whose
values are read from and written to the C object; and the check and write of
one parameter's state in torch's format, shared with load_state_dict.

State and ParamState refer to the CObject, never to the optimizer, so an
optimizer and its state form no reference cycle. A state tensor given to the
user is a view of the C memory and keeps the C object alive (not the
optimizer): it stays valid, and keeps its memory, after the optimizer is
gone.
"""
import copy
import math
from collections.abc import Iterable, Mapping, MutableMapping

import numpy as np
import torch

from . import _step, _tensors
from ._groups import number, slot_bits
from ._precision import MASTER_KEY
from ._quantized import QuantizedState, scales_problem
from ._tensors import STRIDED, describe

__all__ = ["State", "ParamState", "plan_param_state", "apply_param_state"]

_STEP_MAX = 2 ** 63 - 1


class ParamState(MutableMapping):
    """optimizer.state[p] for one parameter: torch's keys, values from the C object.

    Empty until the parameter's first step (as torch initialises lazily), except
    for Adagrad, whose state torch creates in its constructor. Slot tensors are
    views of the C memory; 'step' and NAdam's 'mu_product' are 0-dim tensors
    that every step rewrites in place, as torch's step += 1 does (RMSprop's,
    Adadelta's and AdaBound's 'step' is an int, as torch's, read at each
    access). Assigning a key writes it into the C object (tensors are copied
    into the state memory and must have the parameter's shape). Keys the rule
    does not have (a wrapper's 'slow_param') are kept in Python, as in a dict.
    A slot given while the option that uses it is off (max_exp_avg_sq without
    amsgrad, SGD's momentum_buffer at momentum 0) has no C memory yet: its
    value waits in CObject.pending (a copy) and goes into the slot when the
    option is switched on, as torch keeps it in the state and uses it then.

    It is the live state, as torch's per-parameter dict is: state_dict()
    hands out these objects, so a state_dict kept in memory follows the
    training as torch's does. When the optimizer replaces a parameter's state
    (load_state_dict, state[p] = ..., del state[p]) or the parameter leaves
    param_groups, the old object is released: it keeps the values it had then,
    as a plain mapping (torch's old dict is no longer the optimizer's).
    Pickled and deep-copied as a plain dict."""

    __slots__ = ("_c", "_i", "_extra", "_frozen")

    def __init__(self, c, i):
        self._c = c
        self._i = i
        self._extra = {}
        self._frozen = None  # a dict once released from the C object

    def _c_keys(self, force=False):
        """The keys held by the C object ([] while the parameter has no state,
        unless force)."""
        c = self._c
        if self._frozen is not None or (not force and not c.has_state(self._i)):
            return []
        rule = c.rule
        keys = []
        if rule.step_kind is not None:
            keys.append("step")
        keys.extend(rule.scalar_keys)
        pending = c.pending.get(self._i, ())
        for s, name in enumerate(rule.slot_names):
            if rule.slot_geometry is not None and c.slot_shape(self._i, s) is None:
                continue  # Adafactor: row_var and col_var, or variance, by the parameter's shape
            if rule.rule_name == "sgd" or s in pending or c.h.state_slot(self._i, s)[0] is not None:
                keys.append(name)
        if c.masters[self._i]:
            keys.append(MASTER_KEY)  # the fp32 master (master_weights=True, _precision)
        return keys

    def release(self):
        """Become a plain mapping holding the values now (see the class)."""
        if self._frozen is not None:
            return
        c, i = self._c, self._i
        # read() gives the cached views and scalar tensors (the ones the user
        # may hold), which c.release() then gives memory of their own.
        frozen = {k: read(c, i, k) for k in self._c_keys()}
        c.release(i)
        frozen.update(self._extra)
        self._frozen = frozen
        self._extra = {}
        self._c = None

    def __reduce__(self):
        return (dict, (dict(self.items()),))

    def __getitem__(self, key):
        if self._frozen is not None:
            return self._frozen[key]
        if key in self._extra:
            return self._extra[key]
        if key not in self._c_keys():
            raise KeyError(key)
        return read(self._c, self._i, key)

    def __setitem__(self, key, value):
        if self._frozen is not None:
            self._frozen[key] = value
            return
        c = self._c
        if key in c.rule.c_keys:
            # Assigning one key keeps the others (read from the C object, even
            # before the first step) and replaces the whole state in one check.
            with c.lock:
                current = {k: read(c, self._i, k) for k in self._c_keys(force=True)}
                current[key] = value
                where = "state[parameter %d]" % self._i
                plan = plan_param_state(c, self._i, current, slot_bits(c, c.group_of[self._i]), where,
                                        cast_extras=False)
                apply_param_state(c, self._i, plan)
        else:
            self._extra[key] = value

    def __delitem__(self, key):
        if self._frozen is not None:
            del self._frozen[key]
        elif key in self._extra:
            del self._extra[key]
        elif key in self._c_keys():
            raise KeyError("%r is held by the C optimizer and cannot be deleted alone; "
                           "`del optimizer.state[p]` resets the whole state of p" % (key,))
        else:
            raise KeyError(key)

    def __iter__(self):
        if self._frozen is not None:
            return iter(list(self._frozen))
        return iter(self._c_keys() + [k for k in self._extra])

    def __len__(self):
        if self._frozen is not None:
            return len(self._frozen)
        return len(self._c_keys()) + len(self._extra)

    def __contains__(self, key):
        if self._frozen is not None:
            return key in self._frozen
        return key in self._extra or key in self._c_keys()

    def __repr__(self):
        return repr(dict(self.items()))


def read(c, i, key):
    """The value of one of the C object's keys for parameter i."""
    if key == "step":
        return c.scalar(i, "step") if c.rule.step_kind == "tensor" else c.h.get_step(i)
    if key == MASTER_KEY:
        return c.master_view(i)
    if key in c.rule.scalar_keys:
        # NAdam's mu_product is float64, not torch's float32: the C object keeps the product in a
        # double (rounded to float32 at every step, as torch's tensor is), and
        # a saved and reloaded run must continue with the same bits.
        # torch.optim's load_state_dict casts it to the parameters' dtype, so
        # torch reads it as its own.
        return c.scalar(i, key)
    s = c.rule.slot_names.index(key)
    addr, initialized = c.h.state_slot(i, s)
    if addr is None and s in c.pending.get(i, ()):
        return c.pending[i][s]
    if addr is None or not initialized:
        return None  # SGD's momentum_buffer before a step with momentum, as torch
    return c.view(i, s)


class State(MutableMapping):
    """optimizer.state: parameter -> its ParamState, for the parameters that
    have state; any other key behaves as in torch's defaultdict(dict). A
    tensor taken out of param_groups by hand keeps its state here (released
    from the C object, see ParamState) under the tensor, as in torch, and
    gets it back if it returns to a group."""

    def __init__(self, c):
        self._c = c
        self._pstates = []
        self._other = {}

    def pstate(self, i):
        ps = self._pstates
        while len(ps) <= i:
            ps.append(ParamState(self._c, len(ps)))
        return ps[i]

    def has(self, i):
        """Whether parameter i has state (in C, or keys kept in Python)."""
        ps = self._pstates
        return self._c.has_state(i) or (i < len(ps) and bool(ps[i]._extra))

    def replace(self, i, plan):
        """Give parameter i the state of `plan` (plan_param_state; None: no
        state) in a new ParamState, releasing the old one (torch's
        state[p] = new dict)."""
        ps = self.pstate(i)
        ps.release()
        fresh = self._pstates[i] = ParamState(self._c, i)
        apply_param_state(self._c, i, plan)
        if plan is not None:
            fresh._extra.update(plan["extra"])

    def _index(self, key):
        if torch.is_tensor(key):
            return self._c.index.get(key)
        return None

    def __getitem__(self, key):
        i = self._index(key)
        if i is not None:
            return self.pstate(i)
        try:
            return self._other[key]
        except KeyError:
            value = self._other[key] = {}
            return value

    def __setitem__(self, key, value):
        i = self._index(key)
        if i is None:
            self._other[key] = value
            return
        c = self._c
        with c.lock:
            plan = plan_param_state(c, i, value, slot_bits(c, c.group_of[i]), "state[parameter %d]" % i,
                                    cast_extras=False)
            self.replace(i, plan)

    def __delitem__(self, key):
        i = self._index(key)
        if i is None:
            del self._other[key]
        else:
            with self._c.lock:
                self.replace(i, None)

    def __contains__(self, key):
        i = self._index(key)
        if i is not None:
            return self.has(i)
        return key in self._other

    def __iter__(self):
        c = self._c
        for i, p in enumerate(list(c.params)):
            if self.has(i):
                yield p
        yield from list(self._other)

    def __len__(self):
        c = self._c
        return sum(1 for i in range(len(c.params)) if self.has(i)) + len(self._other)

    def __repr__(self):
        return repr({k: dict(v) if isinstance(v, ParamState) else v for k, v in self.items()})


def cast_like_torch(param, value, key=None):
    """torch 1.13's load_state_dict cast of a state value (Optimizer.
    load_state_dict's `cast`): a tensor goes to the parameter's dtype (if the
    parameter is floating-point; 'step' keeps its own) and device; a dict is
    cast key by key; another iterable is rebuilt as its type from its cast
    items; anything else is kept. One difference: a str is kept (torch 1.13
    turns it into the text of a generator object)."""
    if isinstance(value, torch.Tensor):
        if key != "step":
            if param.is_floating_point():
                value = value.to(param.dtype)
            value = value.to(param.device)
        return value
    if isinstance(value, dict):
        return {k: cast_like_torch(param, v, key=k) for k, v in value.items()}
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, Iterable):
        return type(value)(cast_like_torch(param, v) for v in value)
    return value


def plan_param_state(c, i, state, bits, where, cast_extras=True, param=None):
    """Check one parameter's state in torch's format against what the C
    object holds under slot bits `bits`; return what apply_param_state
    writes (and, under "extra", the keys the rule does not have, which the
    caller keeps in Python). Nothing is changed here.

    cast_extras: those keys' values are deep-copied and cast as torch's
    load_state_dict casts them (cast_like_torch, to the dtype and device of
    `param`, default the registered parameter); else kept as given (torch's
    state[p] = dict keeps the caller's objects)."""
    owner = c.owner
    rule = c.rule
    if not isinstance(state, Mapping):
        raise ValueError("%s: %s must be a dict, got %s" % (owner, where, type(state).__name__))
    if len(state) == 0:
        return None
    shape = c.shapes[i]
    extra = {k: v for k, v in state.items() if k not in rule.c_keys}
    if cast_extras:
        target = c.params[i] if param is None else param
        extra = {k: cast_like_torch(target, copy.deepcopy(v), key=k) for k, v in extra.items()}
    plan = {"c": len(extra) < len(state), "step": None, "mu_product": None, "slots": {}, "pending": {},
            "extra": extra}
    if not plan["c"]:
        return plan  # only keys kept in Python: the C state starts as at a first step
    if rule.step_kind is not None:
        if "step" not in state:
            raise ValueError("%s: %s has no 'step'" % (owner, where))
        step = number(state["step"], "%s: %s['step']" % (owner, where))
        if not (isinstance(step, (int, np.integer)) or (math.isfinite(step) and step == int(step))) \
                or not 0 <= step <= _STEP_MAX:
            raise ValueError("%s: %s['step'] = %r must be a whole number >= 0" % (owner, where, step))
        plan["step"] = int(step)
    if "mu_product" in rule.scalar_keys:
        if "mu_product" not in state:
            raise ValueError("%s: %s has no 'mu_product'" % (owner, where))
        mu = float(number(state["mu_product"], "%s: %s['mu_product']" % (owner, where)))
        if not 0.0 <= mu <= 1.0:
            raise ValueError("%s: %s['mu_product'] = %r must be in [0, 1]" % (owner, where, mu))
        plan["mu_product"] = mu
    if MASTER_KEY in state:
        plan["master"] = _plan_master(c, i, state[MASTER_KEY], owner, where)
    if "eta" in rule.scalar_keys:
        # ASGD: eta goes into C (where the next step reads it); mu is torch's
        # 1 / max(1, step - t0), which C computes from the step and the
        # group's t0, so a loaded 'mu' is checked to be a number and not kept.
        for key in ("eta", "mu"):
            if key not in state:
                raise ValueError("%s: %s has no '%s'" % (owner, where, key))
            value = float(number(state[key], "%s: %s['%s']" % (owner, where, key)))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError("%s: %s['%s'] = %r must be a finite number >= 0" % (owner, where, key, value))
            if key == "eta":
                plan["mu_product"] = value
    for s, name in enumerate(rule.slot_names):
        allocated = bool((bits >> s) & 1) or c.h.state_slot(i, s)[0] is not None
        shape = c.shapes[i]
        if rule.slot_geometry is not None:
            geometry = c.slot_shape(i, s)
            if geometry is None:  # Adafactor: a factored parameter has no 'variance', a vector no factors
                if name in state and state[name] is not None:
                    raise ValueError("%s: %s has a '%s' but parameter %d of shape %s has none (%s)"
                                     % (owner, where, name, i, tuple(c.shapes[i]),
                                        ", ".join(repr(n) for t, n in enumerate(rule.slot_names)
                                                  if c.slot_shape(i, t) is not None)))
                continue
            shape = geometry[0]
        if name not in state:
            if name in rule.required_slots and allocated:
                raise ValueError("%s: %s has no '%s'" % (owner, where, name))
            continue  # an option switched on after the state was made: starts as torch would
        value = state[name]
        if value is None:
            if not allocated:
                continue
            if rule.rule_name != "sgd":
                raise ValueError("%s: %s['%s'] is None; a tensor of shape %s is needed"
                                 % (owner, where, name, tuple(shape)))
            plan["slots"][s] = None
            continue
        if isinstance(value, QuantizedState):
            # int8 block-quantized state (state_dtype="int8"): into int8 state of its kind and
            # layout bit for bit, else quantized or dequantized once (CObject.slot_write).
            if value.shape != shape:
                raise ValueError("%s: %s['%s'] has shape %s but parameter %d has shape %s"
                                 % (owner, where, name, tuple(value.shape), i, tuple(shape)))
            if c.dtypes[i] in _tensors.COMPLEX_TYPES:
                raise ValueError("%s: %s['%s'] is int8 block-quantized state but parameter %d is complex"
                                 % (owner, where, name, i))
            for part in ("codes", "scales"):
                problem = _tensors.storage_problem(getattr(value, part))
                if problem:
                    raise ValueError("%s: %s['%s'].%s %s" % (owner, where, name, part, problem))
            try:  # codes and scales may have been replaced since it was made: the copy checks them again
                value = value.clone()
            except ValueError as e:
                raise ValueError("%s: %s['%s']: %s" % (owner, where, name, e)) from None
            problem = scales_problem(value.scales)
            if problem:
                raise ValueError("%s: %s['%s'].scales %s" % (owner, where, name, problem))
            if allocated:
                plan["slots"][s] = value
            else:
                plan["pending"][s] = value
            continue
        if not torch.is_tensor(value):
            raise ValueError("%s: %s['%s'] must be a tensor or a QuantizedState, got %s"
                             % (owner, where, name, type(value).__name__))
        if value.layout is torch.sparse_coo and rule.rule_name == "sgd" and value.is_floating_point():
            # torch's SGD keeps a sparse momentum buffer for sparse gradients; liboptim's is dense.
            value = value.to_dense()
        if value.shape != shape:
            if shape != c.shapes[i]:
                raise ValueError("%s: %s['%s'] has shape %s but parameter %d of shape %s needs %s"
                                 % (owner, where, name, tuple(value.shape), i, tuple(c.shapes[i]), tuple(shape)))
            raise ValueError("%s: %s['%s'] has shape %s but parameter %d has shape %s"
                             % (owner, where, name, tuple(value.shape), i, tuple(shape)))
        if not (value.is_floating_point() or value.is_complex()) or value.layout is not STRIDED:
            raise ValueError("%s: %s['%s'] must be a dense floating-point tensor, got %s"
                             % (owner, where, name, describe(value)))
        if value.is_complex() and c.dtypes[i] not in _tensors.COMPLEX_TYPES:
            raise ValueError("%s: %s['%s'] is complex (%s) but parameter %d is real"
                             % (owner, where, name, describe(value), i))
        problem = _tensors.storage_problem(value)
        if problem:
            raise ValueError("%s: %s['%s'] (%s) %s" % (owner, where, name, describe(value), problem))
        # A copy: the value may be a view of this optimizer's own state, which
        # apply_param_state resets before writing. Its own dtype: the copy into
        # the slot converts once (a float64 value into float64 state exactly, a
        # float32 one into bfloat16 state rounded to nearest even, as
        # Tensor.copy_). A slot the options do not use now (amsgrad off) waits
        # for them, as torch keeps it: CObject.pending.
        copied = value.detach().to(device="cpu", copy=True)
        if allocated:
            plan["slots"][s] = copied
        else:
            plan["pending"][s] = copied
    return plan


def _plan_master(c, i, value, owner, where):
    """A copy of a saved fp32 master for parameter i (checked)."""
    if not c.masters[i]:
        raise ValueError("%s: %s has a '%s' (an fp32 master copy) but parameter %d has none: make the optimizer "
                         "with master_weights=True (for bfloat16/float16 parameters)" % (owner, where, MASTER_KEY, i))
    if not torch.is_tensor(value) or value.shape != c.shapes[i] or value.dtype is not torch.float32 \
            or value.layout is not STRIDED:
        raise ValueError("%s: %s['%s'] must be a float32 tensor of shape %s, got %s"
                         % (owner, where, MASTER_KEY, tuple(c.shapes[i]),
                            describe(value) if torch.is_tensor(value) else type(value).__name__))
    problem = _tensors.storage_problem(value)
    if problem:
        raise ValueError("%s: %s['%s'] (%s) %s" % (owner, where, MASTER_KEY, describe(value), problem))
    return value.detach().to(device="cpu", copy=True)


def _loaded_layout(c, i, plan):
    """The strides of the state tensors a plan loads, if they share one dense
    layout (else None: the state keeps the layout it has). torch's
    load_state_dict and state[p] = {...} keep the given tensors, and so their
    strides: the C state takes them, stepped in that order (a parameter of
    another layout then goes through a working copy, _step.bind)."""
    layouts = {tuple(v.stride()) for v in plan["slots"].values() if v is not None}  # QuantizedState: its codes'
    if len(layouts) != 1 or not c.numels[i] or c.rule.row_major:  # row-major rules keep row-major state
        return None
    layout = layouts.pop()
    return layout if _tensors.is_dense(c.shapes[i], layout) else None


def apply_param_state(c, i, plan):
    """Write a plan from plan_param_state into the C object (None: no state).
    The plan's "extra" keys are the caller's to keep (State.replace)."""
    h = c.h
    if c.masters[i]:  # reset re-makes the master from the parameter's memory: C must see live memory
        _step.with_live_params(c, lambda: h.reset_state(i))
    else:
        h.reset_state(i)
    c.touched[i] = plan is not None and plan["c"]
    if c.touched[i] and plan["pending"]:
        c.pending[i] = dict(plan["pending"])
    else:
        c.pending.pop(i, None)
    if not c.touched[i]:
        c.refresh_scalars(i)
        return
    if plan["step"] is not None:
        h.set_step(i, plan["step"])
    if plan["mu_product"] is not None:
        h.set_mu_product(i, plan["mu_product"])
    layout = _loaded_layout(c, i, plan)
    if layout is not None:
        c.layouts[i] = layout
    for s, value in plan["slots"].items():
        if value is None:
            h.set_initialized(i, s, False)
        else:
            c.slot_write(i, s, value)
            h.set_initialized(i, s, True)
    if plan.get("master") is not None:  # else reset_state re-made it from the parameter, as when added
        c.master_tensor(i).copy_(plan["master"])
    c.refresh_scalars(i)
