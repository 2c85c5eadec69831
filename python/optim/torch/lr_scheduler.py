"""Learning-rate schedulers with torch.optim.lr_scheduler's classes, arguments
and behaviour, computed by liboptim's closed-form schedules.

Use them as torch's: construct with an optimizer (an ``optim.torch`` or a
``torch.optim`` one: only ``param_groups[i]['lr']``, ``'initial_lr'`` and the
``'momentum'``/``'betas'`` keys are read and written), call ``step()`` after
each ``optimizer.step()``, read ``get_last_lr()``, save ``state_dict()``.

    from optim.torch.lr_scheduler import WarmupCosine
    sched = WarmupCosine(opt, warmup_steps=500, total_steps=10000, eta_min=1e-5)
    for batch in data:
        ...
        opt.step()
        sched.step()

The one deliberate difference from torch: the lr of step t is a closed form
of t and the group's initial lr (``base_lrs``), evaluated by the C library
(include/optim_schedule.h). torch's schedulers are "chainable": each step
rescales whatever lr the group has now, so if you edit ``group['lr']`` by hand
between steps, torch's next values follow your edit, and these do not (the
next step writes the scheduled value again). To change the schedule's scale,
change ``base_lrs`` (or ``group['initial_lr']`` before constructing). The
closed forms also do not drift: torch's recursive forms accumulate rounding
(up to ~1e-13 relative over thousands of steps; more for CosineAnnealingLR near
its minimum).

Other differences, each documented at its class: CyclicLR also cycles Adam's
beta1 (as torch >= 2.0 does) and takes whole step sizes only; ChainedScheduler
composes the closed forms (the same values as torch for chainable
multiplicative schedulers); where torch divides by zero (an empty OneCycleLR
phase, LinearLR's start_factor=0) these give a value; arguments are validated
up front by the library (a ValueError naming the argument).

ReduceLROnPlateau is pure Python: its lr depends on the metrics it is fed, not
on the step, so there is no closed form for the C library to evaluate.
LambdaLR and MultiplicativeLR are pure Python too: their factor is a Python
callable. docs/SCHEDULES.md has the formula and a plot of every schedule.
"""
import math
import types
import warnings
import weakref
from bisect import bisect_right
from collections import Counter
from functools import wraps

from .._schedule import Schedule, _int64

__all__ = [
    "LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
    "ExponentialLR", "SequentialLR", "CosineAnnealingLR", "ChainedScheduler", "ReduceLROnPlateau", "CyclicLR",
    "CosineAnnealingWarmRestarts", "OneCycleLR", "PolynomialLR", "WarmupCosine", "WarmupStableDecay",
]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)


def _check_optimizer(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "lr" in g for g in groups):
        raise TypeError("{} is not an Optimizer (no param_groups with an 'lr')".format(type(optimizer).__name__))


def _with_counter(optimizer):
    """Count optimizer.step() calls, as torch does, to warn when the scheduler
    is stepped first. The wrapper is torch's, so torch's and these schedulers
    share it. Returns False if step cannot be wrapped (not a bound method)."""
    method = optimizer.step
    if getattr(method, "_with_counter", False):
        return True
    if not hasattr(method, "__func__") or not hasattr(method, "__self__"):
        return False
    instance_ref = weakref.ref(method.__self__)
    func = method.__func__
    cls = instance_ref().__class__
    del method

    @wraps(func)
    def wrapper(*args, **kwargs):
        instance = instance_ref()
        instance._step_count += 1
        wrapped = func.__get__(instance, cls)
        return wrapped(*args, **kwargs)

    wrapper._with_counter = True
    try:
        optimizer.step = wrapper
    except AttributeError:
        return False
    return True


