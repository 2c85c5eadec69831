"""`python3 -m optim ARGS...` (and the `optim` script pip installs): the optim
command (`optim lab`, `optim bench`, `optim ckpt`, ...) with ARGS.

The command is found, in order, at:
  1. $OPTIM_COMMAND;
  2. the one installed inside this package (optim/_native/optim, which
     `pip install .` puts there, built with the library);
  3. the CMake build tree of this checkout, build/tools/optim (then any other
     build*/tools/optim next to python/, newest first);
  4. `optim` on PATH (the Debian package CPack builds installs /usr/bin/optim).
The lab's renderer is this package's optim/lab/render.py: the command is told
where it is (OPTIM_LAB_PYTHONPATH), and runs it with Debian's /usr/bin/python3
(matplotlib) unless OPTIM_PYTHON says otherwise.
"""
import glob
import os
import shutil
import sys

__all__ = ["command", "main"]


def _candidates():
    env = os.environ.get("OPTIM_COMMAND")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "_native", "optim")
    root = os.path.dirname(os.path.dirname(here))
    main = os.path.join(root, "build", "tools", "optim")
    yield main
    others = [p for p in glob.glob(os.path.join(root, "build*", "tools", "optim")) if p != main]
    for path in sorted(others, key=os.path.getmtime, reverse=True):
        yield path
    found = shutil.which("optim")
    if found and os.path.realpath(found) != os.path.realpath(sys.argv[0] or ""):
        yield found


def command():
    """The path of the optim command, or None."""
    for path in _candidates():
        if os.path.isfile(path) and os.access(path, os.X_OK):
            # An `optim` script of this package (pip's console script) is not the command.
            try:
                with open(path, "rb") as f:
                    if f.read(2) == b"#!":
                        continue
            except OSError:
                continue
            return path
    return None


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    path = command()
    if path is None:
        sys.stderr.write("optim: the optim command is not found: install the package with `pip install .` from the "
                         "optim checkout (it builds the command), build it with `make`, or set OPTIM_COMMAND\n")
        return 2
    env = dict(os.environ)
    # The renderer of the lab: this package's optim/lab/render.py.
    env.setdefault("OPTIM_LAB_PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(path, [path] + args, env)
    return 2  # not reached


if __name__ == "__main__":
    sys.exit(main())
