"""Parameter groups and their sync to C: the group keys an optimizer pushes to
its C object (hyperparameters, and the optimizer-wide gradient checks kept
in every group), parsed and checked, pushed only when they changed, and
pulled back after a checkpoint load replaced them in C.

Functions of a CObject (the C object and what was last pushed to it) and a
list of param groups (torch's dicts); nothing here keeps either.
"""
import ctypes
import math
import re

import numpy as np
import torch
from torch.optim.optimizer import required

from .. import _core
from .._capi import OptimError
from . import _distributed, _tensors

__all__ = ["FLAGS", "check_flags", "NONFINITE_KEY", "CLIP_KEY", "CLIPV_KEY", "CHECK_KEYS", "parse_nonfinite",
           "parse_clip", "parse_clip_value", "clip_text", "number", "group_values", "hparams", "push", "sync",
           "read_checks", "refuse_sharded", "push_checks", "pull_groups", "slot_bits", "nonfinite_name"]

FLAGS = ("capturable", "differentiable", "fused")
_FLAG_WHY = {
    "capturable": "optim.torch steps CPU tensors in C, so there is no CUDA graph to capture; use torch.optim "
                  "(capturable=True) to step CUDA tensors inside a CUDA graph",
    "differentiable": "the update runs in C, outside autograd; use torch.optim (differentiable=True) to "
                      "differentiate through the optimizer step",
    "fused": "this class has no fused implementation in torch (torch 2.x has fused=True for SGD, Adagrad, Adam "
             "and AdamW); every optim.torch step already is one fused pass in C, so leave fused unset",
}
# Classes whose torch 2.x counterpart takes fused=True: they accept it (every
# optim.torch step is one fused pass over all tensors, in C). torch 1.13's Adam
# and AdamW refuse it on the CPU (their fused kernel is CUDA-only); that
# refusal says nothing about optim.torch, so it is not copied (docs/TORCH.md).
FUSED_CLASSES = ("SGD", "Adagrad", "Adam", "AdamW")

# The optimizer-wide gradient checks, kept under these keys in every param
# group (so that they travel with state_dict) and pushed to the C object.
NONFINITE_KEY = "nonfinite"
CLIP_KEY = "clip_grad_norm"
CLIPV_KEY = "clip_grad_value"
CHECK_KEYS = (NONFINITE_KEY, CLIP_KEY, CLIPV_KEY)


def check_flags(owner, values, fused_ok=None):
    """Refuse capturable/differentiable=True, fused=True where torch has no
    fused implementation, and a foreach or fused that is not None/True/False.
    `values` maps flag names to what the caller gave; fused_ok (default: from
    the class name that `owner` starts with) accepts fused=True."""
    foreach = values.get("foreach")
    if foreach not in (None, True, False):
        raise ValueError("%s: foreach = %r must be None, True or False (it does not change anything: "
                         "the C library always does one fused pass)" % (owner, foreach))
    if fused_ok is None:
        fused_ok = owner.split(" ")[0] in FUSED_CLASSES
    for name in FLAGS:
        v = values.get(name, False)
        if name == "fused" and fused_ok:
            if v not in (None, True, False):
                raise ValueError("%s: fused = %r must be None, True or False (every optim.torch step is one "
                                 "fused pass in C either way)" % (owner, v))
            continue
        if v not in (False, None, 0):
            raise ValueError("%s: %s = %r is not supported: %s" % (owner, name, v, _FLAG_WHY[name]))


def nonfinite_name(code):
    return {v: k for k, v in _core.NONFINITE_POLICIES.items()}[code]


def parse_nonfinite(value, where):
    """The optim_nonfinite number of 'propagate', 'skip' or 'error'."""
    code = _core.NONFINITE_POLICIES.get(value) if isinstance(value, str) else None
    if code is None:
        raise ValueError("%s: nonfinite = %r must be 'propagate' (IEEE arithmetic, as torch.optim), 'skip' "
                         "(skip the whole step) or 'error' (skip it and raise)" % (where, value))
    return code


