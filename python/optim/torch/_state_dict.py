"""state_dict() and load_state_dict() in torch.optim's format, and pickling
(copy.deepcopy, pickle, torch.save) of an optimizer, as torch pickles one:
its defaults, state and param_groups, from which the C object is made again.
"""
import copy
from collections.abc import Mapping
from itertools import chain

import torch

from . import _distributed, _ema, _groups, _members, _precision, _state
from ._groups import CHECK_KEYS
from ._state import ParamState
from ._tensors import describe

__all__ = ["state_dict", "load_state_dict", "getstate", "setstate"]


def state_dict(opt):
    """The optimizer's state in torch.optim's format (see _Optimizer.state_dict)."""
    c = opt._c
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

    with c.lock:
        c = _members.sync(opt)
        _distributed.adopt(c, opt.param_groups)  # a precision state loaded by a ZeroRedundancyOptimizer
        param_groups = [pack_group(g) for g in opt.param_groups]
        packed_state = {}
        state = opt.state
        for i, p in enumerate(c.params):
            if state.has(i):
                # The live state, as torch's state_dict holds its state dicts
                # themselves: kept in memory, it follows the training.
                packed_state[param_mappings[id(p)]] = state.pstate(i)
        for k, v in state._other.items():
            if torch.is_tensor(k):
                if len(v) == 0:
                    continue  # an empty entry made by reading state[t]: nothing to lose
                raise KeyError("%s.state_dict: a tensor (%s) that is in no param group has state in "
                               "optimizer.state (it was taken out of param_groups by hand); torch.optim raises "
                               "KeyError here too. `del optimizer.state[tensor]` to drop its state, or put it "
                               "back in a group" % (c.owner, describe(k)))
            packed_state[k] = v
        precision = _precision.export(c)
        ema = _ema.export(c)  # the EMA of the weights (docs/EMA.md): copies, only when on
    if precision["loss_scale"] is not None or precision["seed"] or precision["stochastic_rounding"]:
        # Also in every group: torch's ZeroRedundancyOptimizer.load_state_dict keeps only 'state' and
        # 'param_groups', and hands the groups' keys to its local optimizers (_distributed.adopt). With
        # stochastic rounding even a seed of 0: without the key the loading ranks would keep their own.
        for group in param_groups:
            group[_precision.STATE_KEY] = precision
    out = {"state": packed_state, "param_groups": param_groups, _precision.STATE_KEY: precision}
    if ema is not None:
        out[_ema.STATE_KEY] = ema
    return out


