"""The ctypes declarations of liboptim's C API: the one place where the
binding says what a C function takes and returns.

Every function the package calls is declared here, once, from the table
below (the header's types, spelled in ctypes), and is an attribute of this
module under its C name: ``_capi.optim_step_with(...)``. No other module sets
``argtypes`` or ``restype``; python/tests/test_binding.py checks every entry
against the prototype in include/*.h. Enum values and limits come from
optim._constants (generated from the headers).

Pointer arguments are raw addresses (ints) or ctypes arrays: what they point
to must stay alive for the whole call, which the callers see to (see
optim.torch._tensors). ctypes releases the GIL during every call.
"""
import ctypes

from . import _constants as C
from ._errors import OptimError
from ._lib import lib, path

__all__ = ["Error", "check", "enum_names", "version", "PROTOTYPES", "EXT_PROTOTYPES", "MUON_PROTOTYPES",
           "declare_muon"]

_int = ctypes.c_int
_uint = ctypes.c_uint
_size = ctypes.c_size_t
_i64 = ctypes.c_int64
_u64 = ctypes.c_uint64
_dbl = ctypes.c_double
_str = ctypes.c_char_p           # const char *: a NUL-terminated string
_ptr = ctypes.c_void_p           # any pointer to one object or to a caller-owned array
_ptrs = ctypes.POINTER(_ptr)     # an array of pointers, or a pointer's out-argument (optim **)
_pint = ctypes.POINTER(_int)
_psize = ctypes.POINTER(_size)
_pi64 = ctypes.POINTER(_i64)
_pdbl = ctypes.POINTER(_dbl)


class Error(ctypes.Structure):
    """struct optim_error: the detail of a failure of a handle-less call."""

    _fields_ = [("code", _int), ("message", ctypes.c_char * C.OPTIM_ERRMSG_MAX)]


_perr = ctypes.POINTER(Error)

