"""Param groups edited by hand: the tensors of each group's 'params' list,
as the user leaves them, are the ones a step updates.

torch.optim reads param_groups at every step, so users edit the lists in
place: progressive unfreezing appends a tensor, a frozen one is dropped, a
tensor moves to another group, a group's list is replaced by a new one.
sync() sees such an edit cheaply (the ids of every group's tensors, compared
with the ones registered in C: one list comparison per group and step) and
then rebuilds the C object around the new lists (liboptim has no removal of
a parameter): a new CObject with the same groups, hyperparameters and
settings, over the groups' tensors in order, and the state of every tensor
that stays copied into it. What torch does, and so what happens here:

- a tensor that stays (in its group or moved to another) keeps its state
  (step, moments, the keys kept in Python) and steps with its group's
  hyperparameters; the state tensors and the ParamState the user holds are
  the same objects, now over the new C memory (Tensor.set_);
- a tensor that leaves keeps its state in optimizer.state, under the tensor,
  released from C (its tensors keep their values); it is no longer stepped;
  if it comes back (to any group), it continues from that state, as in torch;
  state_dict() raises KeyError while such a tensor holds state, as torch's
  does (`del optimizer.state[t]` drops it);
- a tensor appended that was never in the optimizer starts without state,
  or with the state the user gave it through optimizer.state[t] meanwhile;
- the same tensor twice (in one group or in two): torch.optim's
  add_param_group refuses it, and an edit by hand makes torch.optim update
  it twice per step; here it is refused at the step (ValueError naming both
  groups), as liboptim updates each parameter once.

Edits are the caller's to make while no other thread uses the optimizer.
A rebuild keeps the thread setting and skipped_steps; last_grad_norm and
last_step_skipped describe the next step. Refused while a SAM over the
optimizer is between its halves.
"""
import torch

from . import _ema, _groups, _precision
from ._cobject import CObject
from ._quantized import QuantizedState
from ._state import ParamState, apply_param_state, plan_param_state
from ._step import sam_guard
from ._tensors import describe

__all__ = ["sync"]


def sync(opt):
    """The optimizer's CObject after making it hold exactly the tensors of
    opt.param_groups (rebuilt if they were edited; else the same one, at the
    cost of comparing the ids). The caller holds the CObject's lock."""
    c = opt._c
    groups = opt.param_groups
    members = c.members
    if len(groups) != len(members):
        return c  # a group appended by hand: _groups.sync says to use add_param_group()
    for group, ids in zip(groups, members):
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, (list, tuple)) or list(map(id, params)) != ids:
            return _rebuild(opt)
    return c


