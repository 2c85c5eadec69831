"""The base of optim.torch.lr_scheduler: torch 1.13's _LRScheduler (what a
custom scheduler subclasses), its step counter on optimizer.step, and the
argument checks the classes share."""
import math
import warnings
import weakref
from functools import wraps
from numbers import Real

import torch.optim.lr_scheduler as _torch_lr_scheduler

__all__ = ["LRScheduler", "EPOCH_DEPRECATION_WARNING"]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)


# ---- Argument checks (beyond torch's own, which every class keeps) -----------------------


def _check_optimizer(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "lr" in g for g in groups):
        raise TypeError("{} is not an Optimizer (no param_groups with an 'lr')".format(type(optimizer).__name__))


def _real(who, name, value, low=None, strict=False):
    """value must be a finite real number, >= low (> low if strict)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        want = "a finite number"
        if low is not None:
            want += " %s %s" % (">" if strict else ">=", low)
        raise ValueError("{}: {} = {!r} must be {}".format(who, name, value, want))


def _whole(who, name, value, low):
    """value must be a whole number (an int, or a float such as 30.0) >= low."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and float(value).is_integer() and value >= low
    if not ok:
        raise ValueError("{}: {} = {!r} must be a whole number >= {}".format(who, name, value, low))


def _format_param(name, optimizer, param):
    """One value per param group (torch's _format_param)."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError("expected {} values for {}, got {}".format(len(optimizer.param_groups), name, len(param)))
        return param
    return [param] * len(optimizer.param_groups)


def _with_counter(method):
    """torch's wrapper of optimizer.step that counts its calls (so that step()
    can warn when the scheduler is stepped first); the same attribute, so
    torch's schedulers and these share it. A step that is not a bound method
    is left as it is (torch fails there)."""
    if getattr(method, "_with_counter", False):
        return method
    if not hasattr(method, "__func__") or not hasattr(method, "__self__"):
        return method
    instance_ref = weakref.ref(method.__self__)  # no cycle through the optimizer
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
    return wrapper


class _enable_get_lr_call(object):
    def __init__(self, o):
        self.o = o

    def __enter__(self):
        self.o._get_lr_called_within_step = True
        return self

    def __exit__(self, type, value, traceback):
        self.o._get_lr_called_within_step = False


def _warn_get_lr(scheduler):
    if not scheduler._get_lr_called_within_step:
        warnings.warn("To get the last learning rate computed by the scheduler, "
                      "please use `get_last_lr()`.", UserWarning)


# ---- The base class -----------------------------------------------------------------------


class LRScheduler(_torch_lr_scheduler._LRScheduler):
    """torch's _LRScheduler: subclass it and override get_lr() (the chainable
    form: the lrs of step self.last_epoch, usually from the groups' current
    'lr' or from self.base_lrs) and, optionally, _get_closed_form_lr() (used by
    the deprecated step(epoch)). Everything else behaves as torch's base
    class: initial_lr in the groups, base_lrs, last_epoch, _step_count, the
    warnings, verbose, get_last_lr, state_dict (every attribute but the
    optimizer). A subclass of torch's own class, so that code checking
    isinstance(s, torch.optim.lr_scheduler._LRScheduler) accepts these."""

    def __init__(self, optimizer, last_epoch=-1, verbose=False):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
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
        method = optimizer.step
        wrapped = _with_counter(method)
        if wrapped is not method:
            self.optimizer.step = wrapped
        del method, wrapped
        self.verbose = verbose
        self._initial_step()

    def _initial_step(self):
        """Initialize step counts and performs a step"""
        self.optimizer._step_count = 0
        self._step_count = 0
        self.step()

    def state_dict(self):
        """The state of the scheduler as a dict: every attribute but the
        optimizer."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        """Load the scheduler's state (from state_dict())."""
        self.__dict__.update(state_dict)

    def get_last_lr(self):
        """Return last computed learning rate by current scheduler."""
        return self._last_lr

    def get_lr(self):
        """The lrs of step self.last_epoch, in the chainable form: override it."""
        raise NotImplementedError("{} must override get_lr(): the learning rate of each param group at step "
                                  "self.last_epoch".format(type(self).__name__))

    def print_lr(self, is_verbose, group, lr, epoch=None):
        """Display the current learning rate."""
        if is_verbose:
            if epoch is None:
                print("Adjusting learning rate of group {} to {:.4e}.".format(group, lr))
            else:
                epoch_str = ("%.2f" if isinstance(epoch, float) else "%.5d") % epoch
                print("Epoch {}: adjusting learning rate of group {} to {:.4e}.".format(epoch_str, group, lr))

    def step(self, epoch=None):
        """Advance one step with the chainable form; or (deprecated, as in
        torch) go to step `epoch` with the closed form where there is one."""
        if self._step_count == 1:
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
        with _enable_get_lr_call(self):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning)
                self.last_epoch = epoch
                if hasattr(self, "_get_closed_form_lr"):
                    values = self._get_closed_form_lr()
                else:
                    values = self.get_lr()
        for i, data in enumerate(zip(self.optimizer.param_groups, values)):
            param_group, lr = data
            param_group["lr"] = lr
            self.print_lr(self.verbose, i, lr, epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
