"""Every parent against every worker: C, C++, Go, Node, Python bindings and
the independent pyzmq peer, all in spawn mode through their example programs.

Each example parent spawns the worker command it is given, calls add,
multiply, factorial (also with -1, which must fail with the worker's text)
and echo, and prints what it got; the peer parent runs its conformance
checks instead. Run after the bindings are built (`make test-matrix`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD = Path(os.environ.get("MF_BUILD_DIR", ROOT / "build"))
PY = sys.executable
NODE = shutil.which("node")
GO = shutil.which("go")


@pytest.fixture(scope="session")
def go_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GO is None:
        pytest.fail("go is not installed")
    out = tmp_path_factory.mktemp("go-examples")
    env = dict(os.environ, CGO_ENABLED="1", GOFLAGS="-buildvcs=false")
    for name in ("math_worker", "math_parent"):
        subprocess.run([GO, "build", "-o", str(out / name), f"./{name}"], cwd=ROOT / "examples" / "go",
                       env=env, check=True, capture_output=True, timeout=300)
    return out


def workers(go: Path) -> dict[str, list[str]]:
    return {
        "c": [str(BUILD / "math_worker")],
        "cpp": [str(BUILD / "examples" / "cpp" / "math_worker_cpp")],
        "go": [str(go / "math_worker")],
        "node": [str(NODE), str(ROOT / "examples" / "node" / "math_worker.js"), "--worker"],
        "python": [PY, str(ROOT / "examples" / "python" / "math_worker.py"), "--worker"],
        "peer": [PY, str(HERE / "peer_worker.py"), "--worker"],
    }


def parents(go: Path) -> dict[str, list[str]]:
    return {
        "c": [str(BUILD / "math_parent")],
        "cpp": [str(BUILD / "examples" / "cpp" / "math_parent_cpp")],
        "go": [str(go / "math_parent")],
        "node": [str(NODE), str(ROOT / "examples" / "node" / "math_parent.js")],
        "python": [PY, str(ROOT / "examples" / "python" / "math_parent.py")],
        "peer": [PY, str(HERE / "peer_parent.py"), "spawn"],
    }


NAMES = ["c", "cpp", "go", "node", "python", "peer"]


def check_example_parent(out: str) -> None:
    """The five lines every binding's example parent prints."""
    assert "add(1, 2) = 3" in out
    assert "multiply(6, 7) = 42" in out
    assert "factorial(10) = 3628800" in out
    failed = [line for line in out.splitlines() if line.startswith("factorial(-1) failed: ")]
    assert failed and "negative" in failed[0], out
    assert 'echo("héllo ✓") = "héllo ✓"' in out


def check_c_parent(out: str) -> None:
    assert "add[1, 2] = 3" in out
    assert "multiply[6, 7] = 42" in out
    assert "factorial[10] = 3628800" in out
    assert "factorial[-1] failed: MF_ERR_REMOTE:" in out and "negative" in out
    echo = next(line for line in out.splitlines() if line.startswith("echo["))
    value = json.loads(echo.split("] = ", 1)[1])
    assert value == {"text": "héllo ✓", "list": [1, 2.5, None, True]}


@pytest.mark.parametrize("worker", NAMES)
@pytest.mark.parametrize("parent", NAMES)
def test_parent_calls_worker(parent: str, worker: str, go_bin: Path, tmp_path: Path) -> None:
    if parent == "peer" and worker == "peer":
        pytest.skip("the peer against itself is not our interop (its own README covers it)")
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("COMLINK_ZMQ_PORT", None)
    cmd = parents(go_bin)[parent] + workers(go_bin)[worker]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, f"{cmd}\nstdout:\n{out}\nstderr:\n{r.stderr}"
    if parent == "peer":
        assert "FAIL" not in out, out
        assert out.count("ok ") >= 10, out
    elif parent == "c":
        check_c_parent(out)
    else:
        check_example_parent(out)