def load_state_dict(opt, state_dict):
    """Load a state in torch.optim's format; everything is checked before
    anything changes (see _Optimizer.load_state_dict)."""
    c = opt._c
    owner = c.owner
    if not isinstance(state_dict, Mapping) or "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError("%s: a state dict has the keys 'state' and 'param_groups'" % owner)
    with c.lock:
        c = _members.sync(opt)
        _ema.refuse_swapped(c, "load_state_dict")
        groups = opt.param_groups
        saved_groups = state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        id_map = {old: p for old, p in zip(chain.from_iterable(g["params"] for g in saved_groups),
                                            chain.from_iterable(g["params"] for g in groups))}
        ctor = opt._ctor_defaults()
        new_groups, new_values, bits = [], [], []
        for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
            # (the precision state a ZeroRedundancyOptimizer's groups carry is read below, not kept as a key)
            ng = copy.deepcopy({k: v for k, v in saved.items() if k not in ("params", _precision.STATE_KEY)})
            for k in CHECK_KEYS:
                # Optimizer-wide settings (not torch's keys): a state saved
                # without them keeps the current ones.
                if k not in ng:
                    ng[k] = group.get(k, opt.defaults[k])
            for k, v in opt.defaults.items():
                if k not in ng:
                    ng[k] = ctor.get(k, v)
            opt._fill_loaded_group(gi, ng)
            ng.pop("param_names", None)
            if "param_names" in group:  # the names liboptim holds, whatever the saved state says
                ng["param_names"] = group["param_names"]
            ng["params"] = group["params"]
            values = _groups.group_values(c, ng, gi)
            bits.append(_groups.hparams(c, values, gi, "loaded param group").slots())
            new_groups.append(ng)
            new_values.append(values)
        checks = _groups.read_checks(c, new_groups, "loaded param group")
        _groups.refuse_sharded(c, checks)
        precision = state_dict.get(_precision.STATE_KEY)
        if precision is None and saved_groups:
            # ZeroRedundancyOptimizer's consolidated state_dict: in its param groups (_distributed.publish).
            precision = saved_groups[0].get(_precision.STATE_KEY)
        precision = _precision.check(precision, "%s.load_state_dict" % owner, c)  # before anything changes
        ema = _ema.check(c, state_dict.get(_ema.STATE_KEY), "%s.load_state_dict" % owner)
        plans = {}
        other = {}
        for key, value in state_dict["state"].items():
            if key in id_map:
                i = c.index[id_map[key]]
                plans[i] = _state.plan_param_state(c, i, value, bits[c.group_of[i]],
                                                   "loaded state_dict['state'][%r]" % (key,), cast_extras=True)
            else:
                other[key] = copy.deepcopy(value)

        for gi, values in enumerate(new_values):
            _groups.push(c, gi, values)
        _groups.push_checks(c, checks)
        opt.param_groups = new_groups
        c.members = [list(map(id, g["params"])) for g in new_groups]
        # torch makes every state dict anew: the old ones (in a state_dict
        # kept by the user) keep the values they have now.
        for i in range(len(c.params)):
            opt.state.replace(i, plans.get(i))
        opt.state._other = other
        _precision.restore(c, precision, "%s.load_state_dict" % owner)
        _distributed.publish(c, opt.param_groups)
        # A state dict without an EMA (torch.optim's) keeps the settings and restarts the average.
        _ema.restore(c, ema, "%s.load_state_dict" % owner, keep_if_missing=True)


def getstate(opt):
    """What pickle keeps of an optimizer, as torch.optim.Optimizer.__getstate__:
    defaults, state (parameter -> its state, as a dict) and param_groups. The
    state tensors are the views of the C memory: pickle and deepcopy copy
    their values at that moment."""
    _members.sync(opt)
    state = {}
    for key, value in opt.state.items():
        state[key] = dict(value) if isinstance(value, ParamState) else value
    # torch's three keys; the reduced-precision settings, seed and loss scaler ride in the defaults' copy.
    defaults = dict(opt.defaults)
    defaults[_precision.STATE_KEY] = _precision.export(opt._c)
    with opt._c.lock:
        ema = _ema.export(opt._c)
    if ema is not None:
        defaults[_ema.STATE_KEY] = ema
    return {"defaults": defaults, "state": state, "param_groups": opt.param_groups}


def setstate(opt, saved):
    """Make the optimizer again from getstate()'s dict (unpickled or deep
    copied): a new C object over the groups' tensors, with the saved
    hyperparameters, settings and state. It steps as the original would."""
    defaults = dict(saved["defaults"])
    precision = defaults.pop(_precision.STATE_KEY, None)
    ema = defaults.pop(_ema.STATE_KEY, None)
    opt._init_c(defaults)
    if precision is not None:  # before the parameters: their storage depends on it
        _precision.settings_from(opt._c, precision)
    for group in saved["param_groups"]:
        # (a ZeroRedundancyOptimizer's local optimizer keeps its precision state in its groups too: not the copy)
        opt.add_param_group({k: v for k, v in group.items() if k != _precision.STATE_KEY})
    c = opt._c
    _groups.push_checks(c, _groups.read_checks(c, opt.param_groups, "param group"))
    for key, value in saved["state"].items():
        i = c.index.get(key)
        if i is None:
            opt.state._other[key] = value
            continue
        held = {k: v for k, v in value.items() if k in c.rule.c_keys}
        if held:
            opt.state[key] = held
        opt.state.pstate(i)._extra.update((k, v) for k, v in value.items() if k not in c.rule.c_keys)
    _precision.restore(c, precision, "unpickling")
    _ema.restore(c, _ema.check(c, ema, "unpickling"), "unpickling", keep_if_missing=False)
    opt._hook_for_profile()