def _format_param(name, optimizer, param):
    """One value per param group (torch's _format_param)."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError("expected {} values for {}, got {}".format(len(optimizer.param_groups), name, len(param)))
        return list(param)
    return [param] * len(optimizer.param_groups)


class _enable_get_lr_call(object):
    def __init__(self, o):
        self.o = o

    def __enter__(self):
        self.o._get_lr_called_within_step = True
        return self

    def __exit__(self, type, value, traceback):
        self.o._get_lr_called_within_step = False


class LRScheduler(object):
    """Base class: torch's _LRScheduler with closed forms.

    A subclass sets its arguments as attributes, builds its C schedules in
    ``_build()`` (called again after load_state_dict) and evaluates group i at
    step t in ``_lr(i, t, base)``; ``base`` is the group's base lr (None:
    ``base_lrs[i]``), given by ChainedScheduler to compose schedules."""

    # Attributes that are not state: the optimizer, and C objects rebuilt by _build().
    _not_state = ("optimizer", "_c")

    def __init__(self, optimizer, last_epoch=-1, verbose=False):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        # Validate (and build the C schedules) before touching the optimizer.
        self._build()
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError("param 'initial_lr' is not specified "
                                   "in param_groups[{}] when resuming an optimizer".format(i))
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._counted = _with_counter(optimizer)
        self.verbose = verbose
        self._get_lr_called_within_step = False
        self._initial_step()

    # ---- to implement ----
    def _build(self):
        """Create self._c, the C schedules, from the attributes."""
        raise NotImplementedError

    def _lr(self, i, t, base=None):
        """The lr of group i at step t."""
        c = self._c[i] if len(self._c) > 1 else self._c[0]
        return c.lr(self.base_lrs[i] if base is None else base, t)

    def _side_effects(self, t):
        """Anything else step t sets in the groups (momentum cycling)."""

    # ---- torch's interface ----
    def _initial_step(self):
        """Initialize step counts and performs a step"""
        self.optimizer._step_count = 0
        self._step_count = 0
        self.step()

    def state_dict(self):
        """The scheduler's state as a dict: every attribute but the optimizer
        (and the C schedules, which load_state_dict rebuilds)."""
        return {key: value for key, value in self.__dict__.items() if key not in self._not_state}

    def load_state_dict(self, state_dict):
        """Load a state from state_dict(). The schedule is rebuilt from the
        loaded arguments."""
        self.__dict__.update(state_dict)
        self._build()

    def __getstate__(self):
        return {key: value for key, value in self.__dict__.items() if key != "_c"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build()

    def get_last_lr(self):
        """Return last computed learning rate by current scheduler."""
        return self._last_lr

    def _ngroups(self):
        return min(len(self.base_lrs), len(self.optimizer.param_groups))

    def _lrs(self, t, bases=None):
        return [self._lr(i, t, None if bases is None else bases[i]) for i in range(self._ngroups())]

    def get_lr(self):
        """The lrs of step last_epoch (and, for OneCycleLR/CyclicLR, set the
        momentum of that step, as torch does)."""
        if not self._get_lr_called_within_step:
            warnings.warn("To get the last learning rate computed by the scheduler, "
                          "please use `get_last_lr()`.", UserWarning)
        t = _int64("last_epoch", self.last_epoch)
        values = self._lrs(t)
        self._side_effects(t)
        return values

    def _get_closed_form_lr(self):
        return self._lrs(_int64("last_epoch", self.last_epoch))

    def print_lr(self, is_verbose, group, lr, epoch=None):
        """Display the current learning rate."""
        if is_verbose:
            if epoch is None:
                print("Adjusting learning rate of group {} to {:.4e}.".format(group, lr))
            else:
                epoch_str = ("%.2f" if isinstance(epoch, float) else "%.5d") % epoch
                print("Epoch {}: adjusting learning rate of group {} to {:.4e}.".format(epoch_str, group, lr))

    def _write(self, values, epoch=None):
        for i, (param_group, lr) in enumerate(zip(self.optimizer.param_groups, values)):
            param_group["lr"] = lr
            self.print_lr(self.verbose, i, lr, epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _seek(self, t, bases=None, epoch=None):
        """Go to step t: set last_epoch, write the lrs (of `bases` instead of
        base_lrs when given) and the momentum."""
        t = _int64("epoch", t)
        with _enable_get_lr_call(self):
            self.last_epoch = t
            values = self._lrs(t, bases)
            self._side_effects(t)
        self._write(values, epoch)

    def step(self, epoch=None):
        """Advance one step (or, deprecated as in torch, go to step `epoch`)."""
        if self._step_count == 1 and self._counted:
            if not hasattr(self.optimizer.step, "_with_counter"):
                warnings.warn("Seems like `optimizer.step()` has been overridden after learning rate scheduler "
                              "initialization. Please, make sure to call `optimizer.step()` before "
                              "`lr_scheduler.step()`. See more details at "
                              "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate", UserWarning)
            elif self.optimizer._step_count < 1:
                warnings.warn("Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
                              "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
                              "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
                              "will result in PyTorch skipping the first value of the learning rate schedule. "
                              "See more details at "
                              "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate", UserWarning)
        self._step_count += 1
        if epoch is None:
            self._seek(self.last_epoch + 1)
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning)
            self._seek(epoch, epoch=epoch)


_LRScheduler = LRScheduler


# ---- Python-only: the factor is a Python callable ---------------------------------


def _lambdas_state(lr_lambdas):
    # torch saves callable objects' __dict__, not functions or lambdas.
    return [None if isinstance(fn, types.FunctionType) else fn.__dict__.copy() for fn in lr_lambdas]


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(t). Evaluated in Python (the factor is a
    Python callable); otherwise as torch's."""

    _not_state = ("optimizer", "_c", "lr_lambdas")

    def __init__(self, optimizer, lr_lambda, last_epoch=-1, verbose=False):
        _check_optimizer(optimizer)
        if not isinstance(lr_lambda, (list, tuple)):
            self.lr_lambdas = [lr_lambda] * len(optimizer.param_groups)
        else:
            if len(lr_lambda) != len(optimizer.param_groups):
                raise ValueError("Expected {} lr_lambdas, but got {}".format(len(optimizer.param_groups),
                                                                            len(lr_lambda)))
            self.lr_lambdas = list(lr_lambda)
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = []

    def _lr(self, i, t, base=None):
        return (self.base_lrs[i] if base is None else base) * self.lr_lambdas[i](t)

    def state_dict(self):
        state = super().state_dict()
        state["lr_lambdas"] = _lambdas_state(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        lr_lambdas = state.pop("lr_lambdas")
        super().load_state_dict(state)
        for idx, fn in enumerate(lr_lambdas):
            if fn is not None:
                self.lr_lambdas[idx].__dict__.update(fn)


class MultiplicativeLR(LambdaLR):
    """lr = base_lr * lr_lambda(1) * ... * lr_lambda(t): torch's recursive
    product in closed form, evaluated in Python (the factor is a Python
    callable). Stepping one at a time calls each lr_lambda once per step, as
    torch does; a jump (step(epoch)) recomputes the product."""

    _not_state = ("optimizer", "_c", "lr_lambdas", "_products")

    def _build(self):
        self._c = []
        self._products = {}

    def _lr(self, i, t, base=None):
        t0, prod = self._products.get(i, (0, 1.0))
        if t < t0:
            t0, prod = 0, 1.0
        while t0 < t:
            t0 += 1
            prod *= self.lr_lambdas[i](t0)
        self._products[i] = (t0, prod)
        return (self.base_lrs[i] if base is None else base) * prod


# ---- Multiplicative schedules ------------------------------------------------------


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1, verbose=False):
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.step(self.step_size, self.gamma)]


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (number of milestones <= t); a milestone listed
    twice counts twice."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1, verbose=False):
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.multistep(sorted(self.milestones.elements()), self.gamma)]


