"""Running lr schedulers side by side with torch 1.13's, for the test_lr_scheduler*
files.

A *recipe* builds schedulers on an optimizer from a module of schedulers (torch's
torch.optim.lr_scheduler or ours): recipe(m, opt) returns the list of objects
to step after each optimizer step, in order (a ChainedScheduler or SequentialLR
is one object). run_side_by_side builds the same recipe with both modules on
two identical optimizers and compares, after construction and after every
step, every group's lr, momentum and betas and each stepped object's
get_last_lr() and last_epoch, with == on the Python floats: where we claim
torch's arithmetic, we claim its bits. When torch raises (at construction or
at a step), ours must raise the same exception class there.
"""
import warnings

import torch
import torch.optim.lr_scheduler as T

import optim.torch.lr_scheduler as L

LRS = (0.1, 0.03)


def make_opt(kind="sgd", lrs=LRS, module=torch.optim, size=1):
    """An optimizer of `module` (torch.optim or optim.torch) with one
    parameter group per lr, and gradients (kept: the schedulers do not care
    what they are, the optimizer reads its groups at every step)."""
    params = [torch.nn.Parameter(torch.linspace(-1.0, 1.0, size)) for _ in lrs]
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, 0.01 * (i + 1))
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    if kind == "sgd":
        return module.SGD(groups, lr=0.05, momentum=0.9)
    if kind == "adam":
        return module.Adam(groups, lr=0.05)
    if kind == "adamw":
        return module.AdamW(groups, lr=0.05, weight_decay=0.1)
    return module.SGD(groups, lr=0.05)


def step_opt(opt, k):
    """Optimizer step k."""
    opt.step()


def groups_state(opt):
    """Everything a scheduler writes in the groups, for ==."""
    out = []
    for g in opt.param_groups:
        out.append((g["lr"], g.get("momentum"), tuple(g["betas"]) if "betas" in g else None))
    return out


def sched_state(steppers):
    """(class, get_last_lr() or the class of what it raised, last_epoch) of
    each (torch 1.13's ReduceLROnPlateau has no get_last_lr: its _last_lr)."""
    out = []
    for s in steppers:
        if isinstance(s, T.ReduceLROnPlateau):
            last, exc = _attempt(lambda: list(s._last_lr))
        else:
            last, exc = _attempt(lambda: list(s.get_last_lr()))
        out.append((type(s).__name__, type(exc).__name__ if exc else last, getattr(s, "last_epoch", None)))
    return out


def _attempt(fn):
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 -- compared with torch's below
        return None, exc


class Mismatch(AssertionError):
    pass


def _same_failure(what, et, eo):
    if et is None and eo is None:
        return False
    if et is None or eo is None or type(et) is not type(eo):
        raise Mismatch("%s: torch %r, ours %r" % (what, et, eo))
    return True


def negative_lr(opt):
    return any(g["lr"] < 0 for g in opt.param_groups)


def run_side_by_side(recipe, steps, kind="sgd", ours_module=torch.optim, lrs=LRS, events=None, label="",
                     stop_if=None):
    """Build `recipe` with torch's schedulers on a torch.optim optimizer and
    with ours on an `ours_module` optimizer; step both `steps` times. events:
    {k: fn(m, opt, steppers) -> extra steppers or None}, run on both sides
    before step k (hand edits, schedulers created later, groups added).
    stop_if(torch's optimizer): stop before the optimizer step when true.
    Returns (torch side, our side) as (opt, steppers), or None if both raised
    the same exception class (which is then compared) or stop_if stopped."""
    events = events or {}
    ot = make_opt(kind, lrs, torch.optim)
    oo = make_opt(kind, lrs, ours_module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st, et = _attempt(lambda: list(recipe(T, ot)))
        so, eo = _attempt(lambda: list(recipe(L, oo)))
        if _same_failure("%s: construction" % label, et, eo):
            return None
        check(ot, st, oo, so, "%s: after construction" % label)
        for k in range(1, steps + 1):
            if k in events:
                xt, et = _attempt(lambda: events[k](T, ot, st))
                xo, eo = _attempt(lambda: events[k](L, oo, so))
                if _same_failure("%s: event before step %d" % (label, k), et, eo):
                    return None
                st += xt or []
                so += xo or []
                check(ot, st, oo, so, "%s: after the event before step %d" % (label, k))
            if stop_if is not None and stop_if(ot):
                return None
            step_opt(ot, k)
            step_opt(oo, k)
            _, et = _attempt(lambda: [s.step() for s in st])
            _, eo = _attempt(lambda: [s.step() for s in so])
            if _same_failure("%s: step %d" % (label, k), et, eo):
                return None
            check(ot, st, oo, so, "%s: step %d" % (label, k))
    return (ot, st), (oo, so)


def check(ot, st, oo, so, what):
    a, b = groups_state(ot), groups_state(oo)
    if a != b:
        raise Mismatch("%s: groups (lr, momentum, betas): torch %r, ours %r" % (what, a, b))
    a, b = sched_state(st), sched_state(so)
    if a != b:
        raise Mismatch("%s: schedulers (class, get_last_lr, last_epoch): torch %r, ours %r" % (what, a, b))
