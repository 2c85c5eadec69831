"""optimizer.state: torch's mapping from each parameter to its state, whose
values are read from and written to the C object; and the check and write of
one parameter's state in torch's format, shared with load_state_dict.

State and ParamState refer to the CObject, never to the optimizer, so an
optimizer and its state form no reference cycle. A state tensor given to the
user is a view of the C memory and keeps the C object alive (not the
optimizer): it stays valid, and keeps its memory, after the optimizer is
gone.
"""
import math
from collections.abc import Mapping, MutableMapping

import numpy as np
import torch

from . import _tensors
from ._groups import number, slot_bits
from ._tensors import F32, STRIDED, describe

__all__ = ["State", "ParamState", "plan_param_state", "apply_param_state"]

_STEP_MAX = 2 ** 63 - 1


class ParamState(MutableMapping):
    """optimizer.state[p] for one parameter: torch's keys, values from the C object.

    Empty until the parameter's first step (as torch initialises lazily), except
    for Adagrad, whose state torch creates in its constructor. Slot tensors are
    views of the C memory; 'step' and NAdam's 'mu_product' are read from the C
    object on each access. Assigning a key writes it into the C object (tensors
    are copied into the state memory and must have the parameter's shape).
    Keys the rule does not have are kept in Python, as in a dict."""

    __slots__ = ("_c", "_i", "_extra")

    def __init__(self, c, i):
        self._c = c
        self._i = i
        self._extra = {}

    def _c_keys(self, force=False):
        """The keys held by the C object ([] while the parameter has no state,
        unless force)."""
        c = self._c
        if not force and not c.has_state(self._i):
            return []
        rule = c.rule
        keys = []
        if rule.step_kind is not None:
            keys.append("step")
        if rule.has_mu_product:
            keys.append("mu_product")
        for s, name in enumerate(rule.slot_names):
            if rule.rule_name == "sgd" or c.h.state_slot(self._i, s)[0] is not None:
                keys.append(name)
        return keys

    def __getitem__(self, key):
        if key in self._extra:
            return self._extra[key]
        if key not in self._c_keys():
            raise KeyError(key)
        return read(self._c, self._i, key)

    def __setitem__(self, key, value):
        c = self._c
        if key in c.rule.c_keys:
            # Assigning one key keeps the others (read from the C object, even
            # before the first step) and replaces the whole state in one check.
            with c.lock:
                current = {k: read(c, self._i, k) for k in self._c_keys(force=True)}
                current[key] = value
                where = "state[parameter %d]" % self._i
                plan = plan_param_state(c, self._i, current, slot_bits(c, c.group_of[self._i]), where)
                apply_param_state(c, self._i, plan)
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


def read(c, i, key):
    """The value of one of the C object's keys for parameter i."""
    if key == "step":
        step = c.h.get_step(i)
        return torch.tensor(float(step)) if c.rule.step_kind == "tensor" else step
    if key == "mu_product":
        # float64, not torch's float32: the C object keeps the product in a
        # double (rounded to float32 at every step, as torch's tensor is), and
        # a saved and reloaded run must continue with the same bits.
        # torch.optim's load_state_dict casts it to the parameters' dtype, so
        # torch reads it as its own.
        return torch.tensor(c.h.get_mu_product(i), dtype=torch.float64)
    s = c.rule.slot_names.index(key)
    addr, initialized = c.h.state_slot(i, s)
    if addr is None or not initialized:
        return None  # SGD's momentum_buffer before a step with momentum, as torch
    return c.view(i, s)


class State(MutableMapping):
    """optimizer.state: parameter -> its ParamState, for the parameters that
    have state; any other key behaves as in torch's defaultdict(dict)."""

    def __init__(self, c):
        self._c = c
        self._pstates = []
        self._other = {}

    def pstate(self, i):
        ps = self._pstates
        while len(ps) <= i:
            ps.append(ParamState(self._c, len(ps)))
        return ps[i]

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
            plan = plan_param_state(c, i, value, slot_bits(c, c.group_of[i]), "state[parameter %d]" % i)
            apply_param_state(c, i, plan)

    def __delitem__(self, key):
        i = self._index(key)
        if i is None:
            del self._other[key]
        else:
            with self._c.lock:
                apply_param_state(self._c, i, None)

    def __contains__(self, key):
        i = self._index(key)
        if i is not None:
            return self._c.has_state(i)
        return key in self._other

    def __iter__(self):
        c = self._c
        for i, p in enumerate(list(c.params)):
            if c.has_state(i):
                yield p
        yield from list(self._other)

    def __len__(self):
        c = self._c
        return sum(1 for i in range(len(c.params)) if c.has_state(i)) + len(self._other)

    def __repr__(self):
        return repr({k: dict(v) if isinstance(v, ParamState) else v for k, v in self.items()})


