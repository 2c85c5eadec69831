"""The binding's shape: its constants agree with the headers and with the
library, its one ctypes declaration layer agrees with every prototype it
declares, no other module declares C functions, and optim.torch's submodules
are reachable as torch.optim's are."""
import ctypes
import importlib.util
import os
import re
import subprocess
import sys
from itertools import chain

import pytest

import optim
from optim import _capi, _constants, _core

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "python", "optim")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_python_constants",
                                                  os.path.join(ROOT, "scripts", "gen_python_constants.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _generator()


def test_constants_are_the_headers():
    """python/optim/_constants.py is what the generator makes from include/*.h
    now: every enum with the same members and values, every numeric define."""
    enums, defines = GEN.parse_headers()
    header_enums = {name: dict(members) for name, (_, members) in enums.items()}
    diff = []
    for name in sorted(set(header_enums) | set(_constants.ENUMS)):
        a, b = header_enums.get(name), _constants.ENUMS.get(name)
        if a != b:
            diff.append("enum %s: header %s, _constants.py %s" % (name, a, b))
    if defines != _constants.DEFINES:
        diff.append("defines: header %s, _constants.py %s" % (defines, _constants.DEFINES))
    assert not diff, ("python/optim/_constants.py does not match include/*.h; run "
                      "`python3 scripts/gen_python_constants.py > python/optim/_constants.py`:\n" + "\n".join(diff))
    with open(os.path.join(PACKAGE, "_constants.py")) as f:
        assert f.read() == GEN.render(enums, defines)


def test_the_parser_reads_what_the_header_says(tmp_path):
    """The generator's parser on a made-up header: implicit values, negative
    and expression values, an X-macro status table, defines; internals skipped."""
    (tmp_path / "optim_x.h").write_text(
        "#ifndef OPTIM_X_H\n#define OPTIM_X_H\n"
        "#define OPTIM_ERROR_MAP(XX) \\\n    XX(OK, 0, \"ok\") \\\n    XX(EBAD, -7, \"bad\")\n\n"
        "typedef enum optim_status { OPTIM__FORCE = -0x7fffffff } optim_status;\n"
        "/* a comment with typedef enum fake { OPTIM_NO = 1 } fake; inside */\n"
        "typedef enum optim_k {\n    OPTIM_K_A = 3, /* three */\n    OPTIM_K_B,\n    OPTIM_K_C = OPTIM_K_A * 4\n} optim_k;\n"
        "#define OPTIM_LIMIT 64\n#define OPTIM_NEG (-1)\n#define OPTIM__INTERNAL 5\n#define OPTIM_TEXT \"x\"\n"
        "OPTIM_API int optim_f(optim_k k, const float *const *p, size_t n);\n#endif\n")
    enums, defines = GEN.parse_headers(str(tmp_path))
    assert {k: dict(v) for k, (_, v) in enums.items()} == {
        "optim_status": {"OPTIM_OK": 0, "OPTIM_EBAD": -7},
        "optim_k": {"OPTIM_K_A": 3, "OPTIM_K_B": 4, "OPTIM_K_C": 12}}
    assert defines == {"OPTIM_LIMIT": 64, "OPTIM_NEG": -1}
    assert GEN.parse_prototypes(str(tmp_path)) == {"optim_f": ("int", ["optim_k", "const float *const *", "size_t"])}


def test_the_library_agrees_with_the_constants():
    """The names the library gives each value are the header's."""
    lib = _capi
    for name, value in _constants.ENUMS["optim_status"].items():
        assert lib.optim_err_name(value).decode() == name
    for name, value in _constants.ENUMS["optim_rule"].items():
        assert lib.optim_rule_name(value).decode().upper() == name[len("OPTIM_"):]
        assert lib.optim_rule_from_name(name[len("OPTIM_"):].lower().encode()) == value
    assert lib.optim_rule_name(max(_constants.ENUMS["optim_rule"].values()) + 1) is None
    # OPTIM_RULE_COUNT is the largest value; a value below it without a name is reserved (for a rule of
    # another branch), and the library names none of them.
    assert max(_constants.ENUMS["optim_rule"].values()) == _constants.OPTIM_RULE_COUNT
    for value in set(range(1, _constants.OPTIM_RULE_COUNT + 1)) - set(_constants.ENUMS["optim_rule"].values()):
        assert lib.optim_rule_name(value) is None
    for name, value in _constants.ENUMS["optim_hparam"].items():
        field = lib.optim_hparam_name(value).decode()
        assert field.upper() == name[len("OPTIM_HP_"):]
        assert lib.optim_hparam_from_name(field.encode()) == value
    assert len(_constants.ENUMS["optim_hparam"]) == _constants.OPTIM_HP_COUNT
    for name, value in _constants.ENUMS["optim_isa"].items():
        if value:  # OPTIM_ISA_AUTO has no path name
            assert lib.optim_isa_name(value).decode().upper() == name[len("OPTIM_ISA_"):]
    assert lib.optim_version_number() == _constants.OPTIM_VERSION_NUMBER
    assert optim.__version__ == "%d.%d.%d" % (_constants.OPTIM_VERSION_MAJOR, _constants.OPTIM_VERSION_MINOR,
                                              _constants.OPTIM_VERSION_PATCH)
    assert ctypes.sizeof(_capi.Error) == ctypes.sizeof(ctypes.c_int) + _constants.OPTIM_ERRMSG_MAX


_ENUM_TYPES = set()


def _ctype(c_type):
    """The ctypes type the binding must use for a C type of the headers."""
    t = " ".join(c_type.replace("const ", "").split())
    if t in ("int", "optim_rule", "optim_hparam", "optim_nonfinite", "optim_match", "optim_isa", "optim_status",
             "optim_cyclic_mode", "optim_schedule_kind", "optim_dtype", "optim_sparse_support"):
        return ctypes.c_int
    scalars = {"void": None, "unsigned": ctypes.c_uint, "size_t": ctypes.c_size_t, "int64_t": ctypes.c_int64,
               "uint64_t": ctypes.c_uint64,
               "double": ctypes.c_double}
    if t in scalars:
        return scalars[t]
    if t == "char *":
        return ctypes.c_char_p
    if t == "optim_error *":
        return ctypes.POINTER(_capi.Error)
    if t.endswith("**") or t.endswith("* *"):  # optim **, float **, float *const *, optim_schedule *const *
        return ctypes.POINTER(ctypes.c_void_p)
    base = t[:-1].strip()
    if base in ("int", "optim_hparam", "optim_dtype"):
        return ctypes.POINTER(ctypes.c_int)
    if base in ("size_t", "int64_t", "double"):
        return ctypes.POINTER(scalars[base])
    return ctypes.c_void_p  # a pointer to one object or to an array the caller owns


def test_every_declaration_is_the_headers_prototype():
    protos = GEN.parse_prototypes()
    bad = []
    # liboptim_muon's (MUON_PROTOTYPES) are declared on its own library, not as attributes of _capi
    for name, (restype, *argtypes) in list(_capi.PROTOTYPES.items()) + list(_capi.MUON_PROTOTYPES.items()):
        assert name in protos, "%s is declared in optim/_capi.py but not in include/*.h" % name
        ret, args = protos[name]
        want = (_ctype(ret), [_ctype(a) for a in args])
        got = (restype, list(argtypes))
        if want != got:
            bad.append("%s: header %s(%s) wants %s, _capi.py has %s" % (name, ret, ", ".join(args), want, got))
        if name in _capi.MUON_PROTOTYPES:
            continue
        fn = getattr(_capi, name)
        assert fn.restype is restype and list(fn.argtypes) == list(argtypes)
    assert not bad, "\n".join(bad)


def test_ext_declarations_are_the_private_headers_prototype():
    """EXT_PROTOTYPES (liboptim's hooks for the layers of this tree, src/optim_ext.h) match that header."""
    protos = GEN.parse_prototypes(os.path.join(ROOT, "src"))
    for name, (restype, *argtypes) in _capi.EXT_PROTOTYPES.items():
        assert name in protos, "%s is declared in optim/_capi.py but not in src/*.h" % name
        ret, args = protos[name]
        assert (restype, list(argtypes)) == (_ctype(ret), [_ctype(a) for a in args]), (name, ret, args)
        fn = getattr(_capi, name)
        assert fn.restype is restype and list(fn.argtypes) == list(argtypes)
    assert ctypes.sizeof(_core.ExtHooks) == 4 * ctypes.sizeof(ctypes.c_void_p), "struct optim_ext_hooks changed"


def test_one_declaration_layer():
    """Only optim/_capi.py sets argtypes or restype, and only it (and the
    loader) touches the library object: in the package and in the Python
    code around it (bench/, tools/)."""
    offenders = []
    for dirpath, _, files in chain.from_iterable(os.walk(os.path.join(ROOT, d))
                                                  for d in (PACKAGE, "bench", "tools", "examples")):
        for f in files:
            if not f.endswith(".py") or f in ("_capi.py",):
                continue
            path = os.path.join(dirpath, f)
            with open(path) as fh:
                text = fh.read()
            if re.search(r"\.(argtypes|restype)\b|\b_lib\.declare\b", text) or \
                    (f != "_lib.py" and re.search(r"\blib\[|\blib\.", text)):
                offenders.append(os.path.relpath(path, ROOT))
    assert not offenders, "C functions declared outside optim/_capi.py: %s" % offenders


def test_lr_scheduler_comes_with_optim_torch():
    """`import optim.torch` makes optim.torch.lr_scheduler reachable, as
    `import torch.optim` does torch.optim.lr_scheduler (a fresh interpreter,
    so that no other test imported it first)."""
    code = ("import optim.torch, torch.optim\n"
            "assert optim.torch.lr_scheduler.StepLR and torch.optim.lr_scheduler.StepLR\n"
            "import optim.torch.lr_scheduler as m\nassert m is optim.torch.lr_scheduler\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_rooms_are_small():
    """The binding's modules each hold one concern: none passes ~800 lines
    (STYLE: ask whether a longer file holds two rooms)."""
    sizes = {}
    for sub in ("", "torch"):
        d = os.path.join(PACKAGE, sub)
        for f in os.listdir(d):
            if f.endswith(".py") and f != "lr_scheduler.py":  # the schedulers' session owns that one
                with open(os.path.join(d, f)) as fh:
                    sizes[os.path.join(sub, f)] = sum(1 for _ in fh)
    big = {f: n for f, n in sizes.items() if n > 800}
    assert not big, big


@pytest.mark.parametrize("enum,prefix,names", [
    ("optim_nonfinite", "OPTIM_NONFINITE_", {"propagate", "skip", "error"}),
    ("optim_match", "OPTIM_MATCH_", {"name", "position"}),
    ("optim_eps_placement", "OPTIM_EPS_", {"outside", "inside"}),
    ("optim_cyclic_mode", "OPTIM_CYCLIC_", {"triangular", "triangular2", "exp_range"}),
])
def test_python_names_come_from_the_header(enum, prefix, names):
    """The names optim.torch accepts are the header's members, by construction."""
    assert set(_capi.enum_names(enum, prefix)) == names
