"""The machinery shared by optim.torch's optimizers: a torch.optim.Optimizer
whose update runs in liboptim's optimizer object, and views of its state.

One C object (optim_create) holds every parameter group and every
parameter's state. A step collects the tensors' data pointers, pushes the
hyperparameters of groups that changed since the last step, and makes one
call, optim_step_with, which updates every parameter in one parallel pass.

`optimizer.state[p]` is a mapping computed from the C object: its tensors are
views of the C state memory (writes go straight to the optimizer), 'step'
is read from the C counter when asked for. A view keeps the C object alive.
"""
import copy
import ctypes
import inspect
import math
import re
from collections.abc import Mapping, MutableMapping
from itertools import chain

import numpy as np
import torch
from torch.optim.optimizer import Optimizer, required

from .. import _core
from .._lib import OptimError
from . import _distributed

__all__ = ["NonFiniteGradientError"]

_F32 = torch.float32
_STRIDED = torch.strided
_FLAGS = ("capturable", "differentiable", "fused")
_FLAG_WHY = {
    "capturable": "optim.torch steps CPU tensors in C; there is no CUDA graph to capture",
    "differentiable": "the update runs in C, outside autograd",
    "fused": "the C library always updates every tensor in one fused pass; leave fused=False",
}
_PLACEMENTS = {"outside": 0, "inside": 1}
_STEP_MAX = 2 ** 63 - 1
# An empty tensor's data_ptr() is 0, which liboptim reads as "no gradient";
# an empty gradient points here instead so that its step still counts, as in
# torch. Nothing is ever read or written through it (n = 0).
_EMPTY = ctypes.c_float()
_EMPTY_PTR = ctypes.addressof(_EMPTY)


def _describe(t):
    """'shape (3, 4), dtype torch.float64, device cpu' for error messages."""
    text = "shape %s, dtype %s, device %s" % (tuple(t.shape), t.dtype, t.device)
    if t.layout is not _STRIDED:
        text += ", layout %s" % (t.layout,)
    return text


def _check_flags(owner, values):
    """Refuse capturable/differentiable/fused=True and a foreach that is not
    None/True/False. `values` maps flag names to what the caller gave."""
    foreach = values.get("foreach")
    if foreach not in (None, True, False):
        raise ValueError("%s: foreach = %r must be None, True or False (it does not change anything: "
                         "the C library always does one fused pass)" % (owner, foreach))
    for name in _FLAGS:
        v = values.get(name, False)
        if v not in (False, None, 0):
            raise ValueError("%s: %s = %r is not supported: %s" % (owner, name, v, _FLAG_WHY[name]))


def _eps_hint(error):
    """torch.optim accepts eps = 0 and liboptim does not: say so."""
    text = str(error)
    if ": eps = " in text and "must be > 0" in text:
        return " (torch.optim accepts eps = 0; optim needs eps > 0 so that no division by zero can happen)"
    return ""


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


# The optimizer-wide gradient checks, kept under these keys in every param
# group (so that they travel with state_dict) and pushed to the C object.
_NONFINITE_KEY = "nonfinite"
_CLIP_KEY = "clip_grad_norm"
_CLIPV_KEY = "clip_grad_value"
_CHECK_KEYS = (_NONFINITE_KEY, _CLIP_KEY, _CLIPV_KEY)


def _parse_nonfinite(value, where):
    """The optim_nonfinite number of 'propagate', 'skip' or 'error'."""
    code = _core.NONFINITE_POLICIES.get(value) if isinstance(value, str) else None
    if code is None:
        raise ValueError("%s: nonfinite = %r must be 'propagate' (IEEE arithmetic, as torch.optim), 'skip' "
                         "(skip the whole step) or 'error' (skip it and raise)" % (where, value))
    return code