def _layout(c, groups):
    """Every group's tensors, checked: tensors, each in one place only."""
    owner = c.owner
    layout = []
    seen = {}
    for gi, group in enumerate(groups):
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, (list, tuple)):
            raise TypeError("%s: param group %d: 'params' is %s; it must be a list of tensors"
                            % (owner, gi, type(params).__name__))
        for p in params:
            if not isinstance(p, torch.Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is " + torch.typename(p))
            if id(p) in seen:
                raise ValueError("%s: a tensor (%s) is in param group %d and in param group %d: a parameter may be "
                                 "in one place only (torch.optim's add_param_group refuses this too; edited in by "
                                 "hand, torch.optim would update it twice per step)"
                                 % (owner, describe(p), seen[id(p)], gi))
            seen[id(p)] = gi
        layout.append(list(params))
    return layout


_SCHEDULE_FREE = ("sgd_schedule_free", "adamw_schedule_free")


def _carry_c(old, i, new, j):
    """Copy parameter i's C state in `old` into parameter j of `new`."""
    oh, nh = old.h, new.h
    nh.set_step(j, oh.get_step(i))
    if old.rule.has_mu_product:
        nh.set_mu_product(j, oh.get_mu_product(i))
    if old.rule.rule_name in _SCHEDULE_FREE:
        nh.set_schedule_free(j, *oh.get_schedule_free(i))
    for s in range(len(old.rule.slot_names)):
        oaddr, initialized = oh.state_slot(i, s)
        naddr, _ = nh.state_slot(j, s)
        if oaddr is not None and naddr is not None and initialized:
            new.slot_write(j, s, old.slot_tensor(i, s))
            nh.set_initialized(j, s, True)
    if old.masters[i] and new.masters[j]:
        new.master_tensor(j).copy_(old.master_tensor(i))
    new.touched[j] = old.touched[i]


def _repoint(new, j, tensors):
    """Put the user's tensors of a parameter ({key: tensor}, slot views and
    scalars) over parameter j of `new`: the same objects, new memory."""
    slots = new.rule.slot_names
    for key, t in tensors.items():
        if not (torch.is_tensor(t) or isinstance(t, QuantizedState)):
            continue
        if key == "step" or key in new.rule.scalar_keys:
            new.scalars[(j, key)] = t
        elif key == _precision.MASTER_KEY:
            view = new.master_tensor(j)
            if view is None:
                t.set_(t.clone())
            else:
                t.set_(view)
                new._views[(j, key)] = t
        elif key in slots and isinstance(t, QuantizedState):
            s = slots.index(key)
            view = new.slot_tensor(j, s)
            if not isinstance(view, QuantizedState) or t.shape != view.shape:
                t._own_memory()  # the slot is gone: keeps its values
            else:
                t.codes.set_(view.codes)
                t.scales.set_(view.scales)
                new._views[(j, s)] = t
        elif key in slots:
            s = slots.index(key)
            view = new.slot_tensor(j, s)
            if view is None or t.shape != view.shape or t.dtype is not view.dtype:
                t.set_(t.clone())  # the slot is gone (an option off in the new group): keeps its values
            else:
                t.set_(view)
                new._views[(j, s)] = t


def _rebuild(opt):
    old = opt._c
    state = opt.state
    sam_guard(old, "step (after an edit of param_groups)")
    _ema.refuse_swapped(old, "step (after an edit of param_groups)")
    groups = opt.param_groups
    if len(groups) != len(old.pushed):
        return old
    layout = _layout(old, groups)

    # 1. Everything that can fail, on the new object only.
    new = CObject(old.rule)
    new.lock = old.lock  # callers hold it: the same lock guards the optimizer before and after
    new.state_dtype = old.state_dtype  # the state's dtype setting and the ZeroRedundancyOptimizer role stay
    _precision.copy_settings(old, new)  # master weights, stochastic rounding, seed, loss scaler
    new.zero_rank = old.zero_rank
    new.zero_group = old.zero_group  # the hook is installed again at the next step (_distributed.prepare_step)
    new.zero_prec = old.zero_prec
    new.zero_ref = old.zero_ref  # (stochastic rounding's global numbering is set again at the next step)
    new.zero_agreed = old.zero_agreed
    flat = [p for params in layout for p in params]
    for j, p in enumerate(flat):
        new.check_new_param(j, p)
    new.check_disjoint(flat, 0)
    for gi, values in enumerate(old.pushed):
        hp = _groups.hparams(new, values, gi, "param group")
        new.h.add_group(hp)
        new.pushed.append(values)
    _groups.push_checks(new, old.checks_pushed)
    new.h.set_threads(old.h.get_threads())
    if old.rule.rule_name in _SCHEDULE_FREE:
        new.h.sf_set_mode(old.h.sf_mode() == 1)  # the parameters stay where the mode keeps them
    new.h.set_stats(old.h.stats_enabled())
    new.skipped_base = old.skipped_base + old.h.skipped_steps()
    for gi, params in enumerate(layout):
        names = [old.names[old.index[p]] if p in old.index else None for p in params]
        # A tensor that stays keeps the layout of its state (torch's state keeps its strides).
        layouts = [old.layouts[old.index[p]] if p in old.index else new.layout_for(p) for p in params]
        new.add_params(gi, params, names, layouts)
        if "param_names" in groups[gi]:
            base = len(new.params) - len(params)
            groups[gi]["param_names"] = [n if n is not None else "param%d" % (base + k) for k, n in enumerate(names)]
    # The EMA (docs/EMA.md): settings, count and the averages of the tensors that stay (same layout).
    _ema.carry(old, new, {j: old.index[p] for j, p in enumerate(new.params) if p in old.index})
    returning = {}  # j -> the plan of a tensor coming back with state kept in optimizer.state
    for j, p in enumerate(new.params):
        if p not in old.index:
            kept = state._other.get(p)
            if kept:
                where = "state of a tensor put back in param group %d" % new.group_of[j]
                returning[j] = plan_param_state(new, j, kept, _groups.slot_bits(new, new.group_of[j]), where,
                                                cast_extras=False)

    # 2. The C state of the tensors that stay or come back.
    for j, p in enumerate(new.params):
        i = old.index.get(p)
        if i is not None:
            _carry_c(old, i, new, j)
            if i in old.pending:  # slots waiting for their option (CObject.pending) keep waiting
                new.pending[j] = old.pending[i]
        elif j in returning:
            apply_param_state(new, j, returning[j])

    # 3. The user's objects: released (tensors that leave) or moved over.
    for i, p in enumerate(old.params):
        if p not in new.index and state.has(i):
            ps = state.pstate(i)
            ps.release()
            state._other[p] = ps
    pstates = [None] * len(new.params)
    for j, p in enumerate(new.params):
        i = old.index.get(p)
        if i is not None:
            _repoint(new, j, {name: old._views[(i, s)] for s, name in enumerate(old.rule.slot_names)
                              if (i, s) in old._views})
            _repoint(new, j, {key: old.scalars[(i, key)] for key in ("step",) + old.rule.scalar_keys
                              if (i, key) in old.scalars})
            if (i, _precision.MASTER_KEY) in old._views:
                _repoint(new, j, {_precision.MASTER_KEY: old._views[(i, _precision.MASTER_KEY)]})
            if i < len(state._pstates):
                ps = state._pstates[i]
                ps._c, ps._i = new, j
                pstates[j] = ps
        elif p in state._other:
            kept = state._other.pop(p)
            ps = ParamState(new, j)
            if isinstance(kept, ParamState):  # released when it left: the same object, live again
                _repoint(new, j, kept._frozen)
                ps = kept
                ps._frozen, ps._c, ps._i = None, new, j
            if j in returning:
                ps._extra = returning[j]["extra"]
            pstates[j] = ps
    state._pstates = [ps if ps is not None else ParamState(new, j) for j, ps in enumerate(pstates)]
    state._c = new
    opt._c = new
    new.refresh_scalars()
    return new
