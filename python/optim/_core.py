"""ctypes prototypes of include/optim.h's optimizer object, and a handle that owns one.

This module binds its own function objects (``lib[name]`` returns a fresh
foreign function each time), so the argument types set here never clash with
another module of the package that declares the same C function.

Hyperparameters cross the boundary only through the layout-independent part
of the API: ``optim_hparams_init`` / ``optim_hparams_set`` by id /
``optim_hparams_check`` on an opaque buffer, and ``optim_group_set_hparams``
with ids. Python never reads or writes a field of ``struct optim_hparams``.
"""
import ctypes
import os

from ._lib import Error, OptimError, check, lib

__all__ = ["Handle", "HParams", "SamHandle", "rule_id", "hparam_id", "rule_uses", "slot_names", "rule_has_step",
           "grad_norm", "clip_grad_norm", "clip_grad_value", "NONFINITE_POLICIES", "ENONFINITE"]

_vp = ctypes.c_void_p
_int = ctypes.c_int
_size = ctypes.c_size_t
_i64 = ctypes.c_int64
_dbl = ctypes.c_double


def _fn(name, restype, *argtypes):
    fn = lib[name]
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_create = _fn("optim_create", _int, ctypes.POINTER(_vp), _int)
_free = _fn("optim_free", None, _vp)
_errmsg = _fn("optim_errmsg", ctypes.c_char_p, _vp)
_add_group = _fn("optim_add_group", _int, _vp, _vp, ctypes.POINTER(_size))
_group_count = _fn("optim_group_count", _size, _vp)
_group_set_hparams = _fn("optim_group_set_hparams", _int, _vp, _size, _size, ctypes.POINTER(_int),
                         ctypes.POINTER(_dbl))
_group_get_hparam = _fn("optim_group_get_hparam", _int, _vp, _size, _int, ctypes.POINTER(_dbl))
_add_param = _fn("optim_add_param", _int, _vp, _size, _vp, _vp, _size, ctypes.c_char_p, ctypes.POINTER(_size))
_param_count = _fn("optim_param_count", _size, _vp)
_param_set_shape = _fn("optim_param_set_shape", _int, _vp, _size, _size, ctypes.POINTER(_i64))
_step_with = _fn("optim_step_with", _int, _vp, _size, ctypes.POINTER(_vp), ctypes.POINTER(_vp))
_state_slot = _fn("optim_state_slot", _int, _vp, _size, _int, ctypes.POINTER(_vp), ctypes.POINTER(_int))
_state_set_initialized = _fn("optim_state_set_initialized", _int, _vp, _size, _int, _int)
_param_get_step = _fn("optim_param_get_step", _int, _vp, _size, ctypes.POINTER(_i64))
_param_set_step = _fn("optim_param_set_step", _int, _vp, _size, _i64)
_param_get_mu_product = _fn("optim_param_get_mu_product", _int, _vp, _size, ctypes.POINTER(_dbl))
_param_set_mu_product = _fn("optim_param_set_mu_product", _int, _vp, _size, _dbl)
_param_reset_state = _fn("optim_param_reset_state", _int, _vp, _size)

# Gradient checks fused into the step (the end of optim.h).
_set_nonfinite = _fn("optim_set_nonfinite", _int, _vp, _int)
_get_nonfinite = _fn("optim_get_nonfinite", _int, _vp)
_set_threads = _fn("optim_set_threads", _int, _vp, _int)
_get_threads = _fn("optim_get_threads", _int, _vp)
_last_step_skipped = _fn("optim_last_step_skipped", _int, _vp)
_skipped_steps = _fn("optim_skipped_steps", _i64, _vp)
_set_clip_grad_norm = _fn("optim_set_clip_grad_norm", _int, _vp, _dbl, _dbl)
_get_clip_grad_norm = _fn("optim_get_clip_grad_norm", _int, _vp, ctypes.POINTER(_dbl), ctypes.POINTER(_dbl))
_set_clip_grad_value = _fn("optim_set_clip_grad_value", _int, _vp, _dbl)
_get_clip_grad_value = _fn("optim_get_clip_grad_value", _dbl, _vp)
# optim_checkpoint.h
_save = _fn("optim_save", _int, _vp, ctypes.c_char_p)
_load = _fn("optim_load", _int, _vp, ctypes.c_char_p, _int)
MATCH = {"name": 0, "position": 1}
_last_grad_norm = _fn("optim_last_grad_norm", _dbl, _vp)