def number(value, what):
    """A Python number from an int, a float or a one-element tensor."""
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError("%s must be a number or a one-element tensor, got a tensor of shape %s"
                             % (what, tuple(value.shape)))
        _tensors.check_readable(value, what)
        return value.item()
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    raise ValueError("%s must be a number or a one-element tensor, got %r" % (what, value))


def parse_clip(value, where):
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
        max_norm = float(number(max_norm, "max_norm") if torch.is_tensor(max_norm) else max_norm)
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


def parse_clip_value(value, where):
    """None (no value clipping) or clip_value as a float > 0."""
    if value is None:
        return None
    bad = "%s: clip_grad_value = %r must be None or a finite number > 0 (None turns value clipping off)"
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(bad % (where, value))
    try:
        v = float(number(value, "clip_grad_value") if torch.is_tensor(value) else value)
    except (TypeError, ValueError):
        raise ValueError(bad % (where, value)) from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(bad % (where, value))
    return v


def clip_text(clip):
    return "None" if clip is None else "(%r, %r)" % clip


# ---- hyperparameters ---------------------------------------------------------------


def group_values(c, group, gi):
    """The group's hyperparameters as a tuple of floats in the rule's hp_ids
    order; ValueError naming the group and key for a value of the wrong kind."""
    owner = c.owner
    flags = {k: group[k] for k in FLAGS if k in group}
    if "foreach" in group:
        flags["foreach"] = group["foreach"]
    check_flags("%s param group %d" % (owner, gi), flags, c.rule.fused_ok)
    out = []
    for key, kind, fields in c.rule.hp_spec:
        try:
            v = group[key]
        except KeyError:
            raise ValueError("%s: param group %d has no '%s'" % (owner, gi, key)) from None
        if v is required:
            raise ValueError("%s: param group %d did not specify a value of the required '%s'" % (owner, gi, key))
        if torch.is_tensor(v):
            _tensors.check_readable(v, "%s: param group %d: %s" % (owner, gi, key))
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
                raise ValueError("%s: param group %d: %s = %r must be a pair of numbers (%s, %s)"
                                 % (owner, gi, key, v, fields[0], fields[1])) from None
        elif kind == "int":
            try:
                ok = float(v) == int(v)
            except (TypeError, ValueError, RuntimeError, OverflowError):
                ok = False
            if not ok or isinstance(v, bool):
                raise ValueError("%s: param group %d: %s = %r must be a whole number" % (owner, gi, key, v))
            out.append(float(int(v)))
        elif kind == "eps_pair":
            # Adafactor's eps = (eps1, eps2): eps1 None is the dtype's machine epsilon (C's eps_auto).
            try:
                e1, e2 = v
                out.extend((1.0, 0.0, float(e2)) if e1 is None else (0.0, float(e1), float(e2)))
            except (TypeError, ValueError, RuntimeError):
                raise ValueError("%s: param group %d: %s = %r must be a pair (eps1 or None, eps2)"
                                 % (owner, gi, key, v)) from None
        elif kind == "triple":
            try:
                a, b, cc = v
                out.extend((float(a), float(b), float(cc)))
            except (TypeError, ValueError, RuntimeError):
                raise ValueError("%s: param group %d: %s = %r must be three numbers (%s)"
                                 % (owner, gi, key, v, ", ".join(fields))) from None
        elif kind == "adjust_lr":
            code = _core.MUON_ADJUST_LR.get(v) if v is None or isinstance(v, str) else None
            if code is None:
                raise ValueError("%s: param group %d: %s = %r is not supported (None or 'original': "
                                 "sqrt(max(1, rows / cols)); 'match_rms_adamw': 0.2 sqrt(max(rows, cols)))"
                                 % (owner, gi, key, v))
            out.append(float(code))
        else:  # placement
            code = _core.PLACEMENTS.get(v) if isinstance(v, str) else None
            if code is None:
                raise ValueError("%s: param group %d: %s = %r must be 'outside' (torch's g / (sqrt(v) + eps)) "
                                 "or 'inside' (g / sqrt(v + eps))" % (owner, gi, key, v))
            out.append(float(code))
    out.extend(float(v) for v in c.rule.fixed.values())
    return tuple(out)


