"""Which CPU paths liboptim has and which one this process runs, read from the
library itself through its public C API (optim_isa_name, optim_isa_available,
optim_isa_default), so that a test run can say what it exercised.

OPTIM_ISA=scalar|avx2|avx512|avx512bf16|neon in the environment selects the path of a
process; the library falls back to the best path for a name it cannot run,
so conftest.py checks that the path asked for is the path in use."""
import ctypes

# enum optim_isa of include/optim.h.
PATHS = {"scalar": 1, "avx2": 2, "avx512": 3, "neon": 4, "avx512bf16": 5}


def _lib():
    import optim  # the package's public attribute: the liboptim it loads
    lib = ctypes.CDLL(optim.library_path)
    lib.optim_isa_name.restype = ctypes.c_char_p
    lib.optim_isa_name.argtypes = [ctypes.c_int]
    lib.optim_isa_available.restype = ctypes.c_int
    lib.optim_isa_available.argtypes = [ctypes.c_int]
    lib.optim_isa_default.restype = ctypes.c_int
    lib.optim_isa_default.argtypes = []
    return lib


def available():
    """{path name: True if this build has it and this CPU runs it}."""
    lib = _lib()
    return {name: bool(lib.optim_isa_available(v)) for name, v in PATHS.items()}


def in_use():
    """The path this process's optimizers run by default."""
    lib = _lib()
    return lib.optim_isa_name(lib.optim_isa_default()).decode()


def report():
    """One line: the path in use and every path, exercised or not."""
    have = available()
    return "CPU path in use: %s; paths: %s" % (
        in_use(), ", ".join("%s %s" % (n, "available" if ok else "not exercised (not built or not run by this CPU)")
                            for n, ok in have.items()))
