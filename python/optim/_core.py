"""The C objects of include/optim.h and optim_sam.h as Python objects that own
them: Handle (one optim*), SamHandle (one optim_sam* over a Handle), HParams
(an optim_hparams buffer), and the handle-less calls of optim_clip.h.

Lifetime. A Handle frees its optim* when the last Python reference to it
goes (the optimizer, a view of its state memory, a SamHandle over it). A
SamHandle keeps its base Handle alive, and the base counts its live SAM
objects: the garbage collector finalizes the objects of a reference cycle
in any order, so a base finalized first only marks itself, and the last of
its SAM objects frees it after freeing itself (optim_sam_free may still
touch its base). Nothing here refers back to a Python optimizer, so these
objects never form cycles.

Threads. Every call on a Handle, or on a SamHandle over it, holds the
Handle's lock (the C object must not be used by two threads at once), and
an error's message is read under the same lock. ctypes releases the GIL
during each call, so calls on different Handles run in parallel. Pointers
given to a call (parameters, gradients) must stay alive until it returns:
that is the caller's part (optim.torch._tensors pins them).

Hyperparameters cross the boundary only through the layout-independent part
of the API: optim_hparams_init / optim_hparams_set by id /
optim_hparams_check on an opaque buffer, and optim_group_set_hparams with
ids. Python never reads or writes a field of struct optim_hparams.
"""
import ctypes
import os
import threading

from . import _capi as capi
from . import _constants as C
from ._capi import Error, check, enum_names

__all__ = ["Handle", "HParams", "SamHandle", "rule_id", "hparam_id", "rule_uses", "slot_names", "rule_has_step",
           "slot_kind", "state_dtype_check", "grad_norm", "clip_grad_norm", "clip_grad_value", "c_path", "enum_names",
           "NONFINITE_POLICIES", "LossScale",
           "MATCH", "PLACEMENTS", "ENONFINITE", "ESTATE", "EOVERLAP", "MAX_NAME", "MAX_NDIM"]

_vp = ctypes.c_void_p
_int = ctypes.c_int
_size = ctypes.c_size_t
_i64 = ctypes.c_int64
_dbl = ctypes.c_double
_uint = ctypes.c_uint

ENONFINITE = C.OPTIM_ENONFINITE  # a NaN or Inf where the call cannot accept one
MAX_NAME = C.OPTIM_MAX_NAME  # bytes of a parameter's name (optim_add_param)
MAX_NDIM = C.OPTIM_MAX_NDIM  # dimensions of a parameter's shape (optim_param_set_shape)
ESTATE = C.OPTIM_ESTATE
EOVERLAP = C.OPTIM_EOVERLAP


NONFINITE_POLICIES = enum_names("optim_nonfinite", "OPTIM_NONFINITE_")  # propagate, skip, error
MATCH = enum_names("optim_match", "OPTIM_MATCH_")                        # name, position
PLACEMENTS = enum_names("optim_eps_placement", "OPTIM_EPS_")             # outside, inside
# torch.optim.Muon's adjust_lr_fn -> optim_muon_adjust_lr (None is torch's default, "original")
MUON_ADJUST_LR = {None: C.OPTIM_MUON_ADJUST_ORIGINAL, "original": C.OPTIM_MUON_ADJUST_ORIGINAL,
                  "match_rms_adamw": C.OPTIM_MUON_ADJUST_MATCH_RMS_ADAMW}


def rule_id(name):
    """The optim_rule number of a rule name ("adam"); ValueError if unknown."""
    r = capi.optim_rule_from_name(name.encode())
    if not r:
        raise ValueError("optim: unknown rule %r" % (name,))
    return r


def hparam_id(name):
    """The optim_hparam number of a field name ("beta1"); ValueError if unknown."""
    h = capi.optim_hparam_from_name(name.encode())
    if not h:
        raise ValueError("optim: unknown hyperparameter %r" % (name,))
    return h


def rule_uses(rule, hid):
    return bool(capi.optim_rule_uses(rule, hid))


def slot_names(rule):
    """torch.optim's names of the rule's state slots, in slot order."""
    return tuple(capi.optim_rule_slot_name(rule, s).decode() for s in range(capi.optim_rule_slot_count(rule)))


def slot_kind(rule, slot):
    """optim_slot_kind of slot `slot` of a rule (OPTIM_SLOT_SIGNED, _NONNEG, _POSITIVE)."""
    return capi.optim_rule_slot_kind(rule, slot)


