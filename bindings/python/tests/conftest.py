"""Shared set-up: the library under test, the worker script, an isolated HOME."""

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[2]
REPO_LIB = REPO / "target" / "release" / "libmultifrost.so"

# Test the repository's current build unless told otherwise (an installed
# package may carry an older bundled copy).
if not os.environ.get("MULTIFROST_LIB") and REPO_LIB.is_file():
    os.environ["MULTIFROST_LIB"] = str(REPO_LIB)

import multifrost  # noqa: E402

# Spawned workers run `sys.executable script --worker`: let them import the
# same multifrost package as this process.
PACKAGE_ROOT = str(Path(multifrost.__file__).resolve().parent.parent)
_pp = os.environ.get("PYTHONPATH", "")
if PACKAGE_ROOT not in _pp.split(os.pathsep):
    os.environ["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + _pp if _pp else "")

SAMPLE_WORKER = str(TESTS / "sample_worker.py")
EXAMPLES = REPO / "examples" / "python"
C_WORKER = REPO / "build" / "math_worker"


@pytest.fixture
def sample_worker() -> str:
    """Path of the test worker script."""
    return SAMPLE_WORKER


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A temporary HOME (the service registry lives under it), also for children."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
