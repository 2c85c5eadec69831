"""ctypes binding of include/optim_schedule.h: learning-rate schedules as pure
functions of the step, evaluated by the C library.

``Schedule`` owns one ``optim_schedule *``. Build one with a class method
(``Schedule.cosine(t_max=1000)``), evaluate it with ``lr(base_lr, t)``. The
classes of ``optim.torch.lr_scheduler`` are built on these.

Its C functions are declared in optim._capi, with every other one.
"""
import ctypes
import operator

from . import _capi
from ._capi import Error, OptimError, enum_names

__all__ = ["Schedule", "ScheduleArgumentError", "KINDS", "CYCLIC_MODES"]

_vp = ctypes.c_void_p
_i64 = ctypes.c_int64

_constant = _capi.optim_schedule_constant
_step = _capi.optim_schedule_step
_multistep = _capi.optim_schedule_multistep
_exponential = _capi.optim_schedule_exponential
_linear = _capi.optim_schedule_linear
_polynomial = _capi.optim_schedule_polynomial
_cosine = _capi.optim_schedule_cosine
_cosine_restarts = _capi.optim_schedule_cosine_restarts
_one_cycle = _capi.optim_schedule_one_cycle
_cyclic = _capi.optim_schedule_cyclic
_warmup = _capi.optim_schedule_warmup
_wsd = _capi.optim_schedule_wsd
_sequential = _capi.optim_schedule_sequential
_clone = _capi.optim_schedule_clone
_free = _capi.optim_schedule_free
_get_kind = _capi.optim_schedule_get_kind
_lr = _capi.optim_schedule_lr
_err_name = _capi.optim_err_name

# optim_schedule_kind and optim_cyclic_mode, by name (from the header, optim._constants).
KINDS = {v: k for k, v in enum_names("optim_schedule_kind", "OPTIM_SCHED_").items()}
CYCLIC_MODES = enum_names("optim_cyclic_mode", "OPTIM_CYCLIC_")
CYCLIC_DOWN_AS_UP = _capi.C.OPTIM_CYCLIC_DOWN_AS_UP

_I64_MIN, _I64_MAX = -(2 ** 63), 2 ** 63 - 1
_OPTIM_EINVAL = _capi.C.OPTIM_EINVAL


class ScheduleArgumentError(OptimError, ValueError):
    """A schedule's argument was rejected by the library. A ValueError (as
    torch raises for bad scheduler arguments) and an OptimError (with the
    library's code and message, which names the argument and its value)."""


def _int64(name, value):
    """value as a Python int for an int64_t argument: ints, and floats with an
    integral value (torch accepts step_size=30.0); anything else is an error
    rather than a silent truncation."""
    if isinstance(value, bool):
        raise TypeError("%s = %r must be an integer, not a bool" % (name, value))
    try:
        v = operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            v = int(value)
        else:
            raise TypeError("%s = %r must be an integer" % (name, value)) from None
    if not _I64_MIN <= v <= _I64_MAX:
        raise ValueError("%s = %d does not fit a 64-bit integer" % (name, v))
    return v


def _new(fn, *args):
    out = _vp()
    err = Error()
    code = fn(ctypes.byref(out), *args, ctypes.byref(err))
    if code != 0:
        name = _err_name(code).decode()
        msg = err.message.decode(errors="replace")
        cls = ScheduleArgumentError if code == _OPTIM_EINVAL else OptimError
        raise cls(code, name, msg)
    return Schedule(out.value)