def state_dtype_check(param_dtype, state_dtype):
    """OptimError with liboptim's message unless parameters of param_dtype may
    keep their state in state_dtype (optim_dtype values)."""
    err = Error()
    check(capi.optim_state_dtype_check(param_dtype, state_dtype, ctypes.byref(err)), err.message)


def rule_sparse(rule):
    """optim_rule_sparse: 0 refuses sparse gradients, 1 takes them, 2 takes only them."""
    return int(capi.optim_rule_sparse(rule))


def rule_has_step(rule):
    return bool(capi.optim_rule_has_step(rule))


def c_path(path, where):
    """A file path for the C library, as bytes: str, bytes or os.PathLike
    (what open() and torch.save take as a name), encoded as the OS does
    (os.fsencode). A path holding a NUL byte is refused (ValueError naming
    it): C would read it only up to the NUL, another file."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise TypeError("%s: the path must be a str, bytes or os.PathLike (a file name), not %s"
                        % (where, type(path).__name__)) from None
    raw = os.fsencode(text)
    if b"\0" in raw:
        raise ValueError("%s: the path %r contains a NUL byte, which no file name can hold" % (where, text))
    return raw


class HParams:
    """An optim_hparams for one rule, handled only through the C API.

    The buffer is larger than the struct (about 200 bytes today) and
    8-byte aligned, so a field added to the struct later cannot overrun it."""

    _BYTES = 1024

    def __init__(self, rule):
        self._buf = (ctypes.c_double * (self._BYTES // 8))()
        self.ptr = ctypes.cast(self._buf, _vp)
        err = Error()
        check(capi.optim_hparams_init(self.ptr, rule, ctypes.byref(err)), err.message)

    def set(self, hid, value):
        """Set one field (range-checked alone); OptimError with the library's message."""
        err = Error()
        check(capi.optim_hparams_set(self.ptr, hid, float(value), ctypes.byref(err)), err.message)

    def check(self):
        """Check every field and the rules across fields."""
        err = Error()
        check(capi.optim_hparams_check(self.ptr, ctypes.byref(err)), err.message)

    def slots(self):
        """Bit s set: slot s is needed under these hyperparameters."""
        return int(capi.optim_hparams_slots(self.ptr))


class LossScale(ctypes.Structure):
    """struct optim_loss_scale (optim_precision.h)."""

    _fields_ = [("mode", ctypes.c_int), ("init_scale", _dbl), ("growth_factor", _dbl), ("backoff_factor", _dbl),
                ("growth_interval", ctypes.c_int64)]


# src/optim_ext.h's hooks (private to the layers of this tree: optim.torch._distributed).
EXT_COMBINE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_dbl), ctypes.POINTER(ctypes.c_ubyte),
                               ctypes.c_size_t, ctypes.POINTER(ctypes.POINTER(_dbl)),
                               ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)), ctypes.POINTER(ctypes.c_size_t),
                               ctypes.POINTER(capi.Error))
EXT_NAME_BLOCK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t),
                                  ctypes.POINTER(ctypes.c_char_p))


class ExtHooks(ctypes.Structure):
    """struct optim_ext_hooks (src/optim_ext.h)."""

    _fields_ = [("ctx", ctypes.c_void_p), ("combine", EXT_COMBINE), ("name_block", EXT_NAME_BLOCK),
                ("whole_tensors", ctypes.c_int)]


class StepStats(ctypes.Structure):
    """struct optim_step_stats (optim_stats.h)."""

    _fields_ = [("step", ctypes.c_int64), ("has_elements", ctypes.c_int), ("n", ctypes.c_size_t),
                ("grad_norm", _dbl), ("update_rms", _dbl), ("param_rms", _dbl), ("update_ratio", _dbl),
                ("update_max", _dbl), ("clamped_fraction", _dbl), ("effective_lr", _dbl), ("trust_ratio", _dbl),
                ("rectified", ctypes.c_int)]


class SparseGrad(ctypes.Structure):
    """struct optim_sparse_grad (optim_sparse.h)."""

    _fields_ = [("rows", ctypes.c_void_p), ("nrows", ctypes.c_size_t), ("row_len", ctypes.c_size_t),
                ("values", ctypes.c_void_p)]