def keys_in(c, e):
    """liboptim's message with its C field names replaced by this class's
    group keys where the two differ (AdaBound's base_lr is C's initial_lr),
    so that the message names what the user wrote."""
    msg = str(e)
    for key, kind, fields in c.rule.hp_spec:
        if kind not in ("pair", "triple") and len(fields) == 1 and fields[0] != key:
            msg = re.sub(r"\b%s\b" % re.escape(fields[0]), key, msg)
    return msg


def hparams(c, values, gi, what):
    """An HParams holding `values`, checked; ValueError with the library's message."""
    hp = _core.HParams(c.rule.rule)
    try:
        for hid, v in zip(c.rule.hp_ids, values):
            hp.set(hid, v)
        hp.check()
    except OptimError as e:
        raise ValueError("%s: %s %d: %s" % (c.owner, what, gi, keys_in(c, e))) from None
    return hp


def slot_bits(c, gi):
    """Slots allocated for group gi's parameters (bit s = slot s)."""
    return hparams(c, c.pushed[gi], gi, "param group").slots()


def push(c, gi, values):
    ids = c.rule.hp_ids
    try:
        c.h.group_set_hparams(gi, ids, (ctypes.c_double * len(values))(*values))
    except OptimError as e:
        raise ValueError("%s: param group %d: %s" % (c.owner, gi, keys_in(c, e))) from None
    c.pushed[gi] = values
    if c.pending:
        fill_pending(c, gi)


def fill_pending(c, gi):
    """Write the pending slot values of group gi's parameters into the slots
    the last push allocated (CObject.pending)."""
    for i in sorted(c.pending):
        if c.group_of[i] != gi:
            continue
        slots = c.pending[i]
        for s in sorted(slots):
            if c.h.state_slot(i, s)[0] is not None:
                c.slot_write(i, s, slots.pop(s))
                c.h.set_initialized(i, s, True)
        if not slots:
            del c.pending[i]


def _sync_hparams(c, groups):
    """Push every group whose hyperparameters changed since the last push.
    Checks all groups before changing any, so a bad value changes nothing."""
    if len(groups) != len(c.pushed):
        raise RuntimeError("%s: param_groups has %d groups but the optimizer was given %d: add groups "
                           "with add_param_group()" % (c.owner, len(groups), len(c.pushed)))
    changed = []
    for gi, group in enumerate(groups):
        values = group_values(c, group, gi)
        if values != c.pushed[gi]:
            changed.append((gi, values))
    if len(changed) > 1:
        for gi, values in changed:
            hparams(c, values, gi, "param group")
    for gi, values in changed:
        push(c, gi, values)


def sync(c, groups):
    """Push what changed in the groups (hyperparameters, gradient checks) to
    the C object, all checked before any is pushed."""
    checks = read_checks(c, groups, "param group")
    _sync_hparams(c, groups)
    push_checks(c, checks)


# ---- the gradient checks --------------------------------------------------------------