def _parse_clip(value, where):
    """None (no clipping) or (max_norm, norm_type) as floats, from None, a
    number (max_norm, norm type 2) or a pair (max_norm, norm_type)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("%s: clip_grad_norm = %r must be None, max_norm or (max_norm, norm_type)" % (where, value))
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError("%s: clip_grad_norm = %r must be None, max_norm or (max_norm, norm_type)"
                             % (where, value))
        max_norm, norm_type = value
    else:
        max_norm, norm_type = value, 2.0
    try:
        max_norm = float(_state_number(max_norm, "max_norm") if torch.is_tensor(max_norm) else max_norm)
        norm_type = float(norm_type)
    except (TypeError, ValueError):
        raise ValueError("%s: clip_grad_norm = %r must be None, max_norm or (max_norm, norm_type), with numbers"
                         % (where, value)) from None
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError("%s: clip_grad_norm: max_norm = %r must be a finite number > 0 (None turns clipping off)"
                         % (where, max_norm))
    if not norm_type > 0:
        raise ValueError("%s: clip_grad_norm: norm_type = %r must be > 0 or inf" % (where, norm_type))
    return (max_norm, norm_type)


def _parse_clip_value(value, where):
    """None (no value clipping) or clip_value as a float > 0."""
    if value is None:
        return None
    bad = "%s: clip_grad_value = %r must be None or a finite number > 0 (None turns value clipping off)"
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(bad % (where, value))
    try:
        v = float(_state_number(value, "clip_grad_value") if torch.is_tensor(value) else value)
    except (TypeError, ValueError):
        raise ValueError(bad % (where, value)) from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(bad % (where, value))
    return v


def _clip_text(clip):
    return "None" if clip is None else "(%r, %r)" % clip


def _state_number(value, what):
    """A Python number from an int, a float or a one-element tensor."""
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError("%s must be a number or a one-element tensor, got a tensor of shape %s"
                             % (what, tuple(value.shape)))
        return value.item()
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    raise ValueError("%s must be a number or a one-element tensor, got %r" % (what, value))


class _ParamState(MutableMapping):
    """optimizer.state[p] for one parameter: torch's keys, values from the C object.

    Empty until the parameter's first step (as torch initialises lazily), except
    for Adagrad, whose state torch creates in its constructor. Slot tensors are
    views of the C memory; 'step' and NAdam's 'mu_product' are read from the C
    object on each access. Assigning a key writes it into the C object (tensors
    are copied into the state memory and must have the parameter's shape).
    Keys the rule does not have are kept in Python, as in a dict. A slot given
    while the option that uses it is off (max_exp_avg_sq without amsgrad,
    SGD's momentum_buffer at momentum 0) has no C memory yet: its value waits
    in _pending (a copy) and goes into the slot when the option is switched
    on, as torch keeps it in the state and uses it then."""

    __slots__ = ("_opt", "_i", "_views", "_extra", "_pending")

    def __init__(self, opt, i):
        self._opt = opt
        self._i = i
        self._views = {}
        self._extra = {}
        self._pending = {}  # slot index -> float32 tensor waiting for its C slot

    def _c_keys(self, force=False):
        """The keys held by the C object ([] while the parameter has no state,
        unless force)."""
        opt = self._opt
        if not force and not opt._has_state(self._i):
            return []
        keys = []
        if opt._step_kind is not None:
            keys.append("step")
        if opt._has_mu_product:
            keys.append("mu_product")
        for s, name in enumerate(opt._slot_names):
            if opt._rule_name == "sgd" or s in self._pending or opt._h.state_slot(self._i, s)[0] is not None:
                keys.append(name)
        return keys

    def _view(self, s):
        """The tensor over slot s's C memory (cached: slots never move)."""
        v = self._views.get(s)
        if v is None:
            opt = self._opt
            addr, _ = opt._h.state_slot(self._i, s)
            n = opt._numels[self._i]
            buf = (ctypes.c_float * n).from_address(addr)
            buf._owner = opt._h  # the C memory lives as long as any view of it
            v = torch.from_numpy(np.frombuffer(buf, dtype=np.float32)).view(opt._shapes[self._i])
            self._views[s] = v
        return v

    def __getitem__(self, key):
        if key in self._extra:
            return self._extra[key]
        if key not in self._c_keys():
            raise KeyError(key)
        return self._read(key)

    def _read(self, key):
        opt, i = self._opt, self._i
        if key == "step":
            step = opt._h.get_step(i)
            return torch.tensor(float(step)) if opt._step_kind == "tensor" else step
        if key == "mu_product":
            # float64, not torch's float32: the C object keeps the product in
            # double, and a saved and reloaded run must continue with the same
            # bits. torch.optim's load_state_dict casts it to the parameters'
            # dtype, so torch reads it as its own.
            return torch.tensor(opt._h.get_mu_product(i), dtype=torch.float64)
        s = opt._slot_names.index(key)
        addr, initialized = opt._h.state_slot(i, s)
        if addr is None and s in self._pending:
            return self._pending[s]
        if addr is None or not initialized:
            return None  # SGD's momentum_buffer before a step with momentum, as torch
        return self._view(s)

    def __setitem__(self, key, value):
        opt = self._opt
        if key in opt._c_key_set:
            # Assigning one key keeps the others (read from the C object, even
            # before the first step) and replaces the whole state in one check.
            current = {k: self._read(k) for k in self._c_keys(force=True)}
            current[key] = value
            where = "state[parameter %d]" % self._i
            plan = opt._plan_param_state(self._i, current, opt._group_slot_bits(opt._group_of[self._i]), where)
            opt._apply_param_state(self._i, plan)
        else:
            self._extra[key] = value

    def __delitem__(self, key):
        if key in self._extra:
            del self._extra[key]
        elif key in self._c_keys():
            raise KeyError("%r is held by the C optimizer and cannot be deleted alone; "
                           "`del optimizer.state[p]` resets the whole state of p" % (key,))
        else:
            raise KeyError(key)

    def __iter__(self):
        return iter(self._c_keys() + [k for k in self._extra])

    def __len__(self):
        return len(self._c_keys()) + len(self._extra)

    def __contains__(self, key):
        return key in self._extra or key in self._c_keys()

    def __repr__(self):
        return repr(dict(self.items()))


class _State(MutableMapping):
    """optimizer.state: parameter -> its _ParamState, for the parameters that
    have state; any other key behaves as in torch's defaultdict(dict)."""

    def __init__(self, opt):
        self._opt = opt
        self._other = {}

    def _index(self, key):
        if torch.is_tensor(key):
            return self._opt._index.get(key)
        return None

    def __getitem__(self, key):
        i = self._index(key)
        if i is not None:
            return self._opt._pstates[i]
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
        opt = self._opt
        where = "state[parameter %d]" % i
        plan = opt._plan_param_state(i, value, opt._group_slot_bits(opt._group_of[i]), where)
        opt._apply_param_state(i, plan)

    def __delitem__(self, key):
        i = self._index(key)
        if i is None:
            del self._other[key]
        else:
            self._opt._apply_param_state(i, None)

    def __contains__(self, key):
        i = self._index(key)
        if i is not None:
            return self._opt._has_state(i)
        return key in self._other

    def __iter__(self):
        opt = self._opt
        for i, p in enumerate(opt._params):
            if opt._has_state(i):
                yield p
        yield from list(self._other)

    def __len__(self):
        opt = self._opt
        return sum(1 for i in range(len(opt._params)) if opt._has_state(i)) + len(self._other)

    def __repr__(self):
        return repr({k: dict(v) if isinstance(v, _ParamState) else v for k, v in self.items()})


class _Optimizer(Optimizer):
    """Base of optim.torch's classes; see optim.torch for the user's view.

    A subclass sets:
      _rule_name   liboptim's rule ("adam")
      _hp_spec     (group key, kind, C field names): the group keys pushed to C;
                   kind is "real", "bool", "pair" (betas) or "placement"
      _fixed       {C field name: value} set for every group (AdamW's decoupling)
      _step_kind   "tensor" (torch's 0-dim float32 'step'), "int", or None (no 'step')
      _required_slots  slot names torch always creates (missing on load = error)
      _has_mu_product  NAdam's scalar state
      _eager_state     state exists before the first step (Adagrad)
    """

    _fixed = {}
    _has_mu_product = False
    _eager_state = False

    def __init__(self, params, defaults):
        cls = type(self)
        self._owner = cls.__name__
        # The rank whose ZeroRedundancyOptimizer builds this optimizer over its
        # shard (None otherwise): fused checks over all gradients are refused there.
        self._zero_rank = _distributed.zero_local_rank()
        self._rule = _core.rule_id(cls._rule_name)
        self._slot_names = _core.slot_names(self._rule)
        self._c_key_set = frozenset(
            (["step"] if cls._step_kind else []) + (["mu_product"] if cls._has_mu_product else [])
            + list(self._slot_names))
        ids = []
        for _, _, fields in cls._hp_spec:
            ids.extend(_core.hparam_id(f) for f in fields)
        ids.extend(_core.hparam_id(f) for f in cls._fixed)
        self._hp_ids = (ctypes.c_int * len(ids))(*ids)
        self._h = _core.Handle(self._rule)
        self._params = []   # C index -> tensor
        self._index = {}    # tensor -> C index
        self._shapes = []
        self._numels = []
        self._group_of = []
        self._touched = []  # state given by load_state_dict or assignment
        self._pstates = []
        self._pending_params = set()  # indices whose _ParamState has _pending values
        self._pushed = []   # per group: the values last pushed to C
        self._ptrs = None
        # The gradient checks as C holds them (its defaults), and the last
        # parse of the groups' values (so that a step re-parses only on change).
        self._checks_pushed = (_core.NONFINITE_POLICIES["propagate"], None, None)
        self._checks_cache = None
        defaults = dict(defaults)
        defaults.setdefault(_NONFINITE_KEY, "propagate")
        defaults.setdefault(_CLIP_KEY, None)
        defaults.setdefault(_CLIPV_KEY, None)
        _parse_nonfinite(defaults[_NONFINITE_KEY], self._owner)
        defaults[_CLIP_KEY] = _parse_clip(defaults[_CLIP_KEY], self._owner)
        defaults[_CLIPV_KEY] = _parse_clip_value(defaults[_CLIPV_KEY], self._owner)
        super().__init__(params, defaults)
        self._push_checks(self._read_checks(self.param_groups, "param group"))
        self.state = _State(self)

    def _fill_loaded_group(self, gi, group):
        """Complete a group being loaded with what only this optimizer knows
        (AdaBound's base_lr when loading the reference's state)."""

    # ---- hyperparameters ------------------------------------------------------

    def _group_values(self, group, gi):
        """The group's hyperparameters as a tuple of floats in _hp_ids order;
        ValueError naming the group and key for a value of the wrong kind."""
        owner = self._owner
        flags = {k: group[k] for k in _FLAGS if k in group}
        if "foreach" in group:
            flags["foreach"] = group["foreach"]
        _check_flags("%s param group %d" % (owner, gi), flags)
        out = []
        for key, kind, _ in self._hp_spec:
            try:
                v = group[key]
            except KeyError:
                raise ValueError("%s: param group %d has no '%s'" % (owner, gi, key)) from None
            if v is required:
                raise ValueError("%s: param group %d did not specify a value of the required '%s'"
                                 % (owner, gi, key))
            if kind == "real":
                try:
                    out.append(float(v))
                except (TypeError, ValueError, RuntimeError):
                    raise ValueError("%s: param group %d: %s = %r is not a number" % (owner, gi, key, v)) from None
            elif kind == "bool":
                try:
                    ok = v in (True, False)
                except (TypeError, ValueError, RuntimeError):
                    ok = False
                if not ok:
                    raise ValueError("%s: param group %d: %s = %r must be True or False" % (owner, gi, key, v))
                out.append(1.0 if v else 0.0)
            elif kind == "pair":
                try:
                    b1, b2 = v
                    out.extend((float(b1), float(b2)))
                except (TypeError, ValueError, RuntimeError):
                    raise ValueError("%s: param group %d: %s = %r must be a pair of numbers (beta1, beta2)"
                                     % (owner, gi, key, v)) from None
            else:  # placement
                code = _PLACEMENTS.get(v) if isinstance(v, str) else None
                if code is None:
                    raise ValueError("%s: param group %d: %s = %r must be 'outside' (torch's g / (sqrt(v) + eps)) "
                                     "or 'inside' (g / sqrt(v + eps))" % (owner, gi, key, v))
                out.append(float(code))
        out.extend(float(v) for v in self._fixed.values())
        return tuple(out)

    def _hparams(self, values, gi, what):
        """An HParams holding `values`, checked; ValueError with the library's message."""
        hp = _core.HParams(self._rule)
        try:
            for hid, v in zip(self._hp_ids, values):
                hp.set(hid, v)
            hp.check()
        except OptimError as e:
            raise ValueError("%s: %s %d: %s%s" % (self._owner, what, gi, self._keys_in(e), _eps_hint(e))) from None
        return hp

    def _keys_in(self, e):
        """liboptim's message with its C field names replaced by this class's
        group keys where the two differ (AdaBound's base_lr is C's initial_lr),
        so that the message names what the user wrote."""
        msg = str(e)
        for key, kind, fields in self._hp_spec:
            if kind != "pair" and len(fields) == 1 and fields[0] != key:
                msg = re.sub(r"\b%s\b" % re.escape(fields[0]), key, msg)
        return msg

    def _push(self, gi, values):
        try:
            self._h.group_set_hparams(gi, self._hp_ids, (ctypes.c_double * len(values))(*values))
        except OptimError as e:
            raise ValueError("%s: param group %d: %s%s" % (self._owner, gi, self._keys_in(e), _eps_hint(e))) from None
        self._pushed[gi] = values
        if self._pending_params:
            self._fill_pending(gi)

    def _fill_pending(self, gi):
        """Write the pending slot values of group gi's parameters into the
        slots the last push allocated (see _ParamState)."""
        for i in sorted(self._pending_params):
            if self._group_of[i] != gi:
                continue
            pstate = self._pstates[i]
            for s in sorted(pstate._pending):
                if self._h.state_slot(i, s)[0] is not None:
                    pstate._view(s).copy_(pstate._pending.pop(s))
                    self._h.set_initialized(i, s, True)
            if not pstate._pending:
                self._pending_params.discard(i)

    def _sync_hparams(self):
        """Push every group whose hyperparameters changed since the last push.
        Checks all groups before changing any, so a bad value changes nothing."""
        groups = self.param_groups
        if len(groups) != len(self._pushed):
            raise RuntimeError("%s: param_groups has %d groups but the optimizer was given %d: add groups "
                               "with add_param_group()" % (self._owner, len(groups), len(self._pushed)))
        changed = []
        for gi, group in enumerate(groups):
            values = self._group_values(group, gi)
            if values != self._pushed[gi]:
                changed.append((gi, values))
        if len(changed) > 1:
            for gi, values in changed:
                self._hparams(values, gi, "param group")
        for gi, values in changed:
            self._push(gi, values)

    def _read_checks(self, groups, what):
        """(optim_nonfinite number, clip, clip_value) from the groups' keys, which must agree
        (the C object has one setting for all its groups); ValueError naming
        the groups and values otherwise. A group without the key has the
        current setting. Changes nothing."""
        current_nf, current_clip, current_cv = self._checks_pushed
        # Parsing is a function of the raw values and the current setting:
        # cached, so that a step costs one comparison when nothing changed.
        key = (self._checks_pushed,
               tuple((g.get(_NONFINITE_KEY, _CHECK_KEYS), g.get(_CLIP_KEY, _CHECK_KEYS), g.get(_CLIPV_KEY, _CHECK_KEYS))
                     for g in groups))
        cached = self._checks_cache
        try:
            hit = cached is not None and cached[0] == key
        except RuntimeError:  # a tensor among the values: compare by parsing
            hit = False
        if hit:
            return cached[1]
        first = None
        for gi, group in enumerate(groups):
            where = "%s: %s %d" % (self._owner, what, gi)
            nf = _parse_nonfinite(group[_NONFINITE_KEY], where) if _NONFINITE_KEY in group else current_nf
            clip = _parse_clip(group[_CLIP_KEY], where) if _CLIP_KEY in group else current_clip
            cv = _parse_clip_value(group[_CLIPV_KEY], where) if _CLIPV_KEY in group else current_cv
            if clip is not None and cv is not None:
                raise ValueError("%s: clip_grad_norm = %s and clip_grad_value = %r cannot both be on: the two are not "
                                 "fused together (which comes first is the caller's choice); turn one off, or clip "
                                 "with optim.torch.clip_grad_norm_/clip_grad_value_ before step()"
                                 % (where, _clip_text(clip), cv))
            if first is None:
                first = (nf, clip, cv)
            elif nf != first[0]:
                names = {v: k for k, v in _core.NONFINITE_POLICIES.items()}
                raise ValueError("%s: %s %d has nonfinite = %r but group 0 has %r: the policy applies to the whole "
                                 "optimizer (set it with set_nonfinite())"
                                 % (self._owner, what, gi, names[nf], names[first[0]]))
            elif clip != first[1]:
                raise ValueError("%s: %s %d has clip_grad_norm = %s but group 0 has %s: clipping applies to the "
                                 "total norm of every group (set it with set_clip_grad_norm())"
                                 % (self._owner, what, gi, _clip_text(clip), _clip_text(first[1])))
            elif cv != first[2]:
                raise ValueError("%s: %s %d has clip_grad_value = %r but group 0 has %r: value clipping applies to "
                                 "the whole optimizer (set it with set_clip_grad_value())"
                                 % (self._owner, what, gi, cv, first[2]))
        result = first if first is not None else self._checks_pushed
        self._checks_cache = (key, result)
        return result

    def _refuse_sharded(self, checks):
        """ValueError if checks holds a setting that needs every gradient of the
        model (fused norm clipping, nonfinite='skip') and this optimizer is a
        ZeroRedundancyOptimizer's local optimizer, which sees one shard."""
        if self._zero_rank is not None:
            msg = _distributed.refusal(self._owner, self._zero_rank,
                                       checks[0] == _core.NONFINITE_POLICIES["skip"], checks[1])
            if msg is not None:
                raise ValueError(msg)

    def _push_checks(self, checks):
        """Give the C object the checks from _read_checks (already validated)."""
        nf, clip, cv = checks
        if checks == self._checks_pushed:
            return
        self._refuse_sharded(checks)
        try:
            self._h.set_nonfinite(nf)
            # Off first: C refuses norm and value clipping on together, even for a moment.
            self._h.set_clip_grad_value(0.0)
            self._h.set_clip_grad_norm(*(clip if clip is not None else (0.0, 2.0)))
            self._h.set_clip_grad_value(cv if cv is not None else 0.0)
        except OptimError as e:
            raise ValueError("%s: %s" % (self._owner, e)) from None
        self._checks_pushed = checks

    # ---- gradient checks: the user's view ------------------------------------------

    def set_nonfinite(self, policy):
        """What a step does when a gradient holds NaN or Inf: 'propagate'
        (IEEE arithmetic as torch.optim: only those elements go bad; the
        default), 'skip' (skip the whole step: parameters, state and step
        counters untouched, counted in skipped_steps) or 'error' (skip it and
        raise NonFiniteGradientError naming the parameter). Applies to the
        whole optimizer; kept in every param group under 'nonfinite'."""
        code = _parse_nonfinite(policy, "%s.set_nonfinite" % self._owner)
        self._refuse_sharded((code,) + self._checks_pushed[1:])
        for group in self.param_groups:
            group[_NONFINITE_KEY] = policy
        self.defaults[_NONFINITE_KEY] = policy
        self._push_checks((code,) + self._checks_pushed[1:])

    def set_clip_grad_norm(self, max_norm, norm_type=2.0):
        """Clip the gradients to a total norm of max_norm at every step, as
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type) before
        step() would, fused into the step (the gradient tensors are not
        written). max_norm: a finite number > 0, or None to turn clipping off;
        norm_type > 0 or inf. Kept in every param group under 'clip_grad_norm'
        as None or (max_norm, norm_type)."""
        value = None if max_norm is None else (max_norm, norm_type)
        where = "%s.set_clip_grad_norm" % self._owner
        clip = _parse_clip(value, where)
        if clip is not None and self._checks_pushed[2] is not None:
            raise ValueError("%s: clip_grad_value = %r is on: norm and value clipping cannot both be on (turn it off "
                             "with set_clip_grad_value(None) first)" % (where, self._checks_pushed[2]))
        self._refuse_sharded((self._checks_pushed[0], clip, self._checks_pushed[2]))
        for group in self.param_groups:
            group[_CLIP_KEY] = clip
        self.defaults[_CLIP_KEY] = clip
        self._push_checks((self._checks_pushed[0], clip, self._checks_pushed[2]))

    def set_clip_grad_value(self, clip_value):
        """Clamp every gradient element to [-clip_value, clip_value] at every
        step, as torch.nn.utils.clip_grad_value_(params, clip_value) before
        step() would, fused into the step (the gradient tensors are not
        written; a NaN stays NaN). clip_value: a finite number > 0, or None to
        turn it off. Cannot be on together with clip_grad_norm. Kept in every
        param group under 'clip_grad_value'."""
        where = "%s.set_clip_grad_value" % self._owner
        cv = _parse_clip_value(clip_value, where)
        if cv is not None and self._checks_pushed[1] is not None:
            raise ValueError("%s: clip_grad_norm = %s is on: norm and value clipping cannot both be on (turn it off "
                             "with set_clip_grad_norm(None) first)" % (where, _clip_text(self._checks_pushed[1])))
        for group in self.param_groups:
            group[_CLIPV_KEY] = cv
        self.defaults[_CLIPV_KEY] = cv
        self._push_checks(self._checks_pushed[:2] + (cv,))

    @property
    def nonfinite(self):
        """The non-finite policy: 'propagate', 'skip' or 'error' (see set_nonfinite)."""
        code = self._read_checks(self.param_groups, "param group")[0]
        return {v: k for k, v in _core.NONFINITE_POLICIES.items()}[code]

    @property
    def clip_grad_norm(self):
        """None, or (max_norm, norm_type) of the fused clipping (see set_clip_grad_norm)."""
        return self._read_checks(self.param_groups, "param group")[1]

    @property
    def clip_grad_value(self):
        """None, or the clip_value of the fused value clipping (see set_clip_grad_value)."""
        return self._read_checks(self.param_groups, "param group")[2]

    def set_threads(self, threads):
        """Threads a step may use: 0 (the default) follows OpenMP's setting at
        each step, which torch.set_num_threads() also sets (so by default a
        step uses as many threads as torch's own operators); k > 0: at most k;
        1: the calling thread only. Results are bit-identical for any value.
        Not saved by state_dict (a property of the process, not of the run)."""
        if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads < 2 ** 31:
            raise ValueError("%s.set_threads: threads = %r must be an int >= 0 (0: follow torch.set_num_threads / "
                             "OpenMP)" % (self._owner, threads))
        try:
            self._h.set_threads(threads)
        except OptimError as e:
            raise ValueError("%s.set_threads: %s" % (self._owner, e)) from None

    @property
    def threads(self):
        """The thread setting of set_threads (0: follow OpenMP / torch.set_num_threads)."""
        return self._h.get_threads()

    @property
    def last_step_skipped(self):
        """True if the last step() skipped its update for a NaN or Inf gradient."""
        return self._h.last_step_skipped()

    @property
    def skipped_steps(self):
        """Steps skipped for NaN or Inf gradients (under 'skip' or 'error') since
        the optimizer was made. Not saved by state_dict()."""
        return self._h.skipped_steps()

    @property
    def last_grad_norm(self):
        """The total gradient norm measured by the last step(): of the clipping's
        norm_type when clipping is on, else the 2-norm when nonfinite is 'skip'
        or 'error'; NaN when the step measured none (neither is on) or a
        gradient held NaN. A float (before any clipping)."""
        return self._h.last_grad_norm()

    def _group_slot_bits(self, gi):
        """Slots allocated for group gi's parameters (bit s = slot s)."""
        hp = self._hparams(self._pushed[gi], gi, "param group")
        return hp.slots()

    # ---- parameters ------------------------------------------------------------

    def _check_param(self, index, p):
        owner = self._owner
        if not isinstance(p, torch.Tensor):
            raise TypeError("optimizer can only optimize Tensors, but one of the params is " + torch.typename(p))
        what = "%s: parameter %d (%s)" % (owner, index, _describe(p))
        if p.layout is not _STRIDED:
            raise TypeError("%s is not dense: optim.torch updates dense CPU float32 tensors" % what)
        if not p.is_cpu:
            raise TypeError("%s is not on the CPU: optim.torch updates CPU float32 tensors (use torch.optim "
                            "for other devices)" % what)
        if p.dtype is not _F32:
            raise TypeError("%s is not float32: optim.torch updates float32 tensors" % what)
        if not p.is_contiguous():
            raise ValueError("%s is not contiguous: optim.torch updates contiguous memory in place "
                             "(make the parameter contiguous before creating the optimizer)" % what)
        if not (p.is_leaf or p.retains_grad):
            raise ValueError("can't optimize a non-leaf Tensor")

    def add_param_group(self, param_group):
        """Add a parameter group, as torch.optim.Optimizer.add_param_group. The
        group's hyperparameters are checked by liboptim (ValueError naming the
        value) and its tensors must be CPU, contiguous float32 (TypeError or
        ValueError naming the parameter)."""
        if not isinstance(param_group, dict):
            raise TypeError("%s: param group must be a dict, got %s" % (self._owner, type(param_group).__name__))
        params = param_group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                            "the ordering of tensors in sets will change between runs. Please use a list instead.")
        else:
            params = list(params)
        names = self._param_names(param_group, params)
        if names is not None:
            params = [t for _, t in params] if params and isinstance(params[0], tuple) else params
            param_group["param_names"] = names
        param_group["params"] = params
        base = len(self._params)
        for j, p in enumerate(params):
            self._check_param(base + j, p)
        group = dict(param_group)
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        gi = len(self.param_groups)
        values = self._group_values(group, gi)
        hp = self._hparams(values, gi, "param group")
        self._read_checks(self.param_groups + [group], "param group")
        self._check_disjoint(params, base)

        super().add_param_group(param_group)
        try:
            self._h.add_group(hp)
        except OptimError as e:
            self.param_groups.pop()
            raise ValueError("%s: param group %d: %s" % (self._owner, gi, self._keys_in(e))) from None
        self._pushed.append(values)
        for j, p in enumerate(params):
            i = base + j
            self._h.add_param(gi, p.data_ptr(), p.numel(), names[j] if names is not None else "param%d" % i)
            self._h.set_param_shape(i, tuple(p.shape))  # checked by load_checkpoint
            self._params.append(p)
            self._index[p] = i
            self._shapes.append(p.shape)
            self._numels.append(p.numel())
            self._group_of.append(gi)
            self._touched.append(False)
            self._pstates.append(_ParamState(self, i))
        self._ptrs = None

    def _param_names(self, param_group, params):
        """The names of a group's parameters, or None: from (name, tensor)
        pairs, as model.named_parameters() gives them (torch 2.6's named
        parameters), or from the group's 'param_names'. They name the
        parameters in liboptim (its messages, and checkpoints matched by name,
        whatever the order); without them parameter i is 'param<i>'. Names must
        be non-empty strings, unique in the optimizer."""
        pairs = [isinstance(p, tuple) for p in params]
        if any(pairs):
            if not all(pairs) or not all(len(p) == 2 and isinstance(p[0], str) for p in params):
                raise TypeError("%s: a param group mixes (name, tensor) pairs with other items: give every "
                                "parameter as a (name, tensor) pair (model.named_parameters()) or none"
                                % self._owner)
            names = [n for n, _ in params]
            if "param_names" in param_group and list(param_group["param_names"]) != names:
                raise ValueError("%s: the group's param_names %r differ from the names of its (name, tensor) pairs"
                                 % (self._owner, list(param_group["param_names"])))
        elif "param_names" in param_group:
            names = list(param_group["param_names"])
            if len(names) != len(params):
                raise ValueError("%s: param_names has %d names for %d parameters" % (self._owner, len(names),
                                                                                     len(params)))
        else:
            return None
        taken = set()
        for g in self.param_groups:
            taken.update(g.get("param_names", ()))
        for n in names:
            if not isinstance(n, str) or not n:
                raise TypeError("%s: parameter name %r must be a non-empty str" % (self._owner, n))
            if n in taken:
                raise ValueError("%s: parameter name %r is given twice: names must be unique (they match "
                                 "checkpoints to parameters)" % (self._owner, n))
            taken.add(n)
        return names

    def _check_disjoint(self, new, base):
        """No two parameters may share memory (liboptim updates each in place
        once); say which, before anything is added."""
        spans = []
        for i, p in chain(enumerate(self._params), ((base + j, p) for j, p in enumerate(new))):
            n = p.numel()
            if n:
                a = p.data_ptr()
                spans.append((a, a + 4 * n, i))
        spans.sort()
        for (a0, a1, i), (b0, b1, j) in zip(spans, spans[1:]):
            if b0 < a1:
                i, j = min(i, j), max(i, j)
                same = (self._params + list(new))[i] is (self._params + list(new))[j]
                raise ValueError("%s: parameter %d %s parameter %d: each parameter must have its own memory"
                                 % (self._owner, j, "is the same tensor as" if same else "shares memory with", i))

    # ---- state -------------------------------------------------------------------

    def _has_state(self, i):
        return self._eager_state or self._touched[i] or self._h.get_step(i) > 0

    def _plan_param_state(self, i, state, slot_bits, where):
        """Check one parameter's state in torch's format against what the C
        object holds under slot_bits; return what _apply_param_state writes.
        Nothing is changed here."""
        owner = self._owner
        if not isinstance(state, Mapping):
            raise ValueError("%s: %s must be a dict, got %s" % (owner, where, type(state).__name__))
        if len(state) == 0:
            return None
        shape = self._shapes[i]
        plan = {"step": None, "mu_product": None, "slots": {}, "pending": {}}
        for key in state:
            if key not in self._c_key_set:
                raise ValueError("%s: %s has the key %r, which %s's state does not have (its keys: %s)"
                                 % (owner, where, key, owner, ", ".join(sorted(self._c_key_set))))
        if self._step_kind is not None:
            if "step" not in state:
                raise ValueError("%s: %s has no 'step'" % (owner, where))
            step = _state_number(state["step"], "%s: %s['step']" % (owner, where))
            if not (isinstance(step, (int, np.integer)) or (math.isfinite(step) and step == int(step))) \
                    or not 0 <= step <= _STEP_MAX:
                raise ValueError("%s: %s['step'] = %r must be a whole number >= 0" % (owner, where, step))
            plan["step"] = int(step)
        if self._has_mu_product:
            if "mu_product" not in state:
                raise ValueError("%s: %s has no 'mu_product'" % (owner, where))
            mu = float(_state_number(state["mu_product"], "%s: %s['mu_product']" % (owner, where)))
            if not 0.0 <= mu <= 1.0:
                raise ValueError("%s: %s['mu_product'] = %r must be in [0, 1]" % (owner, where, mu))
            plan["mu_product"] = mu
        for s, name in enumerate(self._slot_names):
            allocated = bool((slot_bits >> s) & 1) or self._h.state_slot(i, s)[0] is not None
            if name not in state:
                if name in self._required_slots and allocated:
                    raise ValueError("%s: %s has no '%s'" % (owner, where, name))
                continue  # an option switched on after the state was made: starts as torch would
            value = state[name]
            if value is None:
                if not allocated:
                    continue
                if self._rule_name != "sgd":
                    raise ValueError("%s: %s['%s'] is None; a tensor of shape %s is needed"
                                     % (owner, where, name, tuple(shape)))
                plan["slots"][s] = None
                continue
            if not torch.is_tensor(value):
                raise ValueError("%s: %s['%s'] must be a tensor, got %s" % (owner, where, name, type(value).__name__))
            if value.shape != shape:
                raise ValueError("%s: %s['%s'] has shape %s but parameter %d has shape %s"
                                 % (owner, where, name, tuple(value.shape), i, tuple(shape)))
            if not value.is_floating_point() or value.layout is not _STRIDED:
                raise ValueError("%s: %s['%s'] must be a dense floating-point tensor, got %s"
                                 % (owner, where, name, _describe(value)))
            # A copy: the value may be a view of this optimizer's own state, which
            # _apply_param_state resets before writing. A slot the options do not
            # use now (amsgrad off) waits for them, as torch keeps it: _ParamState.
            copied = value.detach().to(dtype=_F32, device="cpu", copy=True)
            if allocated:
                plan["slots"][s] = copied
            else:
                plan["pending"][s] = copied
        return plan

    def _apply_param_state(self, i, plan):
        """Write a plan from _plan_param_state into the C object (None: no state)."""
        h = self._h
        h.reset_state(i)
        self._touched[i] = plan is not None
        pstate = self._pstates[i]
        pstate._pending = dict(plan["pending"]) if plan is not None else {}
        if pstate._pending:
            self._pending_params.add(i)
        else:
            self._pending_params.discard(i)
        if plan is None:
            return
        if plan["step"] is not None:
            h.set_step(i, plan["step"])
        if plan["mu_product"] is not None:
            h.set_mu_product(i, plan["mu_product"])
        for s, value in plan["slots"].items():
            if value is None:
                h.set_initialized(i, s, False)
            else:
                pstate._view(s).copy_(value)
                h.set_initialized(i, s, True)

    def state_dict(self):
        """The optimizer's state in torch.optim's format: {'state': {index: {...}},
        'param_groups': [...]}. Tensors of the state are views of the C memory
        (as torch's are the live state tensors); 'step' is a snapshot."""
        param_mappings = {}
        start_index = 0

        def pack_group(group):
            nonlocal start_index
            packed = {k: v for k, v in group.items() if k != "params"}
            param_mappings.update({id(p): i for i, p in enumerate(group["params"], start_index)
                                   if id(p) not in param_mappings})
            packed["params"] = [param_mappings[id(p)] for p in group["params"]]
            start_index += len(packed["params"])
            return packed

        param_groups = [pack_group(g) for g in self.param_groups]
        packed_state = {}
        for i, p in enumerate(self._params):
            if self._has_state(i):
                packed_state[param_mappings[id(p)]] = dict(self._pstates[i].items())
        for k, v in self.state._other.items():
            packed_state[k] = v
        return {"state": packed_state, "param_groups": param_groups}

    def load_state_dict(self, state_dict):
        """Load a state in torch.optim's format (from this class, from the
        matching torch.optim class, or from adabound.AdaBound for AdaBound). The
        values are copied into the C object's memory. Everything is checked
        before anything changes; a mismatch (group sizes, tensor shapes, missing
        or unknown keys, invalid hyperparameters) raises ValueError saying what.
        Group keys the saved groups lack (this class's extras, such as
        bias_correction or eps_placement, when loading torch.optim's state)
        take this class's constructor defaults, as torch does for keys added
        in later versions."""
        owner = self._owner
        if not isinstance(state_dict, Mapping) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("%s: a state dict has the keys 'state' and 'param_groups'" % owner)
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        id_map = {old: p for old, p in zip(chain.from_iterable(g["params"] for g in saved_groups),
                                            chain.from_iterable(g["params"] for g in groups))}
        ctor = self._ctor_defaults()
        new_groups, new_values, bits = [], [], []
        for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
            ng = copy.deepcopy({k: v for k, v in saved.items() if k != "params"})
            for k in _CHECK_KEYS:
                # Optimizer-wide settings (not torch's keys): a state saved
                # without them keeps the current ones.
                if k not in ng:
                    ng[k] = group.get(k, self.defaults[k])
            for k, v in self.defaults.items():
                if k not in ng:
                    ng[k] = ctor.get(k, v)
            self._fill_loaded_group(gi, ng)
            ng.pop("param_names", None)
            if "param_names" in group:  # the names liboptim holds, whatever the saved state says
                ng["param_names"] = group["param_names"]
            ng["params"] = group["params"]
            values = self._group_values(ng, gi)
            bits.append(self._hparams(values, gi, "loaded param group").slots())
            new_groups.append(ng)
            new_values.append(values)
        checks = self._read_checks(new_groups, "loaded param group")
        self._refuse_sharded(checks)
        plans = {}
        other = {}
        for key, value in state_dict["state"].items():
            if key in id_map:
                i = self._index[id_map[key]]
                plans[i] = self._plan_param_state(i, value, bits[self._group_of[i]],
                                                  "loaded state_dict['state'][%r]" % (key,))
            else:
                other[key] = copy.deepcopy(value)

        for gi, values in enumerate(new_values):
            self._push(gi, values)
        self._push_checks(checks)
        self.param_groups = new_groups
        for i in range(len(self._params)):
            self._apply_param_state(i, plans.get(i))
        self.state._other = other

    # ---- checkpoints --------------------------------------------------------------

    def save_checkpoint(self, path):
        """Save the optimizer's whole state to `path` in liboptim's checkpoint
        format (docs/CHECKPOINT.md): every group's hyperparameters, every
        parameter's step counter and state, the non-finite and clipping
        settings and counters, and every parameter's shape. Written to a
        temporary file that is flushed to disk and then renamed over `path`
        (through a symbolic link, the file it points to): a crash leaves the
        old file or the new one, never a torn one. The parameters themselves
        are the model's: save them too (torch.save(model.state_dict(), ...)).
        An lr scheduler's state is not in the file either: save
        scheduler.state_dict() with it (see load_checkpoint). Raises
        optim.OptimError (with the library's message, naming the file) on
        failure; nothing is then changed at `path`."""
        self._sync()
        self._h.save(path)

    def load_checkpoint(self, path, match="name"):
        """Load a checkpoint written by save_checkpoint (or by liboptim in C)
        into this optimizer, which must have the same rule, groups and
        parameters (match="name": parameters named param0, param1, ... in the
        order they were given, so the same model in the same order;
        match="position": by index), of the same shapes. Everything is checked
        before anything changes: on any error (OptimError: a missing,
        truncated or corrupt file, a newer format, another optimizer, a
        parameter of another shape) this optimizer is unchanged. The groups'
        hyperparameters and settings become the saved ones (and param_groups
        shows them), the lr an lr scheduler last set included.

        With an lr scheduler, resume in this order: build the optimizer, build
        the scheduler as before (it writes its first lr), load_checkpoint (the
        saved lr replaces it), then scheduler.load_state_dict(saved state).
        Building the scheduler after load_checkpoint would overwrite the
        loaded lr until the scheduler's next step."""
        if match not in _core.MATCH:
            raise ValueError("%s.load_checkpoint: match = %r must be 'name' or 'position'" % (self._owner, match))
        self._h.load(path, match)
        for i in self._pending_params:  # the checkpoint replaced every state
            self._pstates[i]._pending = {}
        self._pending_params.clear()
        self._pull_groups()

    def _pull_groups(self):
        """After the C object's groups changed under us (a checkpoint load):
        write its hyperparameters and settings back into param_groups, and
        mark them pushed."""
        nf = self._h.get_nonfinite()
        max_norm, norm_type = self._h.get_clip_grad_norm()
        clip = (max_norm, norm_type) if max_norm > 0 else None
        cv = self._h.get_clip_grad_value() or None
        names = {v: k for k, v in _core.NONFINITE_POLICIES.items()}
        placements = {v: k for k, v in _PLACEMENTS.items()}
        for gi, group in enumerate(self.param_groups):
            values = tuple(self._h.group_get_hparam(gi, hid) for hid in self._hp_ids)
            it = iter(values)
            for key, kind, fields in self._hp_spec:
                if kind == "pair":
                    group[key] = (next(it), next(it))
                elif kind == "bool":
                    group[key] = bool(next(it))
                elif kind == "placement":
                    group[key] = placements[int(next(it))]
                else:
                    group[key] = next(it)
            self._pushed[gi] = values
            group[_NONFINITE_KEY] = names[nf]
            group[_CLIP_KEY] = clip
            group[_CLIPV_KEY] = cv
        self._checks_pushed = (nf, clip, cv)
        self._checks_cache = None

    @classmethod
    def _ctor_defaults(cls):
        sig = inspect.signature(cls.__init__)
        return {name: prm.default for name, prm in sig.parameters.items()
                if prm.default is not inspect.Parameter.empty and prm.default is not required}

    # ---- the step --------------------------------------------------------------------

    def _grad_error(self, i, p, g):
        what = "%s: the gradient of parameter %d (%s)" % (self._owner, i, _describe(g))
        if g.layout is not _STRIDED:
            return TypeError("%s is sparse: optim.torch needs dense gradients" % what)
        if not g.is_cpu:
            return TypeError("%s is not on the CPU" % what)
        if g.dtype is not _F32:
            return TypeError("%s is not float32" % what)
        if g.shape != self._shapes[i]:
            return ValueError("%s does not have the parameter's shape %s" % (what, tuple(self._shapes[i])))
        return ValueError("%s is not contiguous" % what)

    def _param_error(self, i, p):
        if p.shape != self._shapes[i]:
            return ValueError("%s: parameter %d changed shape from %s to %s since it was added"
                              % (self._owner, i, tuple(self._shapes[i]), tuple(p.shape)))
        try:
            self._check_param(i, p)
        except (TypeError, ValueError) as e:
            return e
        return RuntimeError("%s: parameter %d (%s) cannot be stepped" % (self._owner, i, _describe(p)))

    def _bind(self):
        """The ctypes arrays of parameter and gradient pointers for a call over
        every parameter (None for a parameter without a gradient), after
        checking every tensor; TypeError or ValueError naming the first bad one."""
        params = self._params
        n = len(params)
        if self._ptrs is None:
            self._ptrs = ((ctypes.c_void_p * n)(), (ctypes.c_void_p * n)())
        pp, gp = self._ptrs
        shapes = self._shapes
        f32, strided = _F32, _STRIDED
        for i in range(n):
            p = params[i]
            shape = shapes[i]
            if p.dtype is not f32 or p.shape != shape or not p.is_contiguous() or not p.is_cpu:
                raise self._param_error(i, p)
            pp[i] = p.data_ptr()
            g = p.grad
            if g is None:
                gp[i] = None
            else:
                if (g.layout is not strided or g.dtype is not f32 or g.shape != shape or not g.is_contiguous()
                        or not g.is_cpu):
                    raise self._grad_error(i, p, g)
                gp[i] = g.data_ptr() or _EMPTY_PTR
        return n, pp, gp

    def _sync(self):
        """Push what changed in the groups (hyperparameters, gradient checks)
        to the C object, all checked before any is pushed."""
        checks = self._read_checks(self.param_groups, "param group")
        self._sync_hparams()
        self._push_checks(checks)

    def _nonfinite_error(self, owner, what, e):
        """The NonFiniteGradientError for liboptim's OPTIM_ENONFINITE `e`: the
        first parameter (in C order, as liboptim scans) whose gradient holds
        NaN or Inf, found again here."""
        # In a ZeroRedundancyOptimizer the index counts the rank's shard: say so.
        shard = "" if self._zero_rank is None else " of rank %d's shard" % self._zero_rank
        for i, p in enumerate(self._params):
            g = p.grad
            if g is not None and g.numel() and not bool(torch.isfinite(g).all()):
                gi = self._group_of[i]
                return NonFiniteGradientError(
                    "%s: the gradient of parameter %d%s (%s, param group %d) holds NaN or Inf; %s "
                    "(nonfinite='error')" % (owner, i, shard, _describe(g), gi, what), i, gi, p)
        return NonFiniteGradientError("%s: %s; %s (nonfinite='error')" % (owner, e, what))

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step over every parameter with a gradient, in one
        call into liboptim. closure: re-evaluates the model and returns the
        loss (run with gradients enabled, as torch.optim does). With
        nonfinite='error', a NaN or Inf gradient raises NonFiniteGradientError
        and nothing is updated."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync()
        if not self._params:
            return loss
        n, pp, gp = self._bind()
        try:
            self._h.step_with(n, pp, gp)
        except OptimError as e:
            if e.code == _core.ENONFINITE:
                raise self._nonfinite_error("%s: step" % self._owner, "nothing was updated", e) from None
            raise ValueError("%s: step: %s" % (self._owner, e)) from None
        return loss

    def __getstate__(self):
        raise TypeError("%s from optim.torch holds a C optimizer and cannot be pickled or copied; "
                        "save and load optimizer.state_dict() instead" % self._owner)