class Handle:
    """Owns one optim*: freed when the last reference goes (the optimizer, a
    view of its state memory, or a SamHandle over it; see the module's
    docstring). Every method holds `lock` during its C call."""

    # Kept on the class: at interpreter exit module globals may be gone
    # before the last Handle is finalized.
    _c_free = capi.optim_free
    _c_errmsg = capi.optim_errmsg

    def __init__(self, rule):
        self.lock = threading.RLock()  # re-entrant: a finalizer may run in the thread that holds it
        self.ptr = None
        self.rule = rule
        self._sams = 0        # live SamHandles over this one
        self._orphan = False  # finalized while a SamHandle was alive: the last one frees it
        # True while a SamHandle over this one is between first_step and
        # second_step/restore (the parent knows its children's state, as C's
        # base does): the optimizer then refuses its own steps, added groups
        # and checkpoints.
        self.sam_active = False
        h = _vp()
        check(capi.optim_create(ctypes.byref(h), rule), "optim_create(rule=%d) failed" % rule)
        self.ptr = h.value

    def __del__(self):
        if self._sams:
            self._orphan = True
        else:
            self._release()

    def _release(self):
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._c_free(ptr)

    def _call(self, fn, *args):
        """fn(ptr, *args) under the lock; OptimError with the handle's message."""
        with self.lock:
            code = fn(self.ptr, *args)
            if code:
                check(code, self._c_errmsg(self.ptr))
        return code

    def _get(self, fn, *args):
        with self.lock:
            return fn(self.ptr, *args)

    def add_group(self, hp):
        index = _size()
        self._call(capi.optim_add_group, hp.ptr, ctypes.byref(index))
        return index.value

    def group_count(self):
        return self._get(capi.optim_group_count)

    def group_set_hparams(self, group, ids, values):
        """ids: a ctypes c_int array, values: a ctypes c_double array, same length."""
        self._call(capi.optim_group_set_hparams, group, len(ids), ids, values)

    def group_get_hparam(self, group, hid):
        v = _dbl()
        self._call(capi.optim_group_get_hparam, group, hid, ctypes.byref(v))
        return v.value

    def add_param(self, group, data_ptr, n, name, dtype=C.OPTIM_FLOAT32, state_dtype=None, flags=0):
        """Add a parameter of n elements of `dtype` (an optim_dtype value) at
        data_ptr (which the caller keeps alive during the call; C keeps the
        address, not the memory), with gradients of its type, state of
        state_dtype (None: the pair's default) and storage flags
        (OPTIM_PARAM_*: master weights, stochastic rounding)."""
        index = _size()
        if flags:
            if state_dtype is None:
                state_dtype = C.OPTIM_FLOAT32
            self._call(capi.optim_add_param_ex, group, data_ptr, dtype, None, dtype, n, state_dtype, flags,
                       name.encode(), ctypes.byref(index))
        elif dtype == C.OPTIM_FLOAT32 and state_dtype is None:
            self._call(capi.optim_add_param, group, data_ptr, None, n, name.encode(), ctypes.byref(index))
        else:
            if state_dtype is None:
                state_dtype = C.OPTIM_FLOAT64 if dtype == C.OPTIM_FLOAT64 else C.OPTIM_FLOAT32
            self._call(capi.optim_add_param_ex, group, data_ptr, dtype, None, dtype, n, state_dtype, 0,
                       name.encode(), ctypes.byref(index))
        return index.value

    def param_count(self):
        return self._get(capi.optim_param_count)

    # ---- reduced precision (optim_precision.h) ----------------------------------

    def master_data(self, i):
        """The address of parameter i's fp32 master (n floats), or None if it has none."""
        flags = _uint()
        self._call(capi.optim_param_get_flags, i, ctypes.byref(flags))
        if not flags.value & C.OPTIM_PARAM_MASTER:
            return None
        data = _vp()
        self._call(capi.optim_param_master_data, i, ctypes.byref(data))
        return data.value

    def master_sync(self, i):
        self._call(capi.optim_param_master_sync, i)

    def set_seed(self, seed):
        self._call(capi.optim_set_seed, seed)

    # ---- step statistics (optim_stats.h) ------------------------------------

    def set_stats(self, on):
        self._call(capi.optim_set_stats, 1 if on else 0)

    def stats_enabled(self):
        return bool(self._get(capi.optim_stats_enabled))

    def param_stats(self, i):
        """Parameter i's record of the last step with statistics (a StepStats)."""
        st = StepStats()
        self._call(capi.optim_param_stats, i, ctypes.byref(st))  # st lives through the call
        return st

    # ---- the EMA of the weights (optim_ema.h) ------------------------------------

    def set_ema(self, decay, warmup):
        self._call(capi.optim_set_ema, float(decay), 1 if warmup else 0)

    def ema_off(self):
        self._call(capi.optim_ema_off)

    def get_ema(self):
        """(on, decay, warmup, count, swapped)."""
        on, warmup, swapped = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        decay, count = ctypes.c_double(), ctypes.c_int64()
        self._call(capi.optim_get_ema, ctypes.byref(on), ctypes.byref(decay), ctypes.byref(warmup),
                   ctypes.byref(count), ctypes.byref(swapped))
        return bool(on.value), decay.value, bool(warmup.value), count.value, bool(swapped.value)

    def ema_set_count(self, count):
        self._call(capi.optim_ema_set_count, int(count))

    def ema_param_count(self, i):
        """Parameter i's own count of averages (a parameter added late has fewer)."""
        count = ctypes.c_int64()
        self._call(capi.optim_ema_param_count, i, ctypes.byref(count))
        return count.value

    def ema_set_param_count(self, i, count):
        self._call(capi.optim_ema_set_param_count, i, int(count))

    def ema_swap(self):
        self._call(capi.optim_ema_swap)

    def ema_read(self, i, addr):
        """Parameter i's average into the memory at addr (held by the caller); its optim_dtype."""
        dtype = ctypes.c_int()
        self._call(capi.optim_ema_read, i, addr, ctypes.byref(dtype))
        return dtype.value

    def ema_write(self, i, addr):
        self._call(capi.optim_ema_write, i, addr)

    def get_seed(self):
        return self._get(capi.optim_get_seed)

    def set_loss_scale(self, mode, init_scale=1.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        ls = LossScale(mode, init_scale, growth_factor, backoff_factor, growth_interval)
        self._call(capi.optim_set_loss_scale, ctypes.byref(ls))

    def set_ext_hooks(self, hooks):
        """Install src/optim_ext.h's hooks (an ExtHooks, whose callbacks the
        caller keeps alive while installed) or remove them (None)."""
        self._call(capi.optim__ext_set_hooks, ctypes.byref(hooks) if hooks is not None else None)

    def set_sr_origin(self, i, param, first=0):
        """Stochastic rounding of parameter i draws the random numbers of
        elements first, first + 1, ... of the model's parameter `param`
        (src/optim_ext.h; a sharding layer's global numbering). Each an int in
        [0, 2^64), else ValueError naming it (ctypes would wrap a negative
        one into a huge one); liboptim refuses a missing i, or a first that
        is not a multiple of 512 or leaves no room for the elements."""
        for what, v in (("i", i), ("param", param), ("first", first)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2 ** 64:
                raise ValueError("set_sr_origin: %s = %r must be an int in [0, 2^64)" % (what, v))
        self._call(capi.optim__ext_set_sr_origin, i, param, first)

    def get_loss_scale(self):
        """(mode, init_scale, growth_factor, backoff_factor, growth_interval, scale, growth_tracker)."""
        ls = LossScale()
        scale = _dbl()
        tracker = ctypes.c_int64()
        self._call(capi.optim_get_loss_scale, ctypes.byref(ls), ctypes.byref(scale), ctypes.byref(tracker))
        return (ls.mode, ls.init_scale, ls.growth_factor, ls.backoff_factor, ls.growth_interval, scale.value,
                tracker.value)

    def loss_scale_value(self):
        return self._get(capi.optim_loss_scale_value)

    def set_loss_scale_state(self, scale, growth_tracker):
        self._call(capi.optim_set_loss_scale_state, scale, growth_tracker)

    def rebind(self, count, params, grads):
        """Point every parameter at other memory without stepping (ctypes
        c_void_p arrays of length count); only the new pointers are checked."""
        self._call(capi.optim_rebind, count, params, grads)

    def set_param_shape(self, i, shape):
        """Parameter i's shape (a sequence of sizes), stored by checkpoints."""
        dims = (_i64 * max(len(shape), 1))(*shape)
        self._call(capi.optim_param_set_shape, i, len(shape), dims)

    def step_with(self, count, params, grads):
        """params, grads: ctypes c_void_p arrays of length count (None = no grad)."""
        self._call(capi.optim_step_with_data, count, params, grads)

    def step_sparse(self, count, params, grads, sparse):
        """step_with, with sparse a c_void_p array of count addresses of
        SparseGrad (None: the gradient in grads, dense or none)."""
        self._call(capi.optim_step_sparse, count, params, grads, sparse)

    def state_slot(self, i, s):
        """(address or None, initialized) of parameter i's slot s (of any type)."""
        addr, _, init = self.state_slot_data(i, s)
        return addr, init

    def state_slot_data(self, i, s):
        """(address or None, optim_dtype value, initialized) of parameter i's slot s."""
        data = _vp()
        dtype = _int()
        init = _int()
        self._call(capi.optim_state_slot_data, i, s, ctypes.byref(data), ctypes.byref(dtype), ctypes.byref(init))
        return data.value, dtype.value, bool(init.value)

    def state_slot_read_f32(self, i, s, dst):
        """Slot s of parameter i as float32 values at address dst (n floats, the caller's)."""
        self._call(capi.optim_state_slot_read_f32, i, s, dst)

    def state_slot_write_f32(self, i, s, src):
        """Set slot s of parameter i from n float32 values at src, converted as a step stores them."""
        self._call(capi.optim_state_slot_write_f32, i, s, src)

    def set_initialized(self, i, s, initialized):
        self._call(capi.optim_state_set_initialized, i, s, 1 if initialized else 0)

    def get_step(self, i):
        v = _i64()
        self._call(capi.optim_param_get_step, i, ctypes.byref(v))
        return v.value

    def set_step(self, i, step):
        self._call(capi.optim_param_set_step, i, step)

    def get_mu_product(self, i):
        v = _dbl()
        self._call(capi.optim_param_get_mu_product, i, ctypes.byref(v))
        return v.value

    def set_mu_product(self, i, mu):
        self._call(capi.optim_param_set_mu_product, i, mu)

    def sf_switch(self, train):
        """The schedule-free train/eval switch (optim_schedule_free.h)."""
        self._call(capi.optim_schedule_free_train if train else capi.optim_schedule_free_eval)

    def sf_mode(self):
        """1: train mode, 0: eval mode (schedule-free rules)."""
        return self._get(capi.optim_schedule_free_mode)

    def sf_set_mode(self, train):
        self._call(capi.optim_schedule_free_set_mode, 1 if train else 0)

    def get_schedule_free(self, i):
        """Parameter i's (lr_max, weight_sum)."""
        a, b = _dbl(), _dbl()
        self._call(capi.optim_param_get_schedule_free, i, ctypes.byref(a), ctypes.byref(b))
        return a.value, b.value

    def set_schedule_free(self, i, lr_max, weight_sum):
        self._call(capi.optim_param_set_schedule_free, i, lr_max, weight_sum)

    def reset_state(self, i):
        self._call(capi.optim_param_reset_state, i)

    # ---- gradient checks fused into the step --------------------------------

    def set_nonfinite(self, policy):
        """policy: an optim_nonfinite number (NONFINITE_POLICIES)."""
        self._call(capi.optim_set_nonfinite, policy)

    def get_nonfinite(self):
        return self._get(capi.optim_get_nonfinite)

    def set_threads(self, threads):
        """0: every OpenMP thread of the calling thread (omp_get_max_threads at each step); k: at most k."""
        self._call(capi.optim_set_threads, threads)

    def get_threads(self):
        return self._get(capi.optim_get_threads)

    def last_step_skipped(self):
        return bool(self._get(capi.optim_last_step_skipped))

    def skipped_steps(self):
        return self._get(capi.optim_skipped_steps)

    def set_clip_grad_norm(self, max_norm, norm_type):
        """max_norm = 0 turns clipping off."""
        self._call(capi.optim_set_clip_grad_norm, max_norm, norm_type)

    def get_clip_grad_norm(self):
        """(max_norm, norm_type); max_norm 0 when off."""
        m, t = _dbl(), _dbl()
        self._call(capi.optim_get_clip_grad_norm, ctypes.byref(m), ctypes.byref(t))
        return m.value, t.value

    def set_clip_grad_value(self, clip_value):
        """clip_value = 0 turns fused value clipping off."""
        self._call(capi.optim_set_clip_grad_value, clip_value)

    def get_clip_grad_value(self):
        """The fused clip_value (0: off)."""
        return self._get(capi.optim_get_clip_grad_value)

    def last_grad_norm(self):
        return self._get(capi.optim_last_grad_norm)

    # ---- checkpoints (optim_checkpoint.h) -----------------------------------

    def save(self, path):
        """path: bytes from c_path()."""
        self._call(capi.optim_save, path)

    def load(self, path, match):
        """path: bytes from c_path(); match: a key of MATCH."""
        self._call(capi.optim_load, path, MATCH[match])


class SamHandle:
    """Owns one optim_sam* over a Handle, which it keeps alive: the C SAM
    object points into the base optimizer and is freed first (see the
    module's docstring). Its calls hold the base's lock."""

    _c_free = capi.optim_sam_free
    _c_errmsg = capi.optim_sam_errmsg

    def __init__(self, base, rho, p, adaptive, eta):
        self.ptr = None
        self.base = base
        self.lock = base.lock
        h = _vp()
        err = Error()
        with self.lock:
            code = capi.optim_sam_create(ctypes.byref(h), base.ptr, rho, p, 1 if adaptive else 0, eta,
                                         ctypes.byref(err))
        check(code, err.message)
        self.ptr = h.value
        self._active = False  # this one has the base at w + e
        base._sams += 1

    def __del__(self):
        ptr, self.ptr = self.ptr, None
        if not ptr:
            return
        base = self.base
        with self.lock:
            self._c_free(ptr)  # mid-step, the parameters stay at w + e
            if self._active:
                base.sam_active = False
        base._sams -= 1
        if base._orphan and not base._sams:
            base._release()

    def _call(self, fn, *args):
        with self.lock:
            code = fn(self.ptr, *args)
            message = self._c_errmsg(self.ptr) if code else None
            # Whatever the outcome, the base knows whether this one has it at w + e now.
            active = bool(capi.optim_sam_is_perturbed(self.ptr))
            if active != self._active:
                self._active = self.base.sam_active = active
        if code:
            check(code, message)

    def first_step_with(self, count, params, grads):
        self._call(capi.optim_sam_first_step_with, count, params, grads)

    def second_step_with(self, count, params, grads):
        self._call(capi.optim_sam_second_step_with, count, params, grads)

    def restore(self):
        self._call(capi.optim_sam_restore)

    def set_rho(self, rho):
        self._call(capi.optim_sam_set_rho, rho)

    def set_group(self, g, rho, adaptive, eta):
        self._call(capi.optim_sam_set_group, g, rho, 1 if adaptive else 0, eta)

    def last_grad_norm(self):
        with self.lock:
            return capi.optim_sam_last_grad_norm(self.ptr)

    def is_perturbed(self):
        with self.lock:
            return bool(capi.optim_sam_is_perturbed(self.ptr))


def _arrays(ptrs, sizes):
    count = len(ptrs)
    return count, (_vp * max(count, 1))(*ptrs), (_size * max(count, 1))(*sizes)


def grad_norm(ptrs, sizes, norm_type, threads=0):
    """optim_grad_norm over the float32 arrays at ptrs (None: skipped) of
    sizes[i] elements, which the caller keeps alive during the call."""
    count, p, n = _arrays(ptrs, sizes)
    out = _dbl()
    err = Error()
    check(capi.optim_grad_norm(count, p, n, norm_type, threads, ctypes.byref(out), ctypes.byref(err)), err.message)
    return out.value


def clip_grad_norm(ptrs, sizes, max_norm, norm_type, error_if_nonfinite, threads=0):
    """optim_clip_grad_norm in place; returns the total norm before clipping.
    With error_if_nonfinite and a non-finite norm, raises OptimError (code
    ENONFINITE) and leaves the arrays unchanged."""
    count, p, n = _arrays(ptrs, sizes)
    out = _dbl()
    err = Error()
    check(capi.optim_clip_grad_norm(count, p, n, max_norm, norm_type, 1 if error_if_nonfinite else 0, threads,
                                    ctypes.byref(out), ctypes.byref(err)), err.message)
    return out.value


def clip_grad_value(ptrs, sizes, clip_value, threads=0):
    """optim_clip_grad_value in place."""
    count, p, n = _arrays(ptrs, sizes)
    err = Error()
    check(capi.optim_clip_grad_value(count, p, n, clip_value, threads, ctypes.byref(err)), err.message)