# name: (restype, argtypes...), in the order of the headers.
PROTOTYPES = {
    # optim.h: version, errors, rules and hyperparameters
    "optim_version_number": (_uint,),
    "optim_version_string": (_str,),
    "optim_strerror": (_str, _int),
    "optim_err_name": (_str, _int),
    "optim_rule_name": (_str, _int),
    "optim_rule_from_name": (_int, _str),
    "optim_hparam_name": (_str, _int),
    "optim_hparam_from_name": (_int, _str),
    "optim_rule_uses": (_int, _int, _int),
    "optim_hparams_init": (_int, _ptr, _int, _perr),
    "optim_hparams_check": (_int, _ptr, _perr),
    "optim_hparams_set": (_int, _ptr, _int, _dbl, _perr),
    "optim_rule_slot_count": (_int, _int),
    "optim_rule_slot_name": (_str, _int, _int),
    "optim_rule_slot_kind": (_int, _int, _int),
    "optim_hparams_slots": (_uint, _ptr),
    "optim_rule_has_step": (_int, _int),
    "optim_isa_name": (_str, _int),
    "optim_isa_available": (_int, _int),
    "optim_isa_default": (_int,),
    # optim.h: the optimizer object
    "optim_create": (_int, _ptrs, _int),
    "optim_free": (None, _ptr),
    "optim_errmsg": (_str, _ptr),
    "optim_add_group": (_int, _ptr, _ptr, _psize),
    "optim_group_count": (_size, _ptr),
    "optim_group_set_hparams": (_int, _ptr, _size, _size, _pint, _pdbl),
    "optim_group_get_hparam": (_int, _ptr, _size, _int, _pdbl),
    "optim_add_param": (_int, _ptr, _size, _ptr, _ptr, _size, _str, _psize),
    "optim_add_param_ex": (_int, _ptr, _size, _ptr, _int, _ptr, _int, _size, _int, _uint, _str, _psize),
    "optim_state_dtype_check": (_int, _int, _int, _perr),
    "optim_add_param_typed": (_int, _ptr, _size, _ptr, _int, _ptr, _int, _size, _str, _psize),
    "optim_param_count": (_size, _ptr),
    "optim_rebind": (_int, _ptr, _size, _ptrs, _ptrs),
    "optim_param_set_shape": (_int, _ptr, _size, _size, _pi64),
    "optim_step": (_int, _ptr),
    "optim_step_with": (_int, _ptr, _size, _ptrs, _ptrs),
    "optim_step_with_data": (_int, _ptr, _size, _ptrs, _ptrs),
    # optim_sparse.h
    "optim_rule_sparse": (_int, _int),
    "optim_step_sparse": (_int, _ptr, _size, _ptrs, _ptrs, _ptrs),
    "optim_set_nonfinite": (_int, _ptr, _int),
    "optim_get_nonfinite": (_int, _ptr),
    "optim_last_step_skipped": (_int, _ptr),
    "optim_skipped_steps": (_i64, _ptr),
    "optim_set_clip_grad_norm": (_int, _ptr, _dbl, _dbl),
    "optim_set_clip_grad_value": (_int, _ptr, _dbl),
    "optim_get_clip_grad_value": (_dbl, _ptr),
    "optim_get_clip_grad_norm": (_int, _ptr, _pdbl, _pdbl),
    "optim_last_grad_norm": (_dbl, _ptr),
    "optim_state_slot": (_int, _ptr, _size, _int, _ptrs, _pint),
    "optim_state_slot_data": (_int, _ptr, _size, _int, _ptrs, _pint, _pint),
    "optim_state_slot_read_f32": (_int, _ptr, _size, _int, _ptr),
    "optim_state_slot_write_f32": (_int, _ptr, _size, _int, _ptr),
    "optim_state_set_initialized": (_int, _ptr, _size, _int, _int),
    "optim_param_get_step": (_int, _ptr, _size, _pi64),
    "optim_param_set_step": (_int, _ptr, _size, _i64),
    "optim_param_get_mu_product": (_int, _ptr, _size, _pdbl),
    "optim_param_set_mu_product": (_int, _ptr, _size, _dbl),
    "optim_param_reset_state": (_int, _ptr, _size),
    "optim_set_threads": (_int, _ptr, _int),
    "optim_get_threads": (_int, _ptr),
    # optim_precision.h
    "optim_param_get_flags": (_int, _ptr, _size, _ptr),
    "optim_param_master_data": (_int, _ptr, _size, _ptrs),
    "optim_param_master_sync": (_int, _ptr, _size),
    "optim_set_seed": (_int, _ptr, _u64),
    "optim_get_seed": (_u64, _ptr),
    "optim_set_loss_scale": (_int, _ptr, _ptr),
    "optim_get_loss_scale": (_int, _ptr, _ptr, _pdbl, _pi64),
    "optim_loss_scale_value": (_dbl, _ptr),
    "optim_set_loss_scale_state": (_int, _ptr, _dbl, _i64),
    # optim_checkpoint.h
    "optim_save": (_int, _ptr, _str),
    "optim_load": (_int, _ptr, _str, _int),
    # optim_clip.h: over arrays the caller owns
    "optim_grad_norm": (_int, _size, _ptrs, _psize, _dbl, _int, _pdbl, _perr),
    "optim_clip_grad_norm": (_int, _size, _ptrs, _psize, _dbl, _dbl, _int, _int, _pdbl, _perr),
    "optim_clip_grad_value": (_int, _size, _ptrs, _psize, _dbl, _int, _perr),
    # optim_vec.h: vector operations over arrays the caller owns, L-BFGS's two-loop recursion
    "optim_vec_dot": (_int, _int, _size, _ptrs, _ptrs, _psize, _int, _pdbl, _perr),
    "optim_vec_axpy": (_int, _int, _size, _dbl, _ptrs, _ptrs, _psize, _int, _perr),
    "optim_vec_scale": (_int, _int, _size, _dbl, _ptrs, _ptrs, _psize, _int, _perr),
    "optim_vec_norm": (_int, _int, _size, _ptrs, _psize, _dbl, _int, _pdbl, _perr),
    "optim_lbfgs_direction": (_int, _int, _size, _size, _ptrs, _ptrs, _pdbl, _dbl, _ptr, _ptr, _pdbl, _int, _perr),
    # optim_sam.h
    "optim_sam_create": (_int, _ptrs, _ptr, _dbl, _dbl, _int, _dbl, _perr),
    "optim_sam_free": (None, _ptr),
    "optim_sam_errmsg": (_str, _ptr),
    "optim_sam_first_step_with": (_int, _ptr, _size, _ptrs, _ptrs),
    "optim_sam_second_step_with": (_int, _ptr, _size, _ptrs, _ptrs),
    "optim_sam_restore": (_int, _ptr),
    "optim_sam_last_grad_norm": (_dbl, _ptr),
    "optim_sam_is_perturbed": (_int, _ptr),
    "optim_sam_set_rho": (_int, _ptr, _dbl),
    "optim_sam_set_group": (_int, _ptr, _size, _dbl, _int, _dbl),
    # optim_schedule_free.h
    "optim_schedule_free_train": (_int, _ptr),
    "optim_schedule_free_eval": (_int, _ptr),
    "optim_schedule_free_mode": (_int, _ptr),
    "optim_schedule_free_set_mode": (_int, _ptr, _int),
    "optim_param_get_schedule_free": (_int, _ptr, _size, _pdbl, _pdbl),
    "optim_param_set_schedule_free": (_int, _ptr, _size, _dbl, _dbl),
    # optim_stats.h
    "optim_set_stats": (_int, _ptr, _int),
    "optim_stats_enabled": (_int, _ptr),
    "optim_param_stats": (_int, _ptr, _size, _ptr),
    # optim_ema.h
    "optim_set_ema": (_int, _ptr, _dbl, _int),
    "optim_ema_off": (_int, _ptr),
    "optim_get_ema": (_int, _ptr, _pint, _pdbl, _pint, _pi64, _pint),
    "optim_ema_set_count": (_int, _ptr, _i64),
    "optim_ema_param_count": (_int, _ptr, _size, _pi64),
    "optim_ema_set_param_count": (_int, _ptr, _size, _i64),
    "optim_ema_swap": (_int, _ptr),
    "optim_ema_read": (_int, _ptr, _size, _ptr, _pint),
    "optim_ema_write": (_int, _ptr, _size, _ptr),
    # optim_schedule.h
    "optim_schedule_constant": (_int, _ptrs, _dbl, _i64, _perr),
    "optim_schedule_step": (_int, _ptrs, _i64, _dbl, _perr),
    "optim_schedule_multistep": (_int, _ptrs, _pi64, _size, _dbl, _perr),
    "optim_schedule_exponential": (_int, _ptrs, _dbl, _perr),
    "optim_schedule_linear": (_int, _ptrs, _dbl, _dbl, _i64, _perr),
    "optim_schedule_polynomial": (_int, _ptrs, _i64, _dbl, _perr),
    "optim_schedule_cosine": (_int, _ptrs, _i64, _dbl, _perr),
    "optim_schedule_cosine_restarts": (_int, _ptrs, _i64, _i64, _dbl, _perr),
    "optim_schedule_one_cycle": (_int, _ptrs, _dbl, _i64, _dbl, _int, _dbl, _dbl, _int, _perr),
    "optim_schedule_cyclic": (_int, _ptrs, _dbl, _dbl, _i64, _i64, _int, _dbl, _perr),
    "optim_schedule_warmup": (_int, _ptrs, _i64, _ptr, _perr),
    "optim_schedule_wsd": (_int, _ptrs, _i64, _i64, _i64, _dbl, _int, _perr),
    "optim_schedule_sequential": (_int, _ptrs, _ptrs, _size, _pi64, _perr),
    "optim_schedule_clone": (_ptr, _ptr),
    "optim_schedule_free": (None, _ptr),
    "optim_schedule_get_kind": (_int, _ptr),
    "optim_schedule_lr": (_dbl, _ptr, _dbl, _i64),
}


