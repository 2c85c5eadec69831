"""Reduced precision in optim.torch (docs/PRECISION.md): the keyword
arguments master_weights=, stochastic_rounding= and loss_scale= of every
class, the storage flags they give each parameter, the loss scaler's
settings, and what state_dict() and pickling carry of them.

The settings are optimizer-wide (one C object): master_weights gives every
bfloat16/float16 parameter an fp32 master copy (float32 and float64
parameters are their own master) whose state is then float32;
stochastic_rounding rounds every bfloat16 value stored without a master (a
bfloat16 parameter, bfloat16 state) and the codes of int8 state
stochastically, and has nothing to do for the others. The master is state[p]['master'] (a float32 tensor over the C
memory); the seed of the stochastic rounding and the loss scaler are
state_dict()['optim_precision'].
"""
import math
import numbers

import torch

from .. import _constants as C
from .._capi import OptimError

__all__ = ["KEYS", "STATE_KEY", "MASTER_KEY", "parse", "flags_for", "state_dtype_for", "export", "check", "restore",
           "copy_settings", "apply_loss_scale", "parse_loss_scale", "parse_state_dtype", "state_dtype_text",
           "settings_from"]

KEYS = ("master_weights", "stochastic_rounding", "loss_scale", "state_dtype")
STATE_KEY = "optim_precision"  # the top-level key of state_dict()
MASTER_KEY = "master"          # state[p]'s key of the fp32 master

_MODES = {"static": C.OPTIM_LOSS_SCALE_STATIC, "dynamic": C.OPTIM_LOSS_SCALE_DYNAMIC}
_MODE_NAMES = {v: k for k, v in _MODES.items()}
_DYNAMIC_KEYS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval")
# torch.cuda.amp.GradScaler's defaults.
GRADSCALER = {"init_scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}


def parse_loss_scale(value, where):
    """None (off), ("static", scale) or ("dynamic", settings dict) from the
    keyword's value: None/False, a number (a static scale), "dynamic"
    (GradScaler's defaults) or a dict of GradScaler's settings."""
    if value is None or value is False:
        return None
    if isinstance(value, bool):
        raise ValueError("%s: loss_scale = True: give a number (a static scale), 'dynamic' or a dict of settings"
                         % where)
    if isinstance(value, numbers.Real):
        if not (math.isfinite(float(value)) and value > 0):
            raise ValueError("%s: loss_scale = %r must be a finite number > 0" % (where, value))
        return ("static", float(value))
    if isinstance(value, str):
        if value != "dynamic":
            raise ValueError("%s: loss_scale = %r: a number, 'dynamic' or a dict of settings" % (where, value))
        return ("dynamic", dict(GRADSCALER))
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(_DYNAMIC_KEYS))
        if unknown:
            raise ValueError("%s: loss_scale has unknown settings %s (known: %s)"
                             % (where, unknown, ", ".join(_DYNAMIC_KEYS)))
        settings = dict(GRADSCALER)
        settings.update(value)
        return ("dynamic", settings)
    raise TypeError("%s: loss_scale must be None, a number, 'dynamic' or a dict, got %s"
                    % (where, type(value).__name__))


# state_dtype=: the values accepted, and their names in state_dict()['optim_precision'] and pickles.
STATE_DTYPES = {None: None, torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16",
                "int8": "int8"}
_STATE_DTYPE_OF = {name: dt for dt, name in STATE_DTYPES.items()}
STATE_DTYPE_CHOICES = "None (the parameter's dtype), torch.float32, torch.bfloat16, torch.float16 or 'int8'"


def parse_state_dtype(value, where):
    """The state_dtype keyword's value checked: None, torch.float32,
    torch.bfloat16, torch.float16 or "int8" (8-bit block-quantized state)."""
    try:
        ok = value in STATE_DTYPES and (value is None or isinstance(value, (torch.dtype, str)))
    except TypeError:  # unhashable
        ok = False
    if not ok:
        raise ValueError("%s: state_dtype = %r is not a state type: %s" % (where, value, STATE_DTYPE_CHOICES))
    return value


