"""examples/python: math_parent.py against the Python and the C math workers."""

import os
import subprocess
import sys

import pytest
from conftest import C_WORKER, EXAMPLES, REPO

EXPECTED = """add(1, 2) = 3
multiply(6, 7) = 42
factorial(10) = 3628800
factorial(-1) failed: ValueError: factorial of a negative number
echo("héllo ✓") = "héllo ✓"
transport: link
"""


def _run_parent(*target):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "math_parent.py"), *target],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env=env,
        cwd=REPO,
    )


def test_math_parent_with_python_worker():
    proc = _run_parent(str(EXAMPLES / "math_worker.py"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED


@pytest.fixture(scope="module")
def c_worker():
    if not C_WORKER.is_file():
        if not shutil_which("cmake") or not shutil_which("ninja"):
            pytest.skip("build/math_worker is missing and cmake/ninja are not installed")
        subprocess.run(["cmake", "-S", ".", "-B", "build", "-G", "Ninja"], cwd=REPO, check=True, capture_output=True)
        subprocess.run(
            ["cmake", "--build", "build", "--target", "math_worker"], cwd=REPO, check=True, capture_output=True
        )
    return str(C_WORKER)


def shutil_which(name):
    import shutil

    return shutil.which(name)


def test_math_parent_with_c_worker(c_worker):
    proc = _run_parent(c_worker)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED


def test_math_worker_connect_mode(home):
    """`math_worker.py <service-id>` serves in connect mode."""
    from multifrost import ParentWorker

    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "math_worker.py"), "math-service"])
    try:
        worker = ParentWorker.connect_sync("math-service", timeout=30.0)
        try:
            assert worker.sync.call.factorial(5) == 120
            assert worker.sync.call.echo({"k": [1, "ü"]}) == {"k": [1, "ü"]}
        finally:
            worker.sync.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_math_parent_with_a_pool_of_python_workers():
    """`--workers N`: the same lines, then `pool: N workers, pids ...` (the pool's pids)."""
    proc = _run_parent("--workers", "3", str(EXAMPLES / "math_worker.py"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(EXPECTED)
    last = proc.stdout[len(EXPECTED) :].splitlines()
    assert len(last) == 1 and last[0].startswith("pool: 3 workers, pids "), proc.stdout
    pids = [int(p) for p in last[0].split("pids ", 1)[1].split(" ")]
    assert len(set(pids)) == 3 and 0 not in pids
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")]