# liboptim's private hooks for the layers of this tree (src/optim_ext.h, not installed): optim.torch uses
# them as the local optimizer of torch's ZeroRedundancyOptimizer (optim.torch._distributed). Declared as
# attributes like PROTOTYPES; python/tests/test_binding.py checks them against src/optim_ext.h.
EXT_PROTOTYPES = {
    "optim__ext_set_hooks": (_int, _ptr, _ptr),
    "optim__ext_set_sr_origin": (_int, _ptr, _size, _u64, _u64),
}


# liboptim_muon (include/optim_muon.h), a library of its own that optim._muon loads on first use: its
# functions are declared on that library's handle by declare_muon (checked against the header as above).
MUON_PROTOTYPES = {
    "optim_muon_attach": (_int, _ptr),
    "optim_muon_backend": (_str,),
}


def declare_muon(handle):
    """{name: handle's function with its prototype set} for MUON_PROTOTYPES (AttributeError if missing)."""
    out = {}
    for name, (restype, *argtypes) in MUON_PROTOTYPES.items():
        fn = getattr(handle, name)
        fn.restype = restype
        fn.argtypes = argtypes
        out[name] = fn
    return out


def _declare():
    """{name: the library's function with its prototype set}, for every entry."""
    out, missing = {}, []
    for name, (restype, *argtypes) in list(PROTOTYPES.items()) + list(EXT_PROTOTYPES.items()):
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
        out[name] = fn
    if missing:
        raise ImportError("%s does not export %s: it is older than this Python package; rebuild it (make)"
                          % (path, ", ".join(missing)))
    return out


_functions = _declare()
globals().update(_functions)  # each one an attribute of this module under its C name
_err_name = _functions["optim_err_name"]
_strerror = _functions["optim_strerror"]


def check(code, message=None):
    """Raise OptimError for a non-zero status, with `message` (bytes or str)
    or else the library's fixed message for the code."""
    if code == C.OPTIM_OK:
        return
    name = _err_name(code).decode()
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    if not message:
        message = _strerror(code).decode()
    raise OptimError(code, name, message)


def enum_names(enum, prefix):
    """{lower-case name: value} of a C enum's members named prefix + NAME
    ("optim_nonfinite", "OPTIM_NONFINITE_" -> {"propagate": 0, ...})."""
    return {m[len(prefix):].lower(): v for m, v in C.ENUMS[enum].items() if m.startswith(prefix)}


def _version():
    number = _functions["optim_version_number"]()
    text = _functions["optim_version_string"]().decode()
    # The constants were generated from the headers of one version: a library
    # of another major or minor version may number its enums differently.
    if number // 100 != C.OPTIM_VERSION_NUMBER // 100:
        raise ImportError("%s is liboptim %s, but this Python package was made for %d.%d.x (its constants come "
                          "from those headers): use the library built from this checkout (make), or point "
                          "OPTIM_LIBRARY at one" % (path, text, C.OPTIM_VERSION_MAJOR, C.OPTIM_VERSION_MINOR))
    return text


version = _version()