def read_checks(c, groups, what):
    """(optim_nonfinite number, clip, clip_value) from the groups' keys, which
    must agree (the C object has one setting for all its groups); ValueError
    naming the groups and values otherwise. A group without the key has the
    current setting. Changes nothing."""
    current_nf, current_clip, current_cv = c.checks_pushed
    # Parsing is a function of the raw values and the current setting:
    # cached, so that a step costs one comparison when nothing changed.
    key = (c.checks_pushed,
           tuple((g.get(NONFINITE_KEY, CHECK_KEYS), g.get(CLIP_KEY, CHECK_KEYS), g.get(CLIPV_KEY, CHECK_KEYS))
                 for g in groups))
    cached = c.checks_cache
    try:
        hit = cached is not None and cached[0] == key
    except RuntimeError:  # a tensor among the values: compare by parsing
        hit = False
    if hit:
        return cached[1]
    first = None
    owner = c.owner
    for gi, group in enumerate(groups):
        where = "%s: %s %d" % (owner, what, gi)
        nf = parse_nonfinite(group[NONFINITE_KEY], where) if NONFINITE_KEY in group else current_nf
        clip = parse_clip(group[CLIP_KEY], where) if CLIP_KEY in group else current_clip
        cv = parse_clip_value(group[CLIPV_KEY], where) if CLIPV_KEY in group else current_cv
        if clip is not None and cv is not None:
            raise ValueError("%s: clip_grad_norm = %s and clip_grad_value = %r cannot both be on: the two are not "
                             "fused together (which comes first is the caller's choice); turn one off, or clip "
                             "with optim.torch.clip_grad_norm_/clip_grad_value_ before step()"
                             % (where, clip_text(clip), cv))
        if first is None:
            first = (nf, clip, cv)
        elif nf != first[0]:
            raise ValueError("%s: %s %d has nonfinite = %r but group 0 has %r: the policy applies to the whole "
                             "optimizer (set it with set_nonfinite())"
                             % (owner, what, gi, nonfinite_name(nf), nonfinite_name(first[0])))
        elif clip != first[1]:
            raise ValueError("%s: %s %d has clip_grad_norm = %s but group 0 has %s: clipping applies to the "
                             "total norm of every group (set it with set_clip_grad_norm())"
                             % (owner, what, gi, clip_text(clip), clip_text(first[1])))
        elif cv != first[2]:
            raise ValueError("%s: %s %d has clip_grad_value = %r but group 0 has %r: value clipping applies to "
                             "the whole optimizer (set it with set_clip_grad_value())"
                             % (owner, what, gi, cv, first[2]))
    result = first if first is not None else c.checks_pushed
    c.checks_cache = (key, result)
    return result


def refuse_sharded(c, checks):
    """ValueError if checks hold a setting that needs every gradient of the
    model (fused norm clipping, nonfinite='skip') and the optimizer is a
    ZeroRedundancyOptimizer's local optimizer, which sees one shard."""
    if c.zero_rank is not None:
        msg = _distributed.refusal(c.owner, c.zero_rank, checks[0] == _core.NONFINITE_POLICIES["skip"], checks[1])
        if msg is not None:
            raise ValueError(msg)


def push_checks(c, checks):
    """Give the C object the checks from read_checks (already validated)."""
    nf, clip, cv = checks
    if checks == c.checks_pushed:
        return
    refuse_sharded(c, checks)
    h = c.h
    try:
        h.set_nonfinite(nf)
        # Off first: C refuses norm and value clipping on together, even for a moment.
        h.set_clip_grad_value(0.0)
        h.set_clip_grad_norm(*(clip if clip is not None else (0.0, 2.0)))
        h.set_clip_grad_value(cv if cv is not None else 0.0)
    except OptimError as e:
        raise ValueError("%s: %s" % (c.owner, e)) from None
    c.checks_pushed = checks


def pull_groups(c, groups):
    """After the C object's groups changed under us (a checkpoint load):
    write its hyperparameters and settings back into the groups, and mark
    them pushed."""
    h = c.h
    nf = h.get_nonfinite()
    max_norm, norm_type = h.get_clip_grad_norm()
    clip = (max_norm, norm_type) if max_norm > 0 else None
    cv = h.get_clip_grad_value() or None
    placements = {v: k for k, v in _core.PLACEMENTS.items()}
    for gi, group in enumerate(groups):
        values = tuple(h.group_get_hparam(gi, hid) for hid in c.rule.hp_ids)
        it = iter(values)
        for key, kind, fields in c.rule.hp_spec:
            if kind == "pair":
                group[key] = (next(it), next(it))
            elif kind == "triple":
                group[key] = (next(it), next(it), next(it))
            elif kind == "eps_pair":
                auto, e1, e2 = next(it), next(it), next(it)
                group[key] = (None if auto else e1, e2)
            elif kind == "int":
                group[key] = int(next(it))
            elif kind == "adjust_lr":
                group[key] = {0: None, 1: "match_rms_adamw"}[int(next(it))]
            elif kind == "bool":
                group[key] = bool(next(it))
            elif kind == "placement":
                group[key] = placements[int(next(it))]
            else:
                group[key] = next(it)
        c.pushed[gi] = values
        group[NONFINITE_KEY] = nonfinite_name(nf)
        group[CLIP_KEY] = clip
        group[CLIPV_KEY] = cv
    c.checks_pushed = (nf, clip, cv)
    c.checks_cache = None