# optim_clip.h: over arrays the caller owns.
_grad_norm = _fn("optim_grad_norm", _int, _size, ctypes.POINTER(_vp), ctypes.POINTER(_size), _dbl, _int,
                 ctypes.POINTER(_dbl), ctypes.POINTER(Error))
_clip_grad_norm = _fn("optim_clip_grad_norm", _int, _size, ctypes.POINTER(_vp), ctypes.POINTER(_size), _dbl, _dbl,
                      _int, _int, ctypes.POINTER(_dbl), ctypes.POINTER(Error))
_clip_grad_value = _fn("optim_clip_grad_value", _int, _size, ctypes.POINTER(_vp), ctypes.POINTER(_size), _dbl, _int,
                       ctypes.POINTER(Error))

# optim_sam.h: SAM/ASAM around an optimizer object.
_sam_create = _fn("optim_sam_create", _int, ctypes.POINTER(_vp), _vp, _dbl, _dbl, _int, _dbl, ctypes.POINTER(Error))
_sam_free = _fn("optim_sam_free", None, _vp)
_sam_errmsg = _fn("optim_sam_errmsg", ctypes.c_char_p, _vp)
_sam_first_step_with = _fn("optim_sam_first_step_with", _int, _vp, _size, ctypes.POINTER(_vp), ctypes.POINTER(_vp))
_sam_second_step_with = _fn("optim_sam_second_step_with", _int, _vp, _size, ctypes.POINTER(_vp),
                            ctypes.POINTER(_vp))
_sam_restore = _fn("optim_sam_restore", _int, _vp)
_sam_last_grad_norm = _fn("optim_sam_last_grad_norm", _dbl, _vp)
_sam_is_perturbed = _fn("optim_sam_is_perturbed", _int, _vp)
_sam_set_rho = _fn("optim_sam_set_rho", _int, _vp, _dbl)
_sam_set_group = _fn("optim_sam_set_group", _int, _vp, _size, _dbl, _int, _dbl)

# enum optim_nonfinite, by the names optim.torch uses.
NONFINITE_POLICIES = {"propagate": 0, "skip": 1, "error": 2}
# OPTIM_ENONFINITE: a NaN or Inf where the call cannot accept one.
ENONFINITE = -9

_rule_from_name = _fn("optim_rule_from_name", _int, ctypes.c_char_p)
_rule_slot_count = _fn("optim_rule_slot_count", _int, _int)
_rule_slot_name = _fn("optim_rule_slot_name", ctypes.c_char_p, _int, _int)
_rule_has_step = _fn("optim_rule_has_step", _int, _int)
_hparam_from_name = _fn("optim_hparam_from_name", _int, ctypes.c_char_p)
_rule_uses = _fn("optim_rule_uses", _int, _int, _int)
_hparams_init = _fn("optim_hparams_init", _int, _vp, _int, ctypes.POINTER(Error))
_hparams_set = _fn("optim_hparams_set", _int, _vp, _int, _dbl, ctypes.POINTER(Error))
_hparams_check = _fn("optim_hparams_check", _int, _vp, ctypes.POINTER(Error))
_hparams_slots = _fn("optim_hparams_slots", ctypes.c_uint, _vp)


def rule_id(name):
    """The optim_rule number of a rule name ("adam"); ValueError if unknown."""
    r = _rule_from_name(name.encode())
    if not r:
        raise ValueError("optim: unknown rule %r" % (name,))
    return r


def hparam_id(name):
    """The optim_hparam number of a field name ("beta1"); ValueError if unknown."""
    h = _hparam_from_name(name.encode())
    if not h:
        raise ValueError("optim: unknown hyperparameter %r" % (name,))
    return h


def rule_uses(rule, hid):
    return bool(_rule_uses(rule, hid))


def slot_names(rule):
    """torch.optim's names of the rule's state slots, in slot order."""
    return tuple(_rule_slot_name(rule, s).decode() for s in range(_rule_slot_count(rule)))


def rule_has_step(rule):
    return bool(_rule_has_step(rule))