def state_dtype_text(value):
    """How error messages write a state_dtype value."""
    return repr(value) if isinstance(value, str) else str(value)


def parse(defaults, where):
    """Take the precision keywords out of a class's defaults (they are not
    param group keys): {"master_weights", "stochastic_rounding", "loss_scale"}."""
    out = {}
    for key in KEYS:
        out[key] = defaults.pop(key, None if key in ("loss_scale", "state_dtype") else False)
    for key in ("master_weights", "stochastic_rounding"):
        if not isinstance(out[key], bool):
            raise TypeError("%s: %s must be True or False, got %r" % (where, key, out[key]))
    out["loss_scale"] = parse_loss_scale(out["loss_scale"], where)
    out["state_dtype"] = parse_state_dtype(out["state_dtype"], where)
    return out


def apply_loss_scale(h, ls, where="loss_scale"):
    """Set the C object's loss scaling from parse_loss_scale's value (a
    setting liboptim refuses: ValueError with its message)."""
    try:
        _apply_loss_scale(h, ls)
    except OptimError as e:
        raise ValueError("%s: %s" % (where, e)) from None


def _apply_loss_scale(h, ls):
    if ls is None:
        h.set_loss_scale(C.OPTIM_LOSS_SCALE_OFF)
    elif ls[0] == "static":
        h.set_loss_scale(C.OPTIM_LOSS_SCALE_STATIC, ls[1])
    else:
        s = ls[1]
        h.set_loss_scale(C.OPTIM_LOSS_SCALE_DYNAMIC, float(s["init_scale"]), float(s["growth_factor"]),
                         float(s["backoff_factor"]), int(s["growth_interval"]))


def flags_for(c, dtype):
    """The OPTIM_PARAM_* flags of a new parameter of torch dtype `dtype`."""
    flags = 0
    master = c.master_weights and dtype in (torch.bfloat16, torch.float16)
    if master:
        flags |= C.OPTIM_PARAM_MASTER
    if c.stochastic_rounding and ((dtype is torch.bfloat16 and not master) or
                                  state_dtype_for(c, dtype) is torch.bfloat16):
        flags |= C.OPTIM_PARAM_STOCHASTIC_ROUNDING
    # int8 state: its codes round stochastically too (branch q8sr).
    if c.stochastic_rounding and state_dtype_for(c, dtype) == "int8":
        flags |= C.OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING
    return flags


def state_dtype_for(c, dtype):
    """The torch dtype of a parameter's state: c.state_dtype if set, float32
    with a master, else the parameter's (as torch.optim)."""
    if c.state_dtype is not None:
        return c.state_dtype
    if c.master_weights and dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return dtype


def export(c):
    """What state_dict() and pickling keep: the settings, the seed, the
    loss scaler's settings and state."""
    mode, init, growth, backoff, interval, scale, tracker = c.h.get_loss_scale()
    ls = None
    if mode != C.OPTIM_LOSS_SCALE_OFF:
        ls = {"mode": _MODE_NAMES[mode], "init_scale": init, "scale": scale, "growth_tracker": tracker}
        if mode == C.OPTIM_LOSS_SCALE_DYNAMIC:
            ls.update(growth_factor=growth, backoff_factor=backoff, growth_interval=interval)
    return {"master_weights": c.master_weights, "stochastic_rounding": c.stochastic_rounding,
            "state_dtype": STATE_DTYPES[c.state_dtype], "seed": c.h.get_seed(), "loss_scale": ls}


# The loss scaler's numbers in export()'s dict: which must be whole numbers.
_LS_NUMBERS = ("init_scale", "scale", "growth_tracker", "growth_factor", "backoff_factor", "growth_interval")
_LS_INTEGERS = ("growth_tracker", "growth_interval")


