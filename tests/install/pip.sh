#!/bin/sh
# pip.sh SRC [PYTHON [TREE]]: `pip install .` as the README's Install section says, from a clean copy of the
# checkout (git ls-files), offline (--no-index --no-build-isolation: Debian's python3-pip and
# python3-setuptools), into a venv that sees the system's packages (torch). Then, from another
# directory, with the copy removed: `import optim.torch` loads the library installed inside the
# package, an optimizer steps as torch.optim's does, `python -m optim version` and the `optim`
# script run the command installed alongside, and `optim lab` renders its report with the package's
# renderer.
# With TREE (CTest: the tree deb.sh SRC TREE left, its fixture), pip installs from TREE's copy of the
# checkout (TREE/src) and setup.py builds in TREE/b (OPTIM_CMAKE_BUILD_DIR): its CMake run reconfigures that
# Release build with setup.py's own options and compiles only what they change (the optim command, built
# without MPI), not the library again; TREE is removed once installed. Without TREE: a copy of its own.
set -eu
src=$(cd "$1" && pwd)
py=${2:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/optim-pip.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
unset PYTHONPATH OPTIM_LIBRARY OPTIM_COMMAND OPTIM_LAB_PYTHONPATH OPTIM_CMAKE_BUILD_DIR || true

if [ -n "${3:-}" ]; then
    tree=$(cd "$3" && pwd) || fail "no tree $3 (CTest: install.deb makes it)"
    [ -f "$tree/src/setup.py" ] && [ -f "$tree/b/CMakeCache.txt" ] || fail "$tree holds no copy and build from deb.sh"
    # The copy must be of this checkout: the same files, byte for byte, as git lists them now.
    "$here/copy_tree.sh" "$src" "$tmp/check"
    diff -r "$tmp/check" "$tree/src" >"$tmp/diff.log" 2>&1 ||
        fail "$tree/src is not a copy of $src as it is now: $(head -5 "$tmp/diff.log")"
    rm -rf "$tmp/check"
    copy=$tree/src
    OPTIM_CMAKE_BUILD_DIR=$tree/b
    export OPTIM_CMAKE_BUILD_DIR
else
    tree=""
    "$here/copy_tree.sh" "$src" "$tmp/src"
    copy=$tmp/src
fi
"$py" -m venv --system-site-packages --without-pip "$tmp/venv"
echo "== pip install --no-index --no-build-isolation (a copy of the checkout) into $tmp/venv"
if ! (cd "$tmp" && CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
        "$tmp/venv/bin/python" -m pip install --no-index --no-build-isolation --no-cache-dir "$copy" \
        >"$tmp/pip.log" 2>&1); then
    tail -40 "$tmp/pip.log" >&2
    fail "pip install failed"
fi
grep -q "Successfully installed optim-" "$tmp/pip.log" || fail "pip did not install optim: $(tail -3 "$tmp/pip.log")"
unset OPTIM_CMAKE_BUILD_DIR
# Nothing may refer to the tree it was built from, nor to the build.
rm -rf "$copy" ${tree:+"$tree"}
mkdir "$tmp/elsewhere"
cd "$tmp/elsewhere"

echo "== import optim.torch from another directory; a step against torch.optim"
"$tmp/venv/bin/python" - "$tmp/venv" <<'PY'
import os, sys
import optim, optim.torch, torch
venv = os.path.realpath(sys.argv[1])
lib = os.path.realpath(optim.library_path)
pkg = os.path.realpath(os.path.dirname(optim.__file__))
assert pkg.startswith(venv + os.sep), "optim imported from %s, not the venv" % pkg
assert lib == os.path.join(pkg, "_native", "liboptim.so"), "the library loaded is %s, not the package's" % lib
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
twin = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
twin.load_state_dict(model.state_dict())
ours = optim.torch.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
theirs = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.1)
x, y = torch.randn(64, 8), torch.randn(64, 1)
for _ in range(20):
    for m, o in ((model, ours), (twin, theirs)):
        o.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        o.step()
diff = max((a - b).abs().max().item() for a, b in zip(model.parameters(), twin.parameters()))
assert diff <= 1e-6, diff
print("installed optim %s (%s): AdamW as torch.optim's after 20 steps (max difference %g)" % (optim.__version__, lib, diff))
# Muon's matrix products: liboptim_muon.so from the package, beside liboptim.so
from optim import _muon
w = torch.nn.Parameter(torch.randn(16, 8))
opt = optim.torch.MuonWithAuxAdam([dict(params=[w], use_muon=True), dict(params=[model[0].bias], use_muon=False)])
w.grad, model[0].bias.grad = torch.randn(16, 8), torch.randn(16)
before = w.detach().clone()
opt.step()
assert not torch.equal(before, w.detach())
print("Muon steps through %s" % _muon.backend())
PY

echo "== python -m optim version; the optim script; optim lab with the package's renderer"
"$tmp/venv/bin/python" -m optim version >"$tmp/version.txt" 2>&1 || fail "python -m optim version: $(cat "$tmp/version.txt")"
grep -q "$("$tmp/venv/bin/python" -c 'import optim; print(optim.__version__)')" "$tmp/version.txt" ||
    fail "python -m optim version printed: $(cat "$tmp/version.txt")"
[ -x "$tmp/venv/bin/optim" ] || fail "pip installed no optim script"
"$tmp/venv/bin/optim" lab bias-correction --quick --out "$tmp/elsewhere/run" >"$tmp/lab.log" 2>&1 ||
    fail "optim lab: $(tail -5 "$tmp/lab.log")"
[ -s "$tmp/elsewhere/run/summary.json" ] && [ -s "$tmp/elsewhere/run/report.html" ] ||
    fail "optim lab wrote no report: $(ls "$tmp/elsewhere/run"; tail -5 "$tmp/lab.log")"
echo "pip install: passed"