class HParams:
    """An optim_hparams for one rule, handled only through the C API.

    The buffer is larger than the struct (about 200 bytes today) and
    8-byte aligned, so a field added to the struct later cannot overrun it."""

    _BYTES = 1024

    def __init__(self, rule):
        self._buf = (ctypes.c_double * (self._BYTES // 8))()
        self.ptr = ctypes.cast(self._buf, _vp)
        err = Error()
        check(_hparams_init(self.ptr, rule, ctypes.byref(err)), err.message)

    def set(self, hid, value):
        """Set one field (range-checked alone); OptimError with the library's message."""
        err = Error()
        check(_hparams_set(self.ptr, hid, float(value), ctypes.byref(err)), err.message)

    def check(self):
        """Check every field and the rules across fields."""
        err = Error()
        check(_hparams_check(self.ptr, ctypes.byref(err)), err.message)

    def slots(self):
        """Bit s set: slot s is needed under these hyperparameters."""
        return int(_hparams_slots(self.ptr))


class Handle:
    """Owns one optim*: freed when the last reference goes (the optimizer, or
    a numpy/torch view of its state memory, which keeps a reference here)."""

    def __init__(self, rule):
        h = _vp()
        code = _create(ctypes.byref(h), rule)
        check(code, "optim_create(rule=%d) failed" % rule)
        self.ptr = h
        self.rule = rule

    def __del__(self):
        ptr = getattr(self, "ptr", None)
        # At interpreter exit the module's globals may already be gone.
        if ptr and _free is not None:
            _free(ptr)
            self.ptr = None

    def _check(self, code):
        if code != 0:
            check(code, _errmsg(self.ptr))

    def add_group(self, hp):
        index = _size()
        self._check(_add_group(self.ptr, hp.ptr, ctypes.byref(index)))
        return index.value

    def group_count(self):
        return _group_count(self.ptr)

    def group_set_hparams(self, group, ids, values):
        """ids: a ctypes c_int array, values: a ctypes c_double array, same length."""
        self._check(_group_set_hparams(self.ptr, group, len(ids), ids, values))

    def group_get_hparam(self, group, hid):
        v = _dbl()
        self._check(_group_get_hparam(self.ptr, group, hid, ctypes.byref(v)))
        return v.value

    def add_param(self, group, data_ptr, n, name):
        index = _size()
        self._check(_add_param(self.ptr, group, data_ptr, None, n, name.encode(), ctypes.byref(index)))
        return index.value

    def param_count(self):
        return _param_count(self.ptr)

    def set_param_shape(self, i, shape):
        """Parameter i's shape (a sequence of sizes), stored by checkpoints."""
        dims = (_i64 * max(len(shape), 1))(*shape)
        self._check(_param_set_shape(self.ptr, i, len(shape), dims))

    def step_with(self, count, params, grads):
        """params, grads: ctypes c_void_p arrays of length count (None = no grad)."""
        self._check(_step_with(self.ptr, count, params, grads))

    def state_slot(self, i, s):
        """(address or None, initialized) of parameter i's slot s."""
        data = _vp()
        init = _int()
        self._check(_state_slot(self.ptr, i, s, ctypes.byref(data), ctypes.byref(init)))
        return data.value, bool(init.value)

    def set_initialized(self, i, s, initialized):
        self._check(_state_set_initialized(self.ptr, i, s, 1 if initialized else 0))

    def get_step(self, i):
        v = _i64()
        self._check(_param_get_step(self.ptr, i, ctypes.byref(v)))
        return v.value

    def set_step(self, i, step):
        self._check(_param_set_step(self.ptr, i, step))

    def get_mu_product(self, i):
        v = _dbl()
        self._check(_param_get_mu_product(self.ptr, i, ctypes.byref(v)))
        return v.value

    def set_mu_product(self, i, mu):
        self._check(_param_set_mu_product(self.ptr, i, mu))

    def reset_state(self, i):
        self._check(_param_reset_state(self.ptr, i))

    # ---- gradient checks fused into the step --------------------------------

    def set_nonfinite(self, policy):
        """policy: an optim_nonfinite number (NONFINITE_POLICIES)."""
        self._check(_set_nonfinite(self.ptr, policy))

    def set_threads(self, threads):
        """0: every OpenMP thread of the calling thread (omp_get_max_threads at each step); k: at most k."""
        self._check(_set_threads(self.ptr, threads))

    def get_threads(self):
        return _get_threads(self.ptr)

    def get_nonfinite(self):
        return _get_nonfinite(self.ptr)

    def last_step_skipped(self):
        return bool(_last_step_skipped(self.ptr))

    def skipped_steps(self):
        return _skipped_steps(self.ptr)

    def set_clip_grad_norm(self, max_norm, norm_type):
        """max_norm = 0 turns clipping off."""
        self._check(_set_clip_grad_norm(self.ptr, max_norm, norm_type))

    def last_grad_norm(self):
        return _last_grad_norm(self.ptr)

    def get_clip_grad_norm(self):
        """(max_norm, norm_type); max_norm 0 when off."""
        m, t = _dbl(), _dbl()
        self._check(_get_clip_grad_norm(self.ptr, ctypes.byref(m), ctypes.byref(t)))
        return m.value, t.value

    # ---- checkpoints (optim_checkpoint.h) ---------------------------------------


    def set_clip_grad_value(self, clip_value):
        """clip_value = 0 turns fused value clipping off."""
        self._check(_set_clip_grad_value(self.ptr, clip_value))

    def get_clip_grad_value(self):
        """The fused clip_value (0: off)."""
        return _get_clip_grad_value(self.ptr)
    def save(self, path):
        self._check(_save(self.ptr, os.fsencode(path)))

    def load(self, path, match):
        self._check(_load(self.ptr, os.fsencode(path), MATCH[match]))


class SamHandle:
    """Owns one optim_sam* around a Handle, which it keeps alive: the C SAM
    object points into the base optimizer and must be freed first."""

    def __init__(self, base, rho, p, adaptive, eta):
        h = _vp()
        err = Error()
        check(_sam_create(ctypes.byref(h), base.ptr, rho, p, 1 if adaptive else 0, eta, ctypes.byref(err)),
              err.message)
        self.ptr = h
        self.base = base

    def __del__(self):
        ptr = getattr(self, "ptr", None)
        if ptr and _sam_free is not None:
            _sam_free(ptr)
            self.ptr = None

    def _check(self, code):
        if code != 0:
            check(code, _sam_errmsg(self.ptr))

    def first_step_with(self, count, params, grads):
        self._check(_sam_first_step_with(self.ptr, count, params, grads))

    def second_step_with(self, count, params, grads):
        self._check(_sam_second_step_with(self.ptr, count, params, grads))

    def restore(self):
        self._check(_sam_restore(self.ptr))

    def set_rho(self, rho):
        self._check(_sam_set_rho(self.ptr, rho))

    def set_group(self, g, rho, adaptive, eta):
        self._check(_sam_set_group(self.ptr, g, rho, 1 if adaptive else 0, eta))

    def last_grad_norm(self):
        return _sam_last_grad_norm(self.ptr)

    def is_perturbed(self):
        return bool(_sam_is_perturbed(self.ptr))


def _arrays(ptrs, sizes):
    count = len(ptrs)
    return count, (_vp * max(count, 1))(*ptrs), (_size * max(count, 1))(*sizes)


def grad_norm(ptrs, sizes, norm_type, threads=0):
    """optim_grad_norm over the float32 arrays at ptrs (None: skipped) of sizes[i] elements."""
    count, p, n = _arrays(ptrs, sizes)
    out = _dbl()
    err = Error()
    check(_grad_norm(count, p, n, norm_type, threads, ctypes.byref(out), ctypes.byref(err)), err.message)
    return out.value


def clip_grad_norm(ptrs, sizes, max_norm, norm_type, error_if_nonfinite, threads=0):
    """optim_clip_grad_norm in place; returns the total norm before clipping.
    With error_if_nonfinite and a non-finite norm, raises OptimError (code
    ENONFINITE) and leaves the arrays unchanged."""
    count, p, n = _arrays(ptrs, sizes)
    out = _dbl()
    err = Error()
    check(_clip_grad_norm(count, p, n, max_norm, norm_type, 1 if error_if_nonfinite else 0, threads,
                          ctypes.byref(out), ctypes.byref(err)), err.message)
    return out.value


def clip_grad_value(ptrs, sizes, clip_value, threads=0):
    """optim_clip_grad_value in place."""
    count, p, n = _arrays(ptrs, sizes)
    err = Error()
    check(_clip_grad_value(count, p, n, clip_value, threads, ctypes.byref(err)), err.message)


__all__ += ["OptimError"]
