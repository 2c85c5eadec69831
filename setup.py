"""`pip install .`: build liboptim and the optim command with CMake, and install
the `optim` Python package (python/optim) with both inside it:

    optim/_native/liboptim.so   the library optim._lib loads first when installed
    optim/_native/liboptim_muon.so  Muon's matrix products over OpenBLAS (optim._muon)
    optim/_native/optim         the command `python3 -m optim` (and the `optim`
                                script pip installs) runs

Offline, with Debian's python3-pip and python3-setuptools (no index, no
isolated build environment; README, "Install"):

    python3 -m venv --system-site-packages ~/venv   # torch stays visible
    ~/venv/bin/pip install --no-index --no-build-isolation .
    # or, for the system interpreter: pip install --break-system-packages --no-index --no-build-isolation .

CMake, a C compiler, OpenBLAS and zlib are needed (scripts/deps.sh build). The
version is the C header's (include/optim.h). OPTIM_CMAKE_ARGS adds CMake
options (e.g. "-DOPTIM_MPI=ON" to build the command with `--distributed`).
OPTIM_CMAKE_BUILD_DIR builds in that directory instead of build/cmake: a CMake
tree already configured from this same source directory is reconfigured with
the options above and only what they change is compiled (tests/install/pip.sh
uses the Release tree tests/install/deb.sh built).
"""
import os
import re
import shlex
import shutil
import subprocess

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def _version():
    with open(os.path.join(ROOT, "include", "optim.h")) as f:
        text = f.read()
    parts = [re.search(r"^#define OPTIM_VERSION_%s (\d+)$" % k, text, re.M) for k in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise RuntimeError("include/optim.h has no OPTIM_VERSION_MAJOR/MINOR/PATCH")
    return ".".join(m.group(1) for m in parts)


class BuildWithCMake(build_py):
    """build_py, then liboptim.so and the optim command built by CMake into the package's _native/."""

    def run(self):
        super().run()
        cmake = shutil.which("cmake")
        if not cmake:
            raise RuntimeError("pip install of optim needs CMake (Debian: apt-get install cmake; scripts/deps.sh build)")
        build_temp = os.environ.get("OPTIM_CMAKE_BUILD_DIR") or os.path.join(
            self.get_finalized_command("build").build_base, "cmake")
        build_temp = os.path.abspath(build_temp)
        os.makedirs(build_temp, exist_ok=True)
        args = [cmake, "-S", ROOT, "-B", build_temp, "-DCMAKE_BUILD_TYPE=Release", "-DOPTIM_BUILD_TESTS=OFF",
                "-DOPTIM_BUILD_TOOLS=ON", "-DOPTIM_MPI=OFF"]
        args += shlex.split(os.environ.get("OPTIM_CMAKE_ARGS", ""))
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(min(os.cpu_count() or 1, 8))
        self.announce("building liboptim with CMake in %s" % build_temp, level=2)
        subprocess.check_call(args)
        subprocess.check_call([cmake, "--build", build_temp, "-j", jobs, "--target", "optim_shared", "optim_cli",
                               "optim_muon_shared"])
        native = os.path.join(self.build_lib, "optim", "_native")
        os.makedirs(native, exist_ok=True)
        # The real file (liboptim.so is a symlink chain to liboptim.so.X.Y.Z): one copy, named as the loader looks.
        shutil.copyfile(os.path.realpath(os.path.join(build_temp, "liboptim.so")), os.path.join(native, "liboptim.so"))
        # liboptim_muon (optim.torch.Muon's matrix products over OpenBLAS), beside it: optim._muon looks there.
        shutil.copyfile(os.path.realpath(os.path.join(build_temp, "liboptim_muon.so")),
                        os.path.join(native, "liboptim_muon.so"))
        shutil.copyfile(os.path.join(build_temp, "tools", "optim"), os.path.join(native, "optim"))
        os.chmod(os.path.join(native, "optim"), 0o755)


class BinaryDistribution(Distribution):
    """The wheel holds a shared library: platform-specific, installed into platlib."""

    def has_ext_modules(self):
        return True


setup(
    name="optim",
    version=_version(),
    description="Deep-learning optimizers in C (liboptim), exact to torch.optim, with a drop-in optim.torch",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="see the repository",
    python_requires=">=3.8",
    package_dir={"": "python"},
    packages=["optim", "optim.lab", "optim.torch"],
    cmdclass={"build_py": BuildWithCMake},
    distclass=BinaryDistribution,
    entry_points={"console_scripts": ["optim = optim.__main__:main"]},
    zip_safe=False,
)
