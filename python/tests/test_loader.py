"""How the package finds liboptim (OPTIM_LIBRARY, a bad path, a library that
is not liboptim), and the README's Python quick start, run as written."""
import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PYDIR = os.path.join(ROOT, "python")


def _python(code, env_extra, cwd=None):
    env = dict(os.environ, PYTHONPATH=PYDIR, PYTHONDONTWRITEBYTECODE="1")
    env.pop("OPTIM_LIBRARY", None)
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def _built_library():
    import optim._lib
    return os.path.abspath(optim._lib.path)


def test_optim_library_is_honoured(tmp_path):
    copy = tmp_path / "liboptim-copy.so"
    shutil.copy(_built_library(), copy)
    p = _python("import optim._lib as l; print(l.path); print(l.version)", {"OPTIM_LIBRARY": str(copy)})
    assert p.returncode == 0, p.stderr
    path, version = p.stdout.split()
    assert path == str(copy)
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)


def test_optim_library_missing_is_a_clear_import_error(tmp_path):
    missing = tmp_path / "nope" / "liboptim.so"
    p = _python("import optim.torch", {"OPTIM_LIBRARY": str(missing)})
    assert p.returncode != 0
    assert "ImportError: OPTIM_LIBRARY=%s cannot be loaded" % missing in p.stderr, p.stderr


def test_optim_library_that_is_not_liboptim(tmp_path):
    import ctypes.util
    libm = ctypes.util.find_library("m")
    if not libm:
        pytest.skip("no libm to load")
    p = _python("import optim.torch", {"OPTIM_LIBRARY": libm})
    assert p.returncode != 0
    assert "is not liboptim" in p.stderr and "ImportError" in p.stderr, p.stderr


def test_readme_python_quick_start(tmp_path):
    """The README's Python block, run as written (200 steps of a tiny model): it must run, and optim.torch.Adam
    must end where torch.optim.Adam ends from the same start."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme.split("## Python quick start", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "optim.torch.Adam(" in block
    probe = ("import torch\ntorch.manual_seed(0)\n" + block
             + "\nprint('loss', float(loss))\n")
    ours = _python(probe, {"OPTIM_LIBRARY": _built_library()}, cwd=str(tmp_path))
    assert ours.returncode == 0, ours.stderr
    theirs = _python(probe.replace("optim.torch.Adam(", "torch.optim.Adam("), {"OPTIM_LIBRARY": _built_library()},
                     cwd=str(tmp_path))
    assert theirs.returncode == 0, theirs.stderr
    a = float(ours.stdout.split("loss")[1])
    b = float(theirs.stdout.split("loss")[1])
    assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), (a, b)


def _fake_install(tmp_path):
    """A copy of the package as `pip install .` lays it out (optim/_native/liboptim.so and optim), inside a
    directory that also holds a build tree with other copies: the installed package must use its own."""
    import optim.__main__
    site = tmp_path / "python"
    shutil.copytree(os.path.join(PYDIR, "optim"), site / "optim",
                    ignore=shutil.ignore_patterns("__pycache__", "_native"))
    native = site / "optim" / "_native"
    native.mkdir()
    shutil.copy(_built_library(), native / "liboptim.so")
    stale = tmp_path / "build"
    (stale / "tools").mkdir(parents=True)
    shutil.copy(_built_library(), stale / "liboptim.so")
    exe = os.environ.get("OPTIM_LAB_EXE") or optim.__main__.command()
    if exe:
        shutil.copy(exe, native / "optim")
        shutil.copy(exe, stale / "tools" / "optim")
    return site, native, exe


def test_installed_package_loads_its_own_library_first(tmp_path):
    """pip installs liboptim.so inside the package (optim/_native); a build tree or a system library next to it
    (an older liboptim) must not win over it."""
    site, native, _ = _fake_install(tmp_path)
    env = {"PYTHONPATH": str(site)}
    p = _python("import optim._lib as l; print(l.path)", env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(native / "liboptim.so"), p.stdout
    # OPTIM_LIBRARY still comes first.
    other = tmp_path / "other.so"
    shutil.copy(_built_library(), other)
    p = _python("import optim._lib as l; print(l.path)", dict(env, OPTIM_LIBRARY=str(other)), cwd=str(tmp_path))
    assert p.returncode == 0 and p.stdout.strip() == str(other), (p.stdout, p.stderr)


def test_python_m_optim_runs_the_packaged_command(tmp_path):
    """`python3 -m optim ...` runs the optim command installed inside the package before a build tree's; from a
    checkout it finds the build tree's (or OPTIM_COMMAND)."""
    site, native, exe = _fake_install(tmp_path)
    if not exe:
        pytest.skip("the optim command is not built (OPTIM_BUILD_TOOLS=OFF)")
    p = _python("import optim.__main__ as m; print(m.command())", {"PYTHONPATH": str(site)}, cwd=str(tmp_path))
    assert p.returncode == 0 and p.stdout.strip() == str(native / "optim"), (p.stdout, p.stderr)
    p = subprocess.run([sys.executable, "-m", "optim", "version"], capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=str(site)))
    import optim
    assert p.returncode == 0 and ("optim %s" % optim.__version__) in p.stdout, (p.stdout, p.stderr)
    p = subprocess.run([sys.executable, "-m", "optim", "no-such-command"], capture_output=True, text=True,
                       timeout=120, cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=str(site)))
    assert p.returncode != 0 and "no-such-command" in p.stderr, (p.stdout, p.stderr)