class Schedule(object):
    """An immutable learning-rate schedule owned by the C library.

    ``lr(base_lr, t)`` is the learning rate of step t (0 for the first step)
    for a group whose lr is base_lr; see include/optim_schedule.h and
    docs/SCHEDULES.md for every formula. Copies (copy.copy, deepcopy, pickle)
    are independent C copies."""

    __slots__ = ("_ptr",)

    def __init__(self, ptr):
        if not ptr:
            raise MemoryError("optim_schedule: out of memory")
        self._ptr = ptr

    # ---- constructors (arguments in the C order, keyword names of torch) ----
    @classmethod
    def constant(cls, factor, total_iters):
        return _new(_constant, float(factor), _int64("total_iters", total_iters))

    @classmethod
    def step(cls, step_size, gamma):
        return _new(_step, _int64("step_size", step_size), float(gamma))

    @classmethod
    def multistep(cls, milestones, gamma):
        ms = [_int64("milestone", m) for m in milestones]
        arr = (_i64 * max(len(ms), 1))(*ms)
        return _new(_multistep, arr, len(ms), float(gamma))

    @classmethod
    def exponential(cls, gamma):
        return _new(_exponential, float(gamma))

    @classmethod
    def linear(cls, start_factor, end_factor, total_iters):
        return _new(_linear, float(start_factor), float(end_factor), _int64("total_iters", total_iters))

    @classmethod
    def polynomial(cls, total_iters, power):
        return _new(_polynomial, _int64("total_iters", total_iters), float(power))

    @classmethod
    def cosine(cls, t_max, eta_min=0.0):
        return _new(_cosine, _int64("T_max", t_max), float(eta_min))

    @classmethod
    def cosine_restarts(cls, t_0, t_mult=1, eta_min=0.0):
        return _new(_cosine_restarts, _int64("T_0", t_0), _int64("T_mult", t_mult), float(eta_min))

    @classmethod
    def one_cycle(cls, max_lr, total_steps, pct_start=0.3, anneal_cos=True, div_factor=25.0,
                  final_div_factor=1e4, three_phase=False):
        return _new(_one_cycle, float(max_lr), _int64("total_steps", total_steps), float(pct_start),
                    1 if anneal_cos else 0, float(div_factor), float(final_div_factor), 1 if three_phase else 0)

    @classmethod
    def cyclic(cls, base_lr, max_lr, step_size_up, step_size_down=None, mode="triangular", gamma=1.0):
        """step_size_down: None for as many steps as up (OPTIM_CYCLIC_DOWN_AS_UP),
        0 for none (a sawtooth), or a number of steps."""
        if mode not in CYCLIC_MODES:
            raise ValueError("mode = %r must be one of %s" % (mode, ", ".join(CYCLIC_MODES)))
        if step_size_down is None:
            down = CYCLIC_DOWN_AS_UP
        else:
            down = _int64("step_size_down", step_size_down)
            if down < 0:  # -1 would be OPTIM_CYCLIC_DOWN_AS_UP to the library: that is None here
                raise ValueError("step_size_down = %d must be >= 0 (None: as many steps as step_size_up)" % down)
        return _new(_cyclic, float(base_lr), float(max_lr), _int64("step_size_up", step_size_up), down,
                    CYCLIC_MODES[mode], float(gamma))

    @classmethod
    def warmup(cls, warmup_steps, after=None):
        """Linear warm-up to where `after` starts, then `after` (a Schedule,
        copied; None: the base lr)."""
        w = _int64("warmup_steps", warmup_steps)
        copy = None
        if after is not None:
            copy = _clone(after._ptr)
            if not copy:
                raise MemoryError("optim_schedule_clone: out of memory")
        return _new(_warmup, w, copy)

    @classmethod
    def wsd(cls, warmup_steps, stable_steps, decay_steps, eta_min=0.0, decay="linear"):
        if decay not in ("linear", "cosine"):
            raise ValueError("decay = %r must be 'linear' or 'cosine'" % (decay,))
        return _new(_wsd, _int64("warmup_steps", warmup_steps), _int64("stable_steps", stable_steps),
                    _int64("decay_steps", decay_steps), float(eta_min), 1 if decay == "cosine" else 0)

    @classmethod
    def sequential(cls, schedules, milestones):
        """schedules[i] from milestones[i-1] on (the schedules are copied)."""
        schedules = list(schedules)
        ms = [_int64("milestone", m) for m in milestones]
        # C reads count - 1 milestones from the array: a shorter list would be
        # read past its end. Checked, with the items, before any copy is made.
        if schedules and len(ms) != len(schedules) - 1:
            raise ValueError("sequential: %d schedules need %d milestones, got %d"
                             % (len(schedules), len(schedules) - 1, len(ms)))
        for i, s in enumerate(schedules):
            if not isinstance(s, Schedule) or not s._ptr:
                raise TypeError("sequential: schedules[%d] = %r is not a live Schedule" % (i, s))
        ptrs = (_vp * max(len(schedules), 1))(*[_clone(s._ptr) for s in schedules])
        arr = (_i64 * max(len(ms), 1))(*ms)
        return _new(_sequential, ptrs, len(schedules), arr if ms else None)

    # ---- use ----
    def lr(self, base_lr, t):
        """The lr of step t (an int >= 0; NaN for t < 0) for a group whose lr is base_lr."""
        if type(t) is not int or not 0 <= t <= _I64_MAX:
            t = _int64("t", t)  # ctypes would wrap an int beyond 64 bits silently
        return _lr(self._ptr, float(base_lr), t)

    @property
    def kind(self):
        """The kind's name ("cosine", ...)."""
        return KINDS.get(_get_kind(self._ptr), "unknown")

    def clone(self):
        return Schedule(_clone(self._ptr))

    __copy__ = clone

    def __deepcopy__(self, memo):
        return self.clone()

    def __reduce__(self):
        raise TypeError("an optim Schedule is a C object and cannot be pickled; pickle the arguments it was built "
                        "from (the lr_scheduler classes do)")

    def __repr__(self):
        return "<optim Schedule %s at 0x%x>" % (self.kind, self._ptr or 0)

    def __del__(self):
        ptr = getattr(self, "_ptr", None)
        if ptr and _free is not None:  # _free is None once the interpreter is shutting down
            self._ptr = None
            _free(ptr)
