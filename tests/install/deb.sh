#!/bin/sh
# deb.sh SRC [TREE]: the Debian package CPack builds, from a clean copy of the checkout (git ls-files):
# configure for /usr, build, `cpack -G DEB`; check its name, version (the header's) and dependencies;
# unpack it into a temporary root (dpkg -x: no root rights, nothing installed on the machine) and
# compile a C program against it twice, with pkg-config and with CMake's find_package; run both, and
# the optim command (its lab finds the renderer the package installs).
# With TREE, the copy (TREE/src) and its build (TREE/b) are made there and kept, for pip.sh to install
# from without compiling the library a second time (CTest: install.deb sets up install.pip's fixture);
# without, in a temporary directory removed at the end.
set -eu
src=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/optim-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
tree=$tmp
if [ -n "${2:-}" ]; then
    rm -rf "$2"
    mkdir -p "$2"
    tree=$(cd "$2" && pwd)
fi
"$here/copy_tree.sh" "$src" "$tree/src"
version=$(sed -n 's/^#define OPTIM_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' "$tree/src/include/optim.h" | paste -sd.)
echo "== configure (prefix /usr), build, cpack -G DEB (optim $version)"
{
    cmake -S "$tree/src" -B "$tree/b" -DCMAKE_BUILD_TYPE=Release -DOPTIM_BUILD_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/usr &&
        cmake --build "$tree/b" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" &&
        (cd "$tree/b" && cpack -G DEB)
} >"$tmp/build.log" 2>&1 || { tail -40 "$tmp/build.log" >&2; fail "the build or cpack failed"; }
deb=$(ls "$tree"/b/optim_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "cpack made no optim_*.deb: $(ls "$tree/b")"
[ "$(dpkg-deb -f "$deb" Package)" = optim ] || fail "package name $(dpkg-deb -f "$deb" Package)"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "version $(dpkg-deb -f "$deb" Version), header $version"
depends=$(dpkg-deb -f "$deb" Depends)
for d in libc6 libgomp1 libopenblas0 zlib1g; do
    case "$depends" in *"$d"*) ;; *) fail "Depends lacks $d: $depends" ;; esac
done
dpkg-deb -c "$deb" >"$tmp/contents"
for f in ./usr/bin/optim ./usr/include/optim.h ./usr/include/optim_checkpoint.h optim.pc optimConfig.cmake \
    optimTargets.cmake liboptim.so.0 liboptim.a ./usr/share/optim/python/optim/lab/render.py; do
    grep -q -- "$f" "$tmp/contents" || fail "the package lacks $f"
done
echo "$(basename "$deb"): Depends: $depends"

echo "== dpkg -x into $tmp/root; a C program with pkg-config, and with find_package(optim)"
dpkg -x "$deb" "$tmp/root"
libdir=$(dirname "$(find "$tmp/root" -name liboptim.so.0 | head -1)")
cat >"$tmp/app.c" <<'C'
#include <optim.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    float w[4] = {1, 2, 3, 4}, g[4] = {0.5f, -0.5f, 0.25f, 0};
    optim *o = NULL;
    optim_hparams hp;
    int i;
    if (optim_create(&o, OPTIM_ADAM) != OPTIM_OK) return 1;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    hp.lr = 0.1;
    if (optim_add_group(o, &hp, NULL) != OPTIM_OK || optim_add_param(o, 0, w, g, 4, "w", NULL) != OPTIM_OK) return 1;
    for (i = 0; i < 3; i++)
        if (optim_step(o) != OPTIM_OK) return 1;
    printf("optim %s: w = %.6f %.6f %.6f %.6f\n", optim_version_string(), w[0], w[1], w[2], w[3]);
    optim_free(o);
    /* Adam moves each element by about lr per step against its gradient's sign (0 stays). */
    return (w[0] < 0.71f && w[0] > 0.69f && w[1] > 2.29f && w[3] == 4.0f) ? 0 : 2;
}
C
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cflags=$(pkg-config --cflags optim)
case "$cflags" in *"$tmp/root/"*) ;; *) fail "pkg-config --cflags optim gives '$cflags', not the unpacked root" ;; esac
# shellcheck disable=SC2046
cc -std=c11 -o "$tmp/app-pc" "$tmp/app.c" $(pkg-config --cflags --libs optim) || fail "cc with pkg-config"
LD_LIBRARY_PATH="$libdir" "$tmp/app-pc" || fail "the pkg-config program"
ldd_out=$(LD_LIBRARY_PATH="$libdir" ldd "$tmp/app-pc" | grep liboptim)
case "$ldd_out" in *"$tmp/root/"*) ;; *) fail "the program loads $ldd_out, not the package's" ;; esac
mkdir "$tmp/cm"
cp "$tmp/app.c" "$tmp/cm/app.c"
cat >"$tmp/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.16)
project(app C)
find_package(optim REQUIRED)
add_executable(app app.c)
target_link_libraries(app PRIVATE optim::optim_shared)
CM
{ cmake -S "$tmp/cm" -B "$tmp/cm/b" -DCMAKE_PREFIX_PATH="$tmp/root/usr" && cmake --build "$tmp/cm/b"; } \
    >"$tmp/cm.log" 2>&1 || { tail -30 "$tmp/cm.log" >&2; fail "find_package(optim) build"; }
grep -q "$tmp/root/usr" "$tmp/cm/b/CMakeCache.txt" || fail "find_package found another optim"
LD_LIBRARY_PATH="$libdir" "$tmp/cm/b/app" || fail "the find_package program"

echo "== the optim command of the package"
# The copy it was built from moved out of reach meanwhile: the command's last resort is the renderer of the
# source tree compiled into it, which would hide a renderer the package does not install or cannot find.
mv "$tree/src" "$tree/src.away"
"$tmp/root/usr/bin/optim" version | grep -q "$version" || fail "optim version: $("$tmp/root/usr/bin/optim" version)"
"$tmp/root/usr/bin/optim" lab bias-correction --quick --out "$tmp/run" >"$tmp/lab.log" 2>&1 ||
    fail "optim lab: $(tail -5 "$tmp/lab.log")"
[ -s "$tmp/run/report.html" ] || fail "optim lab rendered no report: $(tail -5 "$tmp/lab.log")"
mv "$tree/src.away" "$tree/src"
echo "cpack -G DEB: passed"