class ConstantLR(LRScheduler):
    """lr = base_lr * factor for t < total_iters, then base_lr. total_iters
    must be >= 1 (torch's forms disagree with each other at 0)."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1, verbose=False):
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.constant(self.factor, self.total_iters)]


class LinearLR(LRScheduler):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters).
    start_factor = 0 works (torch divides by it)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1,
                 verbose=False):
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.linear(self.start_factor, self.end_factor, self.total_iters)]


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** t."""

    def __init__(self, optimizer, gamma, last_epoch=-1, verbose=False):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.exponential(self.gamma)]


class PolynomialLR(LRScheduler):
    """lr = base_lr * (1 - min(t, total_iters) / total_iters) ** power."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1, verbose=False):
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.polynomial(self.total_iters, self.power)]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2:
    periodic after T_max (back up to base_lr at 2 T_max), as torch's. For a
    cosine that stays at eta_min, see WarmupCosine."""

    def __init__(self, optimizer, T_max, eta_min=0, last_epoch=-1, verbose=False):
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.cosine(self.T_max, self.eta_min)]


def _restart_position(t, t_0, t_mult):
    """(T_cur, T_i) of step t in SGDR's cycles t_0, t_0 * t_mult, ... (exact integers)."""
    if t_mult == 1:
        return t % t_0, t_0
    t_i = t_0
    while t >= t_i:
        t -= t_i
        t_i *= t_mult
    return t, t_i


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine from base_lr to eta_min over T_0 steps, restarted with
    cycles T_mult times longer each time. T_cur and T_i are kept as torch
    keeps them. ``step(epoch)`` with a fractional epoch (torch's
    ``scheduler.step(epoch + i / iters)``) is evaluated in Python with torch's
    formula; integer steps by the library."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0, last_epoch=-1, verbose=False):
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError("Expected positive integer T_0, but got {}".format(T_0))
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError("Expected integer T_mult >= 1, but got {}".format(T_mult))
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.cosine_restarts(self.T_0, self.T_mult, self.eta_min)]

    def _fractional(self):
        return isinstance(self.T_cur, float) and not self.T_cur.is_integer()

    def _lr(self, i, t, base=None):
        b = self.base_lrs[i] if base is None else base
        if self._fractional():
            return self.eta_min + (b - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
        return self._c[0].lr(b, t)

    def _seek(self, t, bases=None, epoch=None):
        # A whole step: T_cur and T_i exactly, in integers (torch's log-based
        # formula for step(epoch) can land in the wrong cycle at a restart).
        self.T_cur, self.T_i = _restart_position(_int64("epoch", t), self.T_0, self.T_mult)
        super()._seek(t, bases, t if epoch is None else epoch)

    def step(self, epoch=None):
        """Step once, or go to `epoch` (an int, or a float for fractions of an
        epoch, as torch allows)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            if not self._fractional():
                self._seek(self.last_epoch + 1)
                return
            # After a fractional epoch torch goes on from T_cur + 1.
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur - self.T_i
                self.T_i = self.T_i * self.T_mult
            LRScheduler._seek(self, epoch, epoch=epoch)
            return
        if epoch < 0:
            raise ValueError("Expected non-negative epoch, but got {}".format(epoch))
        if isinstance(epoch, float) and not epoch.is_integer():
            # torch's formula for a fractional epoch.
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
            LRScheduler._seek(self, math.floor(epoch), epoch=epoch)
        else:
            self._seek(int(epoch), epoch=epoch)


# ---- Absolute schedules: OneCycle, Cyclic --------------------------------------------


def _anneal_cos(start, end, pct):
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def _anneal_linear(start, end, pct):
    return (end - start) * pct + start


class OneCycleLR(LRScheduler):
    """The 1cycle policy, with torch's arguments and phases, momentum (or
    Adam's beta1) cycled inversely to the lr.

    After the end, as torch: step total_steps is the last phase's formula
    carried on to pct > 1 (the linear anneal goes below its minimum, often
    below 0, and the momentum above max_momentum), and stepping beyond raises.
    Where torch divides by zero for a phase of no length: with pct_start *
    total_steps = 1 (an empty first phase) step 0 has the initial lr; with an
    empty last phase (pct_start = 1) step total_steps keeps the lr and
    momentum of step total_steps - 1."""

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
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError("anneal_strategy must by one of 'cos' or 'linear', instead got {}".format(
                anneal_strategy))
        self.anneal_strategy = anneal_strategy
        self.pct_start = pct_start
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.three_phase = bool(three_phase)
        self.max_lrs = _format_param("max_lr", optimizer, max_lr)
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
        self._build()  # validates every argument before the groups change
        if last_epoch == -1:
            for idx, group in enumerate(optimizer.param_groups):
                group["initial_lr"] = self.max_lrs[idx] / div_factor
                group["max_lr"] = self.max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if self.cycle_momentum:
            defaults = getattr(optimizer, "defaults", {})
            if "momentum" not in defaults and "betas" not in defaults:
                raise ValueError("optimizer must support momentum with `cycle_momentum` option enabled")
            self.use_beta1 = "betas" in defaults
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for m_momentum, b_momentum, group in zip(max_momentums, base_momentums, optimizer.param_groups):
                    if self.use_beta1:
                        group["betas"] = (m_momentum, *group["betas"][1:])
                    else:
                        group["momentum"] = m_momentum
                    group["max_momentum"] = m_momentum
                    group["base_momentum"] = b_momentum
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.one_cycle(m, self.total_steps, self.pct_start, self.anneal_strategy == "cos",
                                      self.div_factor, self.final_div_factor, self.three_phase)
                   for m in self.max_lrs]

    def _lr(self, i, t, base=None):
        return self._c[i].lr(0.0, t)  # absolute lrs: the base is not used

    def _lrs(self, t, bases=None):
        if t > self.total_steps:
            raise ValueError("Tried to step {} times. The specified number of total steps is {}".format(
                t + 1, self.total_steps))
        return super()._lrs(t, bases)

    def _momentum(self, group, t):
        """torch's momentum of step t <= total_steps; as the C schedule's lr, an
        empty phase is its start (step 0), or the value of the step before (at
        total_steps), where torch divides by zero."""
        anneal = _anneal_cos if self.anneal_strategy == "cos" else _anneal_linear
        start_step = 0
        for i, phase in enumerate(self._schedule_phases):
            end_step = phase["end_step"]
            if t <= end_step or i == len(self._schedule_phases) - 1:
                if end_step == start_step:
                    if t >= self.total_steps:
                        return self._momentum(group, self.total_steps - 1)
                    pct = 0.0
                else:
                    pct = (t - start_step) / (end_step - start_step)
                return anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
            start_step = phase["end_step"]

    def _side_effects(self, t):
        if not self.cycle_momentum:
            return
        for group in self.optimizer.param_groups[:self._ngroups()]:
            m = self._momentum(group, t)
            if self.use_beta1:
                group["betas"] = (m, *group["betas"][1:])
            else:
                group["momentum"] = m


def _whole_steps(name, value):
    """A CyclicLR step size as an int: ints and integral floats (torch's
    float(step_size)); a fractional one is refused, naming it."""
    if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
        raise ValueError("CyclicLR: {} = {!r} is not a whole number of steps: optim's C schedule places the "
                         "cycle in integer steps, so fractional step sizes (which torch.optim.lr_scheduler.CyclicLR "
                         "accepts) are not supported; round it to an integer".format(name, value))
    return _int64(name, value)


class CyclicLR(LRScheduler):
    """Cyclical learning rates (triangular, triangular2, exp_range), momentum
    cycled inversely, with torch's arguments. The lr and momentum come from the
    library, except with a custom scale_fn (a Python callable), evaluated in
    Python with torch's formula. step_size_down=0 is torch's sawtooth (no
    descent: up over step_size_up steps, then back to base_lr at once).
    step_size_up/down must be whole numbers of steps (ints, or floats such as
    2000.0): torch also takes fractional ones (2.5), which the C closed form,
    exact in integer steps, does not represent, so they raise ValueError.
    Unlike torch 1.13 (like torch >= 2.0), cycle_momentum also works with
    Adam-style optimizers by cycling beta1."""

    _not_state = ("optimizer", "_c", "_cm", "_scale_fn_custom")

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None, mode="triangular",
                 gamma=1., scale_fn=None, scale_mode="cycle", cycle_momentum=True, base_momentum=0.8,
                 max_momentum=0.9, last_epoch=-1, verbose=False):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        self.max_lrs = _format_param("max_lr", optimizer, max_lr)
        self.step_size_up = _whole_steps("step_size_up", step_size_up)
        self.step_size_down = _whole_steps("step_size_down", step_size_down) if step_size_down is not None else None
        up = float(self.step_size_up)
        down = float(self.step_size_down) if self.step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size if self.total_size > 0 else 0.0  # _build rejects 0
        if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        if scale_fn is None:
            self.scale_mode = "iterations" if mode == "exp_range" else "cycle"
        else:
            self.scale_mode = scale_mode
        self._cyclic_base_lrs = base_lrs
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            defaults = getattr(optimizer, "defaults", {})
            if "momentum" not in defaults and "betas" not in defaults:
                raise ValueError("optimizer must support momentum with `cycle_momentum` option enabled")
            self.use_beta1 = "betas" in defaults
            self.base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            self.max_momentums = _format_param("max_momentum", optimizer, max_momentum)
        self._build()  # validates every argument before the groups change
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                group["lr"] = lr
            if cycle_momentum:
                for momentum, group in zip(self.base_momentums, optimizer.param_groups):
                    if self.use_beta1:
                        group["betas"] = (momentum, *group["betas"][1:])
                    else:
                        group["momentum"] = momentum
        if cycle_momentum:
            self.base_momentums = [group["betas"][0] if self.use_beta1 else group["momentum"]
                                   for group in optimizer.param_groups]
        self._build()  # with the momenta read back from the groups, as torch does
        super().__init__(optimizer, last_epoch, verbose)
        self.base_lrs = base_lrs

    def _build(self):
        # Always explicit: None is as many steps down as up, 0 none (a sawtooth).
        down = self.step_size_down if self.step_size_down is not None else self.step_size_up
        custom = self._scale_fn_custom is not None
        # With a custom scale_fn the lr is computed in Python, but the library
        # still checks the arguments (the mode is then not used).
        mode = "triangular" if custom else self.mode
        gamma = self.gamma if mode == "exp_range" else 1.0
        self._c = [Schedule.cyclic(b, m, self.step_size_up, down, mode, gamma)
                   for b, m in zip(self._cyclic_base_lrs, self.max_lrs)]
        self._cm = []
        if self.cycle_momentum and not custom:
            # torch's momentum max_m - (max_m - base_m) * h * scale is the lr formula
            # base + (max - base) * h * scale with base = max_m, max = base_m, bit for bit.
            self._cm = [Schedule.cyclic(mx, b, self.step_size_up, down, self.mode, gamma)
                        for b, mx in zip(self.base_momentums, self.max_momentums)]

    def scale_fn(self, x):
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.
        if self.mode == "triangular2":
            return 1 / (2. ** (x - 1))
        return self.gamma ** x

    def _py(self, low, high, t, inverse=False):
        """torch's CyclicLR formula, for a custom scale_fn."""
        cycle = math.floor(1 + t / self.total_size)
        x = 1. + t / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        height = (high - low) * scale_factor
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else t)
        return high - height * scale if inverse else low + height * scale

    def _lr(self, i, t, base=None):
        if self._scale_fn_custom is not None:
            return self._py(self._cyclic_base_lrs[i], self.max_lrs[i], t)
        return self._c[i].lr(0.0, t)  # absolute lrs: the base is not used

    def _side_effects(self, t):
        if not self.cycle_momentum:
            return
        for i, group in enumerate(self.optimizer.param_groups[:self._ngroups()]):
            if self._scale_fn_custom is not None:
                m = self._py(self.base_momentums[i], self.max_momentums[i], t, inverse=True)
            else:
                m = self._cm[i].lr(0.0, t)
            if self.use_beta1:
                group["betas"] = (m, *group["betas"][1:])
            else:
                group["momentum"] = m

    def state_dict(self):
        state = super().state_dict()
        state["_scale_fn_custom"] = None if self._scale_fn_custom is None or isinstance(
            self._scale_fn_custom, types.FunctionType) else self._scale_fn_custom.__dict__.copy()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        fn_state = state.pop("_scale_fn_custom", None)
        super().load_state_dict(state)
        if fn_state is not None and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(fn_state)


