"""Learning-rate schedulers: torch.optim.lr_scheduler's classes, arguments and
values, bit for bit, plus two of optim's own (WarmupCosine, WarmupStableDecay).

Use them as torch's: construct with an optimizer (an ``optim.torch`` or a
``torch.optim`` one: only ``param_groups`` and their ``'lr'``,
``'initial_lr'``, ``'momentum'``/``'betas'`` keys are read and written), call
``step()`` after each ``optimizer.step()``, read ``get_last_lr()``, save
``state_dict()``. Subclass ``LRScheduler`` (or ``_LRScheduler``, torch 1.13's
name) and override ``get_lr()`` for a scheduler of your own, as with torch's.

Every class computes what torch 1.13's computes, with the same Python float
operations in the same order, so the lrs are the same Python floats:

- ``step()`` runs the chainable form (``get_lr()``): each scheduler rescales
  the lr the group holds now (StepLR multiplies it by gamma at each
  step_size, CosineAnnealingLR scales its distance to eta_min by the ratio
  of two cosines, ...). Two schedulers stepped on one optimizer therefore
  compose, as in torch: LinearLR(start_factor=0.1) and CosineAnnealingLR
  together give 0.01, 0.028, 0.046, ... from lr = 0.1, and a hand edit of
  ``group['lr']`` between steps carries on. The schedulers torch computes in
  closed form (LambdaLR, CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR)
  write their value whatever the group held, as torch's do.
- ``step(epoch)`` (deprecated, as in torch) jumps with the closed form
  (``_get_closed_form_lr()``) where torch has one.

Where torch 1.13 raises, fails later or lands in the wrong cycle, these
differ, each said at its class:
arguments that would make torch divide by zero at a later step (or that are
not finite, or would give negative learning rates) raise ValueError at
construction, naming the argument; OneCycleLR gives a value for a phase of no
length; CyclicLR also cycles Adam's beta1 and its state_dict pickles (as
torch >= 2.0); CosineAnnealingWarmRestarts.step(epoch) finds the cycle in
exact arithmetic (torch's math.log lands in the wrong cycle at some exact
restarts); SequentialLR and ChainedScheduler refuse, up front, the schedulers
torch fails on later (ReduceLROnPlateau, a ChainedScheduler or SequentialLR
that SequentialLR would have to restart).

WarmupCosine and WarmupStableDecay are closed forms evaluated by liboptim
(include/optim_schedule.h) and chain multiplicatively (_lr_closed.py). The
base class is in _lr_base.py. docs/SCHEDULES.md has every formula and a plot
of each schedule, and says how stacking works.
"""
import math
import types
import warnings
from bisect import bisect_right
from collections import Counter
from numbers import Real

import torch.optim.lr_scheduler as _torch_lr_scheduler

from ._lr_base import (EPOCH_DEPRECATION_WARNING, LRScheduler, _check_optimizer, _enable_get_lr_call, _format_param,
                       _real, _warn_get_lr, _whole)
from ._lr_closed import WarmupCosine, WarmupStableDecay

_LRScheduler = LRScheduler  # torch 1.13's name of the base class

__all__ = [
    "LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
    "ExponentialLR", "SequentialLR", "CosineAnnealingLR", "ChainedScheduler", "ReduceLROnPlateau", "CyclicLR",
    "CosineAnnealingWarmRestarts", "OneCycleLR", "PolynomialLR", "WarmupCosine", "WarmupStableDecay",
]


# ---- Factors given by Python callables ------------------------------------------------------


def _init_lambdas(optimizer, lr_lambda):
    if not isinstance(lr_lambda, (list, tuple)):
        return [lr_lambda] * len(optimizer.param_groups)
    if len(lr_lambda) != len(optimizer.param_groups):
        raise ValueError("Expected {} lr_lambdas, but got {}".format(len(optimizer.param_groups), len(lr_lambda)))
    return list(lr_lambda)