def check(saved, where, c=None):
    """export()'s dict checked (None: a state saved without it, by torch.optim
    or an older optim: the settings stay as they are). With CObject c, the
    loss scaler's settings and state are also tried on a scratch C object of
    c's rule, so that a value liboptim refuses (a growth_factor of NaN, a
    scale beyond float32) is a ValueError naming `where` and the key here,
    before anything of c changed."""
    if saved is None:
        return None
    if not isinstance(saved, dict):
        raise ValueError("%s: %r must be a dict" % (where, STATE_KEY))
    seed = saved.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 64:
        raise ValueError("%s: %s['seed'] = %r must be an int in [0, 2^64)" % (where, STATE_KEY, seed))
    ls = saved.get("loss_scale")
    if ls is not None:
        if not isinstance(ls, dict) or ls.get("mode") not in _MODES:
            raise ValueError("%s: %s['loss_scale'] = %r: a dict with mode 'static' or 'dynamic'" % (where, STATE_KEY, ls))
        for key in ("init_scale", "scale", "growth_tracker"):
            if not isinstance(ls.get(key), numbers.Real):
                raise ValueError("%s: %s['loss_scale'] has no number %r" % (where, STATE_KEY, key))
        for key in _LS_NUMBERS:
            value = ls.get(key, 0)
            if (not isinstance(value, numbers.Real) or isinstance(value, bool) or
                    (key in _LS_INTEGERS and (not math.isfinite(float(value)) or value != int(value)))):
                raise ValueError("%s: %s['loss_scale'][%r] = %r must be a %s" % (
                    where, STATE_KEY, key, value, "whole number" if key in _LS_INTEGERS else "number"))
        scale, interval = float(ls["scale"]), int(ls.get("growth_interval", 1))
        if not (math.isfinite(scale) and scale > 0) or not 0 <= int(ls["growth_tracker"]) < max(interval, 1):
            raise ValueError("%s: %s['loss_scale'] scale %r, growth_tracker %r" % (where, STATE_KEY, ls["scale"],
                                                                                 ls["growth_tracker"]))
        if c is not None:
            from .. import _core  # (a scratch object of c's rule: liboptim's own bounds, stated once)
            try:
                _set_loss_scale(_core.Handle(c.h.rule), ls)
            except OptimError as e:
                raise ValueError("%s: %s['loss_scale'] = %r: %s" % (where, STATE_KEY, ls, e)) from None
    return saved


def _set_loss_scale(h, ls):
    h.set_loss_scale(_MODES[ls["mode"]], float(ls["init_scale"]), float(ls.get("growth_factor", 2.0)),
                     float(ls.get("backoff_factor", 0.5)), int(ls.get("growth_interval", 2000)))
    h.set_loss_scale_state(float(ls["scale"]), int(ls["growth_tracker"]))


def restore(c, saved, where):
    """Set the seed and the loss scaler from export()'s dict (checked again,
    on a scratch object first: a value liboptim refuses is a ValueError and
    nothing changed; None: nothing changes). The master and stochastic
    rounding settings are the optimizer's own: the masters themselves travel
    in each parameter's state."""
    saved = check(saved, where, c)
    if saved is None:
        return
    ls = saved.get("loss_scale")
    if ls is None:
        c.h.set_loss_scale(C.OPTIM_LOSS_SCALE_OFF)
    else:
        _set_loss_scale(c.h, ls)
    c.h.set_seed(int(saved.get("seed", 0)))


def settings_from(c, saved):
    """Set CObject c's storage settings (before its parameters are added) from
    export()'s dict (unpickling)."""
    c.master_weights = bool(saved.get("master_weights", False))
    c.stochastic_rounding = bool(saved.get("stochastic_rounding", False))
    name = saved.get("state_dtype")
    if name not in _STATE_DTYPE_OF:
        raise ValueError("unpickling: %s['state_dtype'] = %r: one of %s" % (STATE_KEY, name,
                                                                          sorted(n for n in _STATE_DTYPE_OF if n)))
    c.state_dtype = _STATE_DTYPE_OF[name]


def copy_settings(old, new):
    """Carry the settings, seed and loss scaler of CObject old into new (a rebuild)."""
    new.state_dtype = old.state_dtype
    new.master_weights = old.master_weights
    new.stochastic_rounding = old.stochastic_rounding
    restore(new, export(old), "rebuild")