# ---- Warm-up + cosine, warm-up-stable-decay (not in torch) ------------------------------


class WarmupCosine(LRScheduler):
    """Linear warm-up to the group's lr, then cosine decay to eta_min at step
    total_steps, then eta_min:
        lr = base_lr * (t + 1) / warmup_steps                                  t < warmup_steps
        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * k / K)) / 2         k = t - warmup_steps < K
        lr = eta_min                                                           t >= total_steps
    with K = total_steps - warmup_steps (llm.c's schedule)."""

    def __init__(self, optimizer, warmup_steps, total_steps, eta_min=0.0, last_epoch=-1, verbose=False):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        w, total = _int64("warmup_steps", self.warmup_steps), _int64("total_steps", self.total_steps)
        if total < w:
            raise ValueError("total_steps = {} must be >= warmup_steps = {}".format(total, w))
        self._c = [Schedule.wsd(w, 0, total - w, self.eta_min, "cosine")]


class WarmupStableDecay(LRScheduler):
    """Warm-up, stable, decay (WSD): linear warm-up to the group's lr over
    warmup_steps, the lr for stable_steps, then down to eta_min over
    decay_steps (decay="linear" or "cosine"), then eta_min for ever."""

    def __init__(self, optimizer, warmup_steps, stable_steps, decay_steps, eta_min=0.0, decay="linear",
                 last_epoch=-1, verbose=False):
        self.warmup_steps = warmup_steps
        self.stable_steps = stable_steps
        self.decay_steps = decay_steps
        self.eta_min = eta_min
        self.decay = decay
        super().__init__(optimizer, last_epoch, verbose)

    def _build(self):
        self._c = [Schedule.wsd(self.warmup_steps, self.stable_steps, self.decay_steps, self.eta_min, self.decay)]