class _LambdaState(object):
    """torch's state_dict of the lambda schedulers: callable objects' __dict__,
    None for functions and lambdas (which are not saved)."""

    def state_dict(self):
        state_dict = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "lr_lambdas")}
        state_dict["lr_lambdas"] = [None] * len(self.lr_lambdas)
        for idx, fn in enumerate(self.lr_lambdas):
            if not isinstance(fn, types.FunctionType):
                state_dict["lr_lambdas"][idx] = fn.__dict__.copy()
        return state_dict

    def load_state_dict(self, state_dict):
        lr_lambdas = state_dict.pop("lr_lambdas")
        self.__dict__.update(state_dict)
        state_dict["lr_lambdas"] = lr_lambdas  # the caller's dict is left as it was (torch #32756)
        for idx, fn in enumerate(lr_lambdas):
            if fn is not None:
                self.lr_lambdas[idx].__dict__.update(fn)


class LambdaLR(_LambdaState, LRScheduler):
    """lr = initial lr * lr_lambda(t), whatever the group held (not chainable,
    as torch's)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1, verbose=False):
        self.optimizer = optimizer
        self.lr_lambdas = _init_lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        return [base_lr * lmbda(self.last_epoch) for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaState, LRScheduler):
    """Each step multiplies the group's lr by lr_lambda(t) (chainable)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1, verbose=False):
        self.optimizer = optimizer
        self.lr_lambdas = _init_lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        if self.last_epoch > 0:
            return [group["lr"] * lmbda(self.last_epoch)
                    for lmbda, group in zip(self.lr_lambdas, self.optimizer.param_groups)]
        return [group["lr"] for group in self.optimizer.param_groups]


# ---- torch's chainable schedulers -------------------------------------------------------------


class StepLR(LRScheduler):
    """Multiplies the group's lr by gamma every step_size steps; closed form
    initial lr * gamma ** (t // step_size). step_size must be a whole number
    >= 1 (torch divides by it), gamma a finite number >= 0."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1, verbose=False):
        _whole("StepLR", "step_size", step_size, 1)
        _real("StepLR", "gamma", gamma, 0)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        if (self.last_epoch == 0) or (self.last_epoch % self.step_size != 0):
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiplies the group's lr by gamma at each milestone (one listed twice
    counts twice). Milestones are whole numbers >= 0, gamma finite >= 0."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1, verbose=False):
        for i, m in enumerate(milestones):
            _whole("MultiStepLR", "milestones[%d]" % i, m, 0)
        _real("MultiStepLR", "gamma", gamma, 0)
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        if self.last_epoch not in self.milestones:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch] for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        milestones = list(sorted(self.milestones.elements()))
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch) for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    """Multiplies the group's lr by factor at step 0 and divides it by factor
    at step total_iters. factor in (0, 1] (torch divides by it: 0 would raise
    ZeroDivisionError at step total_iters), total_iters a whole number >= 0."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1, verbose=False):
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        _real("ConstantLR", "factor", factor, 0, strict=True)
        _whole("ConstantLR", "total_iters", total_iters, 0)
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch > self.total_iters or (self.last_epoch != self.total_iters):
            return [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch == self.total_iters:
            return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
                for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Scales the group's lr by a factor going linearly from start_factor to
    end_factor over total_iters steps. start_factor in (0, 1] (torch divides
    by it at step 1; torch >= 2.0 refuses 0 too), end_factor in [0, 1],
    total_iters a whole number >= 0."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1,
                 verbose=False):
        if start_factor > 1.0 or start_factor < 0:
            raise ValueError("Starting multiplicative factor expected to be between 0 and 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        _real("LinearLR", "start_factor", start_factor, 0, strict=True)
        _real("LinearLR", "end_factor", end_factor, 0)
        _whole("LinearLR", "total_iters", total_iters, 0)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self.last_epoch > self.total_iters:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * (1. + (self.end_factor - self.start_factor) /
                (self.total_iters * self.start_factor + (self.last_epoch - 1) * (self.end_factor - self.start_factor)))
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * (self.start_factor +
                (self.end_factor - self.start_factor) * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiplies the group's lr by gamma (finite, >= 0) at every step."""

    def __init__(self, optimizer, gamma, last_epoch=-1, verbose=False):
        _real("ExponentialLR", "gamma", gamma, 0)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        if self.last_epoch == 0:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    """Scales the group's lr by ((1 - t/T) / (1 - (t-1)/T)) ** power at each
    step t <= T = total_iters: 0 from step T on. total_iters a whole number
    >= 1 (torch divides by it), power finite >= 0."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1, verbose=False):
        _whole("PolynomialLR", "total_iters", total_iters, 1)
        _real("PolynomialLR", "power", power, 0)
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        if self.last_epoch == 0 or self.last_epoch > self.total_iters:
            return [group["lr"] for group in self.optimizer.param_groups]
        decay_factor = ((1.0 - self.last_epoch / self.total_iters) /
                        (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return [group["lr"] * decay_factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
                for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the group's lr to eta_min over T_max steps, and
    back up over the next T_max (periodic), in torch's chainable form: each
    step scales the group's distance to eta_min by a ratio of cosines (an
    affine step, not a product: stacked with a multiplicative scheduler,
    eta_min is kept as a floor of the distance). T_max a finite number > 0,
    eta_min finite >= 0."""

    def __init__(self, optimizer, T_max, eta_min=0, last_epoch=-1, verbose=False):
        _real("CosineAnnealingLR", "T_max", T_max, 0, strict=True)
        _real("CosineAnnealingLR", "eta_min", eta_min, 0)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        if self.last_epoch == 0:
            return [group["lr"] for group in self.optimizer.param_groups]
        elif self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (base_lr - self.eta_min) *
                    (1 + math.cos((self.last_epoch) * math.pi / self.T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)]
        elif (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max)) /
                (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max)) *
                (group["lr"] - self.eta_min) + self.eta_min
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


