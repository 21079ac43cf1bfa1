"""Finding the shared library, and the error when it is missing."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import multifrost
from multifrost import _ffi

PACKAGE_DIR = Path(multifrost.__file__).resolve().parent


def _run(code, env, cwd):
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=30)


def test_loaded_library_reports_its_version():
    assert multifrost.library_version().count(".") == 2
    assert Path(multifrost.library_path()).is_file()


def test_env_var_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("MULTIFROST_LIB", str(tmp_path / "x.so"))
    assert _ffi.candidate_paths() == [tmp_path / "x.so"]


def test_default_order_package_copy_then_repository(monkeypatch):
    monkeypatch.delenv("MULTIFROST_LIB", raising=False)
    paths = _ffi.candidate_paths()
    assert paths[0] == PACKAGE_DIR / "lib" / "libmultifrost.so"
    if len(paths) > 1:
        assert paths[1] == PACKAGE_DIR.parents[2] / "target" / "release" / "libmultifrost.so"


def test_missing_library_via_env_names_the_variable(tmp_path):
    env = dict(os.environ, MULTIFROST_LIB=str(tmp_path / "nowhere" / "libmultifrost.so"))
    code = (
        "import multifrost\n"
        "try:\n"
        "    multifrost.ParentWorker.spawn('w.py').sync.start()\n"
        "except multifrost.LibraryNotFoundError as e:\n"
        "    print(e)\n"
        "    print('SEARCHED', e.searched)\n"
        "    assert isinstance(e, ImportError)\n"
    )
    proc = _run(code, env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "MULTIFROST_LIB" in proc.stdout
    assert str(tmp_path / "nowhere" / "libmultifrost.so") in proc.stdout
    assert "no such file" in proc.stdout


def test_missing_library_lists_every_place(tmp_path):
    # A copy of the package outside the repository, without a bundled library.
    site = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR, site / "multifrost", ignore=shutil.ignore_patterns("lib", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("MULTIFROST_LIB",)}
    env["PYTHONPATH"] = str(site)
    code = (
        "import multifrost\n"  # importing works without the library
        "try:\n"
        "    multifrost.library_version()\n"
        "except multifrost.LibraryNotFoundError as e:\n"
        "    print(e)\n"
    )
    proc = _run(code, env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "MULTIFROST_LIB" in out
    assert str(site / "multifrost" / "lib" / "libmultifrost.so") in out
    assert "target/release/libmultifrost.so" in out


def test_bad_library_file_is_reported(tmp_path):
    bogus = tmp_path / "libmultifrost.so"
    bogus.write_text("not a library")
    env = dict(os.environ, MULTIFROST_LIB=str(bogus))
    proc = _run(
        "import multifrost\ntry:\n    multifrost.library_version()\nexcept ImportError as e:\n    print(e)\n",
        env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cannot load" in proc.stdout and str(bogus) in proc.stdout


def test_installed_library_is_found_by_the_loader(tmp_path):
    # A copy of the package without a bundled library, away from the
    # repository; the library only where the dynamic loader looks (as after
    # `make install` + ldconfig; here through LD_LIBRARY_PATH).
    site = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR, site / "multifrost", ignore=shutil.ignore_patterns("lib", "__pycache__"))
    system = tmp_path / "system"
    system.mkdir()
    repo_lib = PACKAGE_DIR.parents[2] / "target" / "release" / "libmultifrost.so"
    built = Path(os.environ.get("MULTIFROST_LIB") or repo_lib)
    (system / "libmultifrost.so.0").symlink_to(built)
    env = {k: v for k, v in os.environ.items() if k != "MULTIFROST_LIB"}
    env.update(PYTHONPATH=str(site), LD_LIBRARY_PATH=str(system))
    proc = _run("import multifrost\nprint(multifrost.library_version(), multifrost.library_path())\n", env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    version, path = proc.stdout.split()
    assert version.count(".") == 2
    assert path == "libmultifrost.so.0"
