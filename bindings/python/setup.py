"""Bundles the shared library into the package, stripped, and tags the wheel
for the glibc it needs.

The library comes from exactly one place, chosen at build time:

1. ``MULTIFROST_BUNDLE_LIB``: the path of a built ``libmultifrost.so``;
2. otherwise ``<repo>/target/release/libmultifrost.so`` (this folder is
   ``<repo>/bindings/python``), built by ``cargo build --release``.

Nothing already lying in the source tree (``multifrost/lib/``) or in an
earlier ``build/`` folder is ever packaged: the build's ``multifrost/lib`` is
emptied and filled with a fresh copy. Without a library the build fails,
saying how to get one; ``MULTIFROST_NO_BUNDLE=1`` builds a pure package that
uses ``MULTIFROST_LIB`` or a system copy at run time instead.

The copy is stripped (``strip --strip-unneeded``). The wheel is tagged
``py3-none-linux_<arch>``; ``make wheel`` then asks auditwheel which
``manylinux_2_NN`` tag the library's glibc and libstdc++ symbol versions
allow and retags it (packaging/tag_wheel.py).
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
LIB = "libmultifrost.so"


def _no_bundle():
    return bool(os.environ.get("MULTIFROST_NO_BUNDLE"))


def _library_to_bundle():
    """The library to put in the package; raises with directions if there is none."""
    explicit = os.environ.get("MULTIFROST_BUNDLE_LIB")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SystemExit(f"multifrost: MULTIFROST_BUNDLE_LIB={explicit} is not a file")
        return path
    repo_build = HERE.parents[1] / "target" / "release" / LIB
    if repo_build.is_file():
        return repo_build
    raise SystemExit(
        "multifrost: no libmultifrost.so to bundle.\n"
        f"  Looked for {repo_build} (MULTIFROST_BUNDLE_LIB is not set).\n"
        "  Build it first: `cargo build --release` (or `make wheel`) in the repository root,\n"
        "  or set MULTIFROST_BUNDLE_LIB to a built libmultifrost.so,\n"
        "  or set MULTIFROST_NO_BUNDLE=1 to install without it (then the package needs\n"
        "  MULTIFROST_LIB at run time)."
    )


def _strip(path):
    try:
        subprocess.run(["strip", "--strip-unneeded", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:  # pragma: no cover - binutils missing
        print(f"multifrost: warning: could not strip {path} ({e}); the wheel keeps its debug info")


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        dest = Path(self.build_lib) / "multifrost" / "lib"
        shutil.rmtree(dest, ignore_errors=True)  # whatever an earlier build left
        if _no_bundle() or self.dry_run:
            return
        dest.mkdir(parents=True)
        shutil.copyfile(_library_to_bundle(), dest / LIB)
        os.chmod(dest / LIB, 0o755)
        _strip(dest / LIB)


class LibraryDistribution(Distribution):
    """A package holding a native library: its files go to platlib, as
    auditwheel and pip expect of a platform wheel."""

    def has_ext_modules(self):
        return not _no_bundle()


cmdclass = {"build_py": BuildPyWithLibrary}

try:  # a wheel holding a native library is platform-specific
    try:
        from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1
    except ImportError:
        from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        def get_tag(self):
            python, abi, plat = super().get_tag()
            if not self.root_is_pure:
                python, abi = "py3", "none"
            return python, abi, plat

    cmdclass["bdist_wheel"] = PlatformWheel
except ImportError:  # pragma: no cover
    pass

setup(cmdclass=cmdclass, distclass=LibraryDistribution)