# ---- torch's closed-form schedulers ----------------------------------------------------------


def _restart_cycle(epoch, T_0, T_mult):
    """n, the cycle holding `epoch` >= T_0 (T_mult > 1): the largest n with
    T_0 (T_mult^n - 1) / (T_mult - 1) <= epoch, in exact arithmetic. torch
    takes int(math.log(epoch / T_0 * (T_mult - 1) + 1, T_mult)), which is
    one less at some exact restarts (T_0 = 1, T_mult = 3, epoch = 121)."""
    n, start, length = 0, 0, T_0
    while start + length <= epoch:
        start += length
        length *= T_mult
        n += 1
    return n


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine from the initial lr to eta_min over T_0 steps, restarted
    with cycles T_mult times longer each time, as torch's (T_cur and T_i kept
    as torch keeps them; step(epoch) takes fractional epochs). Not chainable
    (the lr is computed from base_lrs), as torch's. One difference:
    step(epoch) with T_mult > 1 finds the cycle exactly, where torch's
    floating-point logarithm is one cycle short at some exact restarts (it
    then gives eta_min instead of the initial lr)."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0, last_epoch=-1, verbose=False):
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError("Expected positive integer T_0, but got {}".format(T_0))
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError("Expected integer T_mult >= 1, but got {}".format(T_mult))
        _real("CosineAnnealingWarmRestarts", "eta_min", eta_min, 0)
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        _warn_get_lr(self)
        return [self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base_lr in self.base_lrs]

    def step(self, epoch=None):
        """Step once, or go to `epoch` (an int, or a float for fractions of an
        epoch: scheduler.step(epoch + i / iters) in the batch loop)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur - self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError("Expected non-negative epoch, but got {}".format(epoch))
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = _restart_cycle(epoch, self.T_0, self.T_mult)
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** (n)
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        with _enable_get_lr_call(self):
            for i, data in enumerate(zip(self.optimizer.param_groups, self.get_lr())):
                param_group, lr = data
                param_group["lr"] = lr
                self.print_lr(self.verbose, i, lr, epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def _momentum_key(optimizer):
    defaults = getattr(optimizer, "defaults", {})
    if "momentum" not in defaults and "betas" not in defaults:
        raise ValueError("optimizer must support momentum with `cycle_momentum` option enabled")
    return "betas" in defaults


def _set_momentum(group, use_beta1, momentum):
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


class CyclicLR(LRScheduler):
    """Cyclical learning rates (triangular, triangular2, exp_range, or a
    custom scale_fn), momentum cycled inversely, as torch's, to the bit (not
    chainable: the lr is computed from base_lr and max_lr). Beyond torch
    1.13, as torch >= 2.0: cycle_momentum also works with Adam-style
    optimizers (it cycles beta1), and the scheduler and its state_dict can be
    pickled and deep-copied (torch 1.13 keeps a WeakMethod there; a custom
    scale_fn is saved as torch saves lr_lambdas). base_lr and max_lr finite
    >= 0, step_size_up finite > 0, step_size_down None or finite >= 0."""

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None, mode="triangular",
                 gamma=1., scale_fn=None, scale_mode="cycle", cycle_momentum=True, base_momentum=0.8,
                 max_momentum=0.9, last_epoch=-1, verbose=False):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        max_lrs = _format_param("max_lr", optimizer, max_lr)
        for name, given, values in (("base_lr", base_lr, base_lrs), ("max_lr", max_lr, max_lrs)):
            for i, v in enumerate(values):
                _real("CyclicLR", "%s[%d]" % (name, i) if isinstance(given, (list, tuple)) else name, v, 0)
        _real("CyclicLR", "step_size_up", step_size_up, 0, strict=True)
        if step_size_down is not None:
            _real("CyclicLR", "step_size_down", step_size_down, 0)
        _real("CyclicLR", "gamma", gamma)
        if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        if cycle_momentum:
            use_beta1 = _momentum_key(optimizer)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                group["lr"] = lr
        self.max_lrs = max_lrs
        step_size_up = float(step_size_up)
        step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
        self.total_size = step_size_up + step_size_down
        self.step_ratio = step_size_up / self.total_size
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        if scale_fn is None:
            self.scale_mode = "iterations" if mode == "exp_range" else "cycle"
        else:
            self.scale_mode = scale_mode
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = use_beta1
            if last_epoch == -1:
                for momentum, group in zip(base_momentums, optimizer.param_groups):
                    _set_momentum(group, use_beta1, momentum)
            self.base_momentums = [group["betas"][0] if use_beta1 else group["momentum"]
                                   for group in optimizer.param_groups]
            self.max_momentums = _format_param("max_momentum", optimizer, max_momentum)
        super().__init__(optimizer, last_epoch, verbose)
        self.base_lrs = base_lrs

    def scale_fn(self, x):
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.
        if self.mode == "triangular2":
            return 1 / (2. ** (x - 1))
        return self.gamma ** (x)

    def get_lr(self):
        """The lrs at batch index last_epoch; sets the momentum (or beta1) of
        that step in the groups when cycle_momentum."""
        _warn_get_lr(self)
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1. + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        lrs = []
        for base_lr, max_lr in zip(self.base_lrs, self.max_lrs):
            base_height = (max_lr - base_lr) * scale_factor
            if self.scale_mode == "cycle":
                lr = base_lr + base_height * self.scale_fn(cycle)
            else:
                lr = base_lr + base_height * self.scale_fn(self.last_epoch)
            lrs.append(lr)
        if self.cycle_momentum:
            momentums = []
            for base_momentum, max_momentum in zip(self.base_momentums, self.max_momentums):
                base_height = (max_momentum - base_momentum) * scale_factor
                if self.scale_mode == "cycle":
                    momentum = max_momentum - base_height * self.scale_fn(cycle)
                else:
                    momentum = max_momentum - base_height * self.scale_fn(self.last_epoch)
                momentums.append(momentum)
            for param_group, momentum in zip(self.optimizer.param_groups, momentums):
                _set_momentum(param_group, getattr(self, "use_beta1", False), momentum)
        return lrs

    def state_dict(self):
        state = super().state_dict()
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = None
        if fn is not None and not isinstance(fn, types.FunctionType):
            state["_scale_fn_custom"] = fn.__dict__.copy()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        state.pop("_scale_fn_ref", None)  # torch 1.13's WeakMethod to its own scheduler
        fn = state.pop("_scale_fn_custom", None)
        super().load_state_dict(state)
        if isinstance(fn, dict) and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(fn)


def _annealing_cos(start, end, pct):
    """Cosine anneal from start to end as pct goes from 0.0 to 1.0."""
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def _annealing_linear(start, end, pct):
    """Linearly anneal from start to end as pct goes from 0.0 to 1.0."""
    return (end - start) * pct + start


class OneCycleLR(LRScheduler):
    """The 1cycle policy, as torch's, to the bit, momentum (or Adam's beta1)
    cycled inversely (not chainable: the lr is computed from the groups'
    initial_lr, max_lr and min_lr). Step total_steps is torch's: the last
    phase carried on past its end; stepping beyond raises as torch.

    Where torch divides by zero for a phase of no length, these give a value:
    with pct_start * total_steps = 1 (an empty first phase) step 0 has the
    initial lr; with an empty last phase (pct_start = 1) step total_steps keeps
    the lr and momentum of step total_steps - 1. The annealing function is
    kept by name (_anneal_func_type, as torch >= 2.0), not as a bound method,
    so that the state_dict does not hold the scheduler. max_lr finite >= 0,
    pct_start a number in [0, 1], div_factor and final_div_factor finite > 0."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25., final_div_factor=1e4, three_phase=False, last_epoch=-1, verbose=False):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is None and epochs is None and steps_per_epoch is None:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        elif total_steps is not None:
            if not isinstance(total_steps, int) or total_steps <= 0:
                raise ValueError("Expected positive integer total_steps, but got {}".format(total_steps))
            self.total_steps = total_steps
        else:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError("Expected positive integer epochs, but got {}".format(epochs))
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError("Expected positive integer steps_per_epoch, but got {}".format(steps_per_epoch))
            self.total_steps = epochs * steps_per_epoch
        if not isinstance(pct_start, Real) or isinstance(pct_start, bool) or not 0 <= pct_start <= 1:
            raise ValueError("Expected float between 0 and 1 pct_start, but got {}".format(pct_start))
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError("anneal_strategy must by one of 'cos' or 'linear', instead got {}".format(
                anneal_strategy))
        _real("OneCycleLR", "div_factor", div_factor, 0, strict=True)
        _real("OneCycleLR", "final_div_factor", final_div_factor, 0, strict=True)
        max_lrs = _format_param("max_lr", self.optimizer, max_lr)
        for i, v in enumerate(max_lrs):
            _real("OneCycleLR", "max_lr[%d]" % i if isinstance(max_lr, (list, tuple)) else "max_lr", v, 0)
        if cycle_momentum:
            use_beta1 = _momentum_key(optimizer)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
        if three_phase:
            self._schedule_phases = [
                {"end_step": float(pct_start * self.total_steps) - 1, "start_lr": "initial_lr",
                 "end_lr": "max_lr", "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": float(2 * pct_start * self.total_steps) - 2, "start_lr": "max_lr",
                 "end_lr": "initial_lr", "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
                {"end_step": self.total_steps - 1, "start_lr": "initial_lr", "end_lr": "min_lr",
                 "start_momentum": "max_momentum", "end_momentum": "max_momentum"},
            ]
        else:
            self._schedule_phases = [
                {"end_step": float(pct_start * self.total_steps) - 1, "start_lr": "initial_lr",
                 "end_lr": "max_lr", "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": self.total_steps - 1, "start_lr": "max_lr", "end_lr": "min_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
            ]
        self._anneal_func_type = anneal_strategy
        if last_epoch == -1:
            for idx, group in enumerate(self.optimizer.param_groups):
                group["initial_lr"] = max_lrs[idx] / div_factor
                group["max_lr"] = max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if self.cycle_momentum:
            self.use_beta1 = use_beta1
            if last_epoch == -1:
                for m_momentum, b_momentum, group in zip(max_momentums, base_momentums, optimizer.param_groups):
                    _set_momentum(group, use_beta1, m_momentum)
                    group["max_momentum"] = m_momentum
                    group["base_momentum"] = b_momentum
        super().__init__(optimizer, last_epoch, verbose)

    def _anneal_func(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return _annealing_cos(start, end, pct)
        return _annealing_linear(start, end, pct)

    def _phase(self, step_num):
        """(phase, pct) of step_num, as torch's loop; a phase of no length
        (where torch divides by zero) is at its start, or, at step
        total_steps, at step total_steps - 1."""
        start_step = 0
        for i, phase in enumerate(self._schedule_phases):
            end_step = phase["end_step"]
            if step_num <= end_step or i == len(self._schedule_phases) - 1:
                if end_step == start_step:
                    if step_num >= self.total_steps:
                        return self._phase(self.total_steps - 1)
                    return phase, 0.0
                return phase, (step_num - start_step) / (end_step - start_step)
            start_step = phase["end_step"]

    def get_lr(self):
        _warn_get_lr(self)
        lrs = []
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError("Tried to step {} times. The specified number of total steps is {}".format(
                step_num + 1, self.total_steps))
        for group in self.optimizer.param_groups:
            phase, pct = self._phase(step_num)
            computed_lr = self._anneal_func(group[phase["start_lr"]], group[phase["end_lr"]], pct)
            if self.cycle_momentum:
                computed_momentum = self._anneal_func(group[phase["start_momentum"]], group[phase["end_momentum"]],
                                                      pct)
            lrs.append(computed_lr)
            if self.cycle_momentum:
                _set_momentum(group, self.use_beta1, computed_momentum)
        return lrs

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        fn = state.pop("anneal_func", None)  # torch 1.13 keeps a bound method of its own scheduler
        if fn is not None and "_anneal_func_type" not in state:
            state["_anneal_func_type"] = "linear" if "linear" in getattr(fn, "__name__", "") else "cos"
        super().load_state_dict(state)


# ---- Composition ---------------------------------------------------------------------------


def _refuse(who, idx, scheduler, why):
    raise TypeError("{}: schedulers[{}] is a {}, {}".format(who, idx, type(scheduler).__name__, why))


_PLATEAU = "whose step takes a metric, which {} does not pass; step it yourself"


class SequentialLR(LRScheduler):
    """schedulers[0] until milestones[0], then schedulers[1] restarted with
    step(0) (its closed form at step 0), ... as torch's. Refused up front,
    where torch fails later: ReduceLROnPlateau, and a ChainedScheduler or
    SequentialLR anywhere SequentialLR would have to restart it."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1, verbose=False):
        for scheduler_idx in range(len(schedulers)):
            if schedulers[scheduler_idx].optimizer != optimizer:
                raise ValueError(
                    "Sequential Schedulers expects all schedulers to belong to the same optimizer, but "
                    f"got schedulers at index {scheduler_idx} to be different than the optimizer passed in."
                )
            if schedulers[scheduler_idx].optimizer != schedulers[0].optimizer:
                raise ValueError(
                    "Sequential Schedulers expects all schedulers to belong to the same optimizer, but "
                    f"got schedulers at index {0} and {scheduler_idx} to be different."
                )
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more "
                "than the number of milestone points, but got number of schedulers {} and the "
                "number of milestones to be equal to {}".format(len(schedulers), len(milestones))
            )
        for idx, s in enumerate(schedulers):
            if isinstance(s, _torch_lr_scheduler.ReduceLROnPlateau):
                _refuse("SequentialLR", idx, s, _PLATEAU.format("SequentialLR"))
            if isinstance(s, (ChainedScheduler, _torch_lr_scheduler.ChainedScheduler)):
                _refuse("SequentialLR", idx, s, "which SequentialLR cannot restart (it has no last_epoch)")
            if idx > 0 and isinstance(s, (SequentialLR, _torch_lr_scheduler.SequentialLR)):
                _refuse("SequentialLR", idx, s, "which SequentialLR cannot restart at its milestone (its step() "
                        "takes no epoch); only schedulers[0] may be a SequentialLR")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for scheduler in self._schedulers:
            scheduler.last_epoch -= 1
        self._schedulers[0]._initial_step()
        self._last_lr = schedulers[0].get_last_lr()

    def step(self):
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler.step(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self):
        """Every attribute but the optimizer, and the schedulers' state_dicts."""
        state_dict = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "_schedulers")}
        state_dict["_schedulers"] = [None] * len(self._schedulers)
        for idx, s in enumerate(self._schedulers):
            state_dict["_schedulers"][idx] = s.state_dict()
        return state_dict

    def load_state_dict(self, state_dict):
        _schedulers = state_dict.pop("_schedulers")
        self.__dict__.update(state_dict)
        state_dict["_schedulers"] = _schedulers
        for idx, s in enumerate(_schedulers):
            self._schedulers[idx].load_state_dict(s)


class ChainedScheduler(LRScheduler):
    """Steps every scheduler in turn with one step(), as torch's: the
    chainable ones compose (each rescales the lr the previous one wrote), a
    closed-form one (LambdaLR, CyclicLR, OneCycleLR, the warm restarts)
    overwrites what the ones before it wrote. ReduceLROnPlateau is refused
    (its step needs a metric)."""

    def __init__(self, schedulers):
        for scheduler_idx in range(1, len(schedulers)):
            if schedulers[scheduler_idx].optimizer != schedulers[0].optimizer:
                raise ValueError(
                    "ChainedScheduler expects all schedulers to belong to the same optimizer, but "
                    "got schedulers at index {} and {} to be different".format(0, scheduler_idx)
                )
        for idx, s in enumerate(schedulers):
            if isinstance(s, _torch_lr_scheduler.ReduceLROnPlateau):
                _refuse("ChainedScheduler", idx, s, _PLATEAU.format("ChainedScheduler"))
        self._schedulers = list(schedulers)
        self.optimizer = schedulers[0].optimizer
        self._last_lr = [group["lr"] for group in self._schedulers[-1].optimizer.param_groups]

    def step(self):
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = [group["lr"] for group in self._schedulers[-1].optimizer.param_groups]

    state_dict = SequentialLR.state_dict
    load_state_dict = SequentialLR.load_state_dict


# ---- Metric-driven ----------------------------------------------------------------------


class ReduceLROnPlateau(_torch_lr_scheduler.ReduceLROnPlateau):
    """Reduce the lr by `factor` when a metric has stopped improving for
    `patience` epochs; torch's class and behaviour (it multiplies the group's
    lr: it stacks with the others as torch's does). Also has get_last_lr()
    from construction on (torch 1.13 sets _last_lr at the first step only)."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0, eps=1e-8, verbose=False):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError("expected {} min_lrs, got {}".format(len(optimizer.param_groups), len(min_lr)))
            self.min_lrs = list(min_lr)
        else:
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.cooldown_counter = 0
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.best = None
        self.num_bad_epochs = None
        self.mode_worse = None
        self.eps = eps
        self.last_epoch = 0
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def _reset(self):
        """Resets num_bad_epochs counter and cooldown counter."""
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics, epoch=None):
        current = float(metrics)  # a 0-dim tensor too
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning)
        self.last_epoch = epoch
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self, epoch):
        for i, param_group in enumerate(self.optimizer.param_groups):
            old_lr = float(param_group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                param_group["lr"] = new_lr
                if self.verbose:
                    epoch_str = ("%.2f" if isinstance(epoch, float) else "%.5d") % epoch
                    print("Epoch {}: reducing learning rate of group {} to {:.4e}.".format(epoch_str, i, new_lr))

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1. - self.threshold)
        elif self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        elif self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.)
        else:
            return a > best + self.threshold

    def _init_is_better(self, mode, threshold, threshold_mode):
        if mode not in {"min", "max"}:
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def get_last_lr(self):
        return self._last_lr

    def state_dict(self):
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)
