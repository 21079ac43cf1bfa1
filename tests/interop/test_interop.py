"""Interop with an independent implementation of comlink_ipc_v4.

The peer (peer_worker.py, peer_parent.py) is written directly on pyzmq +
msgpack from PROTOCOL.md and shares no code with libmultifrost. Each test
drives real processes in both directions, spawn mode and connect mode, with a
temporary HOME so the user's registry is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD = Path(os.environ.get("MF_BUILD_DIR", ROOT / "build"))
CLI = ROOT / "target" / "release" / "multifrost"
PEER_WORKER = HERE / "peer_worker.py"
PEER_PARENT = HERE / "peer_parent.py"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["HOME"] = str(tmp_path)
    e.pop("COMLINK_ZMQ_PORT", None)
    return e


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def wait_registered(home: str, service: str, timeout: float = 10.0) -> dict:
    path = Path(home) / ".multifrost" / "services.json"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            entry = json.loads(path.read_text()).get(service)
            if entry:
                return entry
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{service} never appeared in {path}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_c_parent_spawns_the_peer_worker(env: dict[str, str]) -> None:
    r = run([str(BUILD / "math_parent"), sys.executable, str(PEER_WORKER), "--worker"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "add[1, 2] = 3" in r.stdout
    assert "multiply[6, 7] = 42" in r.stdout
    assert "factorial[10] = 3628800" in r.stdout
    assert "factorial[-1] failed: MF_ERR_REMOTE: ValueError: factorial of a negative number" in r.stdout
    assert '"list":[1,2.5,null,true]' in r.stdout
    assert '"requests_total":5' in r.stdout
    # The peer ignores the private link it was offered and answers on the port.
    assert '"transport":"zmq"' in r.stdout


def test_peer_parent_spawns_the_c_worker(env: dict[str, str]) -> None:
    r = run([sys.executable, str(PEER_PARENT), "spawn", str(BUILD / "math_worker")], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout
    assert r.stdout.count("ok ") >= 10, r.stdout


@pytest.mark.parametrize("worker", ["c", "python"])
def test_the_peer_parent_gets_a_yielding_handlers_items_as_one_list(worker: str, env: dict[str, str]) -> None:
    """The v4 parent knows no streams: our worker answers its call of a
    yielding handler (a C handler's mf_reply_yield_json, a Python generator
    method) with the items collected into one array."""
    program = {
        "c": [str(BUILD / "tests" / "c" / "c_test_worker")],
        "python": [sys.executable, str(ROOT / "bindings" / "python" / "tests" / "sample_worker.py"), "--worker"],
    }[worker]
    if worker == "python":
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT / "bindings" / "python"), env.get("PYTHONPATH")] if p)
        env["MULTIFROST_LIB"] = str(ROOT / "target" / "release" / "libmultifrost.so")
    r = run([sys.executable, str(PEER_PARENT), "call", "count", "[5]", "[0, 1, 2, 3, 4]", *program], env)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()  # the worker shares the peer's stdout
    assert "ok count [5]" in lines and "ok shutdown" in lines and "FAIL" not in r.stdout, r.stdout


def test_c_parent_connects_to_the_peer_worker_by_service_id(env: dict[str, str]) -> None:
    worker = subprocess.Popen(
        [sys.executable, str(PEER_WORKER), "--service", "peer-math"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_registered(env["HOME"], "peer-math")
        r = run([str(BUILD / "connect_parent"), "peer-math"], env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "peer-math: multiply(6, 7) = 42" in r.stdout
        # Exact values across the boundary, through the CLI's JSON mapping.
        for value in ["-9007199254740993", "18446744073709551615", '{"k":[1,"two",null,false]}', '"h\\u00e9llo"']:
            r = run([str(CLI), "call", "peer-math", "echo", value], env)
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout) == json.loads(value)
        r = run([str(CLI), "call", "peer-math", "factorial", "-1"], env)
        assert r.returncode != 0
        assert "ValueError" in r.stderr and "negative" in r.stderr
        r = run([str(CLI), "ping", "peer-math", "1"], env)
        assert r.returncode == 0 and "rtt" in r.stdout, r.stdout + r.stderr
        r = run([str(CLI), "services"], env)
        assert "peer-math" in r.stdout and "alive" in r.stdout
    finally:
        stop(worker)


def test_peer_parent_connects_to_the_c_worker_by_service_id(env: dict[str, str]) -> None:
    worker = subprocess.Popen(
        [str(BUILD / "math_worker"), "c-math"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        entry = wait_registered(env["HOME"], "c-math")
        assert entry["pid"] == worker.pid
        r = run([sys.executable, str(PEER_PARENT), "connect", "c-math"], env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "FAIL" not in r.stdout
    finally:
        stop(worker)
    assert worker.returncode == 0
    registry = json.loads((Path(env["HOME"]) / ".multifrost" / "services.json").read_text())
    assert "c-math" not in registry


def test_a_live_peer_service_blocks_our_worker_from_its_id(env: dict[str, str]) -> None:
    worker = subprocess.Popen(
        [sys.executable, str(PEER_WORKER), "--service", "shared-id"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        entry = wait_registered(env["HOME"], "shared-id")
        r = run([str(BUILD / "math_worker"), "shared-id"], env, timeout=20)
        assert r.returncode != 0
        assert f"service 'shared-id' already running (pid {entry['pid']}, port {entry['port']})" in r.stderr
    finally:
        stop(worker)


def test_our_parent_under_load_survives_the_peer_worker_being_killed(env: dict[str, str]) -> None:
    """SIGKILL the independent peer in the middle of a load of calls over ZeroMQ.

    Every call ends with its own result or MF_ERR_WORKER_EXITED (none waits for
    its 60 s timeout), and after the auto-restart the next calls are answered
    by a new process.
    """
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT / "bindings" / "python"), env.get("PYTHONPATH")] if p)
    env["MULTIFROST_LIB"] = str(ROOT / "target" / "release" / "libmultifrost.so")
    r = run([sys.executable, str(HERE / "crash_load_parent.py")], env, timeout=50)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert "failed" not in report, report
    load = report["load"]
    assert set(load) <= {"ok", "worker_exited"}, [o for o in load if o not in ("ok", "worker_exited")]
    assert load.count("ok") >= 10 and load.count("worker_exited") >= 1, load
    first, second = report["pids"]
    assert second != first
    assert report["after"] == ["ok"] * 20, report["after"]


def test_our_parent_cancels_calls_to_the_peer_worker_which_ignores_cancel(env: dict[str, str]) -> None:
    """A v4 worker knows no `cancel`: it ignores it and keeps serving.

    The cancelled and the timed-out call end at once for our caller; the peer
    answers them late (dropped), serves the next calls, and is never stopped
    (cancel grace 0). Its "Function 'x' not found" is MF_ERR_NO_SUCH_FUNCTION.
    """
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT / "bindings" / "python"), env.get("PYTHONPATH")] if p)
    env["MULTIFROST_LIB"] = str(ROOT / "target" / "release" / "libmultifrost.so")
    r = run([sys.executable, str(HERE / "cancel_parent.py")], env, timeout=50)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert "failed" not in report, report
    assert report["cancelled"] == "CancelledError"
    assert report["next"] == 42
    assert report["timed_out"].startswith("call to 'sleep' timed out"), report["timed_out"]
    assert report["after_timeout"] == "still serving"
    assert report["missing"] == {"status": 13, "text": "Function 'no_such_function' not found"}
    assert report["same_pid"] is True
    # One cancel: a timeout is counted as a timeout, not as a cancel.
    assert report["stats"] == {"cancels": 1, "escalations": 0, "in_flight": 0}, report["stats"]