# ---- Composition -------------------------------------------------------------------------


def _check_composable(who, schedulers):
    for idx, s in enumerate(schedulers):
        if isinstance(s, (ChainedScheduler, ReduceLROnPlateau)) or not isinstance(s, LRScheduler):
            raise TypeError("{}: schedulers[{}] is a {}, which cannot be composed (it has no lr as a function of "
                            "the step); pass optim.torch.lr_scheduler schedulers".format(who, idx, type(s).__name__))


class SequentialLR(LRScheduler):
    """schedulers[0] until milestones[0], then schedulers[1] from its own step
    0, ... as torch's. Milestones must increase strictly from 1 (torch gives
    odd results otherwise: it starts schedulers[0] at step 0 whatever they say)."""

    _not_state = ("optimizer", "_c", "_schedulers")

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1, verbose=False):
        for scheduler_idx in range(len(schedulers)):
            if schedulers[scheduler_idx].optimizer != optimizer:
                raise ValueError(
                    "Sequential Schedulers expects all schedulers to belong to the same optimizer, but "
                    f"got schedulers at index {scheduler_idx} to be different than the optimizer passed in."
                )
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more "
                "than the number of milestone points, but got number of schedulers {} and the "
                "number of milestones to be equal to {}".format(len(schedulers), len(milestones))
            )
        _check_composable("SequentialLR", schedulers)
        prev = 0
        for i, m in enumerate(milestones):
            m = _int64("milestones[%d]" % i, m)
            if m <= prev:
                raise ValueError("SequentialLR: milestones[{}] = {} must be >= {} (milestones increase strictly "
                                 "from 1)".format(i, m, prev + 1))
            prev = m
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        self.verbose = verbose
        self._c = []
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for scheduler in self._schedulers:
            scheduler.last_epoch -= 1
        self._schedulers[0]._initial_step()
        self._last_lr = self._schedulers[0].get_last_lr()

    def _build(self):
        self._c = []

    def _ngroups(self):
        return self._schedulers[0]._ngroups()

    def _at(self, t):
        idx = bisect_right(self._milestones, t)
        return self._schedulers[idx], t - (self._milestones[idx - 1] if idx > 0 else 0)

    def _lr(self, i, t, base=None):
        s, k = self._at(t)
        return s._lr(i, k, base)

    def _seek(self, t, bases=None, epoch=None):
        self.last_epoch = _int64("epoch", t)
        s, k = self._at(self.last_epoch)
        s._seek(k, bases)
        self._last_lr = s.get_last_lr()

    def step(self):
        self._seek(self.last_epoch + 1)

    def state_dict(self):
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        subs = state.pop("_schedulers")
        self.__dict__.update(state)
        for s, sd in zip(self._schedulers, subs):
            s.load_state_dict(sd)


