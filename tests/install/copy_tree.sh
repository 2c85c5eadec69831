#!/bin/sh
# copy_tree.sh SRC DEST: the files git knows in checkout SRC (tracked, and new ones not ignored), into DEST:
# a clean tree, without build directories or anything else a developer's checkout holds.
set -eu
src=$1
dest=$2
if ! git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    echo "copy_tree.sh: $src is not a git checkout (the install tests copy what git ls-files lists)" >&2
    exit 1
fi
mkdir -p "$dest"
git -C "$src" ls-files -z --cached --others --exclude-standard |
    tar -C "$src" --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$dest"
[ -f "$dest/CMakeLists.txt" ] && [ -f "$dest/setup.py" ] || { echo "copy_tree.sh: the copy lacks files" >&2; exit 1; }
