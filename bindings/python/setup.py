"""Bundles the shared library into the package when the repository has built it.

``multifrost/lib/libmultifrost.so`` is package data. If it is not in the
source tree, but ``<repo>/target/release/libmultifrost.so`` exists (this folder
is ``<repo>/bindings/python``), that build is copied into the built package, so
``pip install ./bindings/python`` gives a package that works on its own. Set
``MULTIFROST_NO_BUNDLE=1`` to leave it out (then set ``MULTIFROST_LIB`` at run time).
"""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
LIB = "libmultifrost.so"


def _library_to_bundle():
    if os.environ.get("MULTIFROST_NO_BUNDLE"):
        return None
    in_tree = HERE / "multifrost" / "lib" / LIB
    if in_tree.is_file():
        return in_tree  # already package data
    repo_build = HERE.parents[1] / "target" / "release" / LIB
    return repo_build if repo_build.is_file() else None


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        lib = _library_to_bundle()
        if lib is not None and not self.dry_run:
            dest = Path(self.build_lib) / "multifrost" / "lib"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, dest / LIB)


cmdclass = {"build_py": BuildPyWithLibrary}

try:  # a wheel holding a native library is platform-specific
    try:
        from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1
    except ImportError:
        from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        def finalize_options(self):
            super().finalize_options()
            if _library_to_bundle() is not None:
                self.root_is_pure = False

        def get_tag(self):
            python, abi, plat = super().get_tag()
            if not self.root_is_pure:
                python, abi = "py3", "none"
            return python, abi, plat

    cmdclass["bdist_wheel"] = PlatformWheel
except ImportError:  # pragma: no cover
    pass

setup(cmdclass=cmdclass)
