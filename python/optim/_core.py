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

from ._lib import Error, OptimError, check, lib

__all__ = ["Handle", "HParams", "rule_id", "hparam_id", "rule_uses", "slot_names", "rule_has_step"]

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
_step_with = _fn("optim_step_with", _int, _vp, _size, ctypes.POINTER(_vp), ctypes.POINTER(_vp))
_state_slot = _fn("optim_state_slot", _int, _vp, _size, _int, ctypes.POINTER(_vp), ctypes.POINTER(_int))
_state_set_initialized = _fn("optim_state_set_initialized", _int, _vp, _size, _int, _int)
_param_get_step = _fn("optim_param_get_step", _int, _vp, _size, ctypes.POINTER(_i64))
_param_set_step = _fn("optim_param_set_step", _int, _vp, _size, _i64)
_param_get_mu_product = _fn("optim_param_get_mu_product", _int, _vp, _size, ctypes.POINTER(_dbl))
_param_set_mu_product = _fn("optim_param_set_mu_product", _int, _vp, _size, _dbl)
_param_reset_state = _fn("optim_param_reset_state", _int, _vp, _size)

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


__all__ += ["OptimError"]