def plan_param_state(c, i, state, bits, where):
    """Check one parameter's state in torch's format against what the C
    object holds under slot bits `bits`; return what apply_param_state
    writes. Nothing is changed here."""
    owner = c.owner
    rule = c.rule
    if not isinstance(state, Mapping):
        raise ValueError("%s: %s must be a dict, got %s" % (owner, where, type(state).__name__))
    if len(state) == 0:
        return None
    shape = c.shapes[i]
    plan = {"step": None, "mu_product": None, "slots": {}}
    for key in state:
        if key not in rule.c_keys:
            raise ValueError("%s: %s has the key %r, which %s's state does not have (its keys: %s)"
                             % (owner, where, key, owner, ", ".join(sorted(rule.c_keys))))
    if rule.step_kind is not None:
        if "step" not in state:
            raise ValueError("%s: %s has no 'step'" % (owner, where))
        step = number(state["step"], "%s: %s['step']" % (owner, where))
        if not (isinstance(step, (int, np.integer)) or (math.isfinite(step) and step == int(step))) \
                or not 0 <= step <= _STEP_MAX:
            raise ValueError("%s: %s['step'] = %r must be a whole number >= 0" % (owner, where, step))
        plan["step"] = int(step)
    if rule.has_mu_product:
        if "mu_product" not in state:
            raise ValueError("%s: %s has no 'mu_product'" % (owner, where))
        mu = float(number(state["mu_product"], "%s: %s['mu_product']" % (owner, where)))
        if not 0.0 <= mu <= 1.0:
            raise ValueError("%s: %s['mu_product'] = %r must be in [0, 1]" % (owner, where, mu))
        plan["mu_product"] = mu
    for s, name in enumerate(rule.slot_names):
        allocated = bool((bits >> s) & 1) or c.h.state_slot(i, s)[0] is not None
        if name not in state:
            if name in rule.required_slots and allocated:
                raise ValueError("%s: %s has no '%s'" % (owner, where, name))
            continue  # an option switched on after the state was made: starts as torch would
        value = state[name]
        if not allocated:
            continue  # kept by torch for an option that is off now (e.g. amsgrad): not used
        if value is None:
            if rule.rule_name != "sgd":
                raise ValueError("%s: %s['%s'] is None; a tensor of shape %s is needed"
                                 % (owner, where, name, tuple(shape)))
            plan["slots"][s] = None
            continue
        if not torch.is_tensor(value):
            raise ValueError("%s: %s['%s'] must be a tensor, got %s" % (owner, where, name, type(value).__name__))
        if value.shape != shape:
            raise ValueError("%s: %s['%s'] has shape %s but parameter %d has shape %s"
                             % (owner, where, name, tuple(value.shape), i, tuple(shape)))
        if not value.is_floating_point() or value.layout is not STRIDED:
            raise ValueError("%s: %s['%s'] must be a dense floating-point tensor, got %s"
                             % (owner, where, name, describe(value)))
        problem = _tensors.storage_problem(value)
        if problem:
            raise ValueError("%s: %s['%s'] (%s) %s" % (owner, where, name, describe(value), problem))
        # A copy: the value may be a view of this optimizer's own state, which
        # apply_param_state resets before writing.
        plan["slots"][s] = value.detach().to(dtype=F32, device="cpu", copy=True)
    return plan


def apply_param_state(c, i, plan):
    """Write a plan from plan_param_state into the C object (None: no state)."""
    h = c.h
    h.reset_state(i)
    c.touched[i] = plan is not None
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
            c.slot_tensor(i, s).copy_(value)
            h.set_initialized(i, s, True)