class ChainedScheduler(LRScheduler):
    """Steps every scheduler in turn, each taking the lr the previous one
    produced as its base: lr = s_n(... s_1(base_lr, t_1) ..., t_n). For
    torch's chainable multiplicative schedulers (Step, MultiStep, Constant,
    Linear, Exponential, Polynomial, Multiplicative, and Cosine with
    eta_min = 0 up to T_max) that is the product of their factors, as torch
    computes. torch's closed-form schedulers (Lambda, restarts, OneCycle,
    Cyclic) overwrite the lr in its chain, and a cosine with eta_min adds:
    with those torch's chain gives other values (they are not chainable in
    torch's sense)."""

    _not_state = ("optimizer", "_c", "_schedulers")

    def __init__(self, schedulers):
        for scheduler_idx in range(1, len(schedulers)):
            if schedulers[scheduler_idx].optimizer != schedulers[0].optimizer:
                raise ValueError(
                    "ChainedScheduler expects all schedulers to belong to the same optimizer, but "
                    "got schedulers at index {} and {} to be different".format(0, scheduler_idx)
                )
        _check_composable("ChainedScheduler", schedulers)
        self._schedulers = list(schedulers)
        self.optimizer = schedulers[0].optimizer
        self._c = []
        # Each scheduler wrote its own closed form when it was built; the chain
        # starts from their composition at their current steps.
        self._chain([s.last_epoch for s in self._schedulers])

    def _build(self):
        self._c = []

    def _chain(self, steps):
        lrs = None
        for s, t in zip(self._schedulers, steps):
            s._seek(t, lrs)
            lrs = s.get_last_lr()
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def step(self):
        for s in self._schedulers:
            s._step_count = getattr(s, "_step_count", 0) + 1
        self._chain([s.last_epoch + 1 for s in self._schedulers])

    def state_dict(self):
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        subs = state.pop("_schedulers")
        self.__dict__.update(state)
        for s, sd in zip(self._schedulers, subs):
            s.load_state_dict(sd)


# ---- Metric-driven ----------------------------------------------------------------------


class ReduceLROnPlateau(object):
    """Reduce the lr by `factor` when a metric has stopped improving for
    `patience` epochs; torch's class and behaviour, in Python. Not a closed
    form: the lr depends on the metrics passed to step(), not on the step, so
    the C library has nothing to evaluate."""

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
        current = float(metrics)
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
