"""Every parent against every worker: C, C++, Go, Node, Python bindings and
the independent pyzmq peer, through their example programs, in three ways:

- spawn mode (the default: our own pairs talk over the private link),
- spawn mode with the private link off (`--no-private-link`: our own pairs
  talk over ZeroMQ),
- connect mode: each worker registered under a service id in a temporary
  HOME, each parent reaching it by id (`--connect ID`).

Each example parent calls add, multiply, factorial (also with -1, which must
fail with the worker's text) and echo, prints what it got and the transport
its calls took; the peer parent runs its conformance checks instead. Run
after the bindings are built (`make test-matrix`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

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
LIBRARY = ["c", "cpp", "go", "node", "python"]  # the bindings of this library, without the peer


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


def transport(out: str) -> str:
    """The transport an example parent reports: a `transport: X` line, or
    the `transport` of its `stats: {...}` line (C, C++)."""
    for line in out.splitlines():
        if line.startswith("transport: "):
            return line.split(": ", 1)[1]
        if line.startswith("stats: "):
            return json.loads(line.split(": ", 1)[1])["transport"]
    raise AssertionError(f"no transport in the output:\n{out}")


def check_parent(parent: str, out: str) -> None:
    if parent == "peer":
        assert "FAIL" not in out, out
        assert out.count("ok ") >= 10, out
    elif parent == "c":
        check_c_parent(out)
    else:
        check_example_parent(out)


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
    check_parent(parent, out)
    if parent != "peer":
        # Our workers take the private link; the peer ignores it and connects to the port.
        assert transport(out) == ("zmq" if worker == "peer" else "link"), out


@pytest.mark.parametrize("worker", LIBRARY)
@pytest.mark.parametrize("parent", LIBRARY)
def test_parent_calls_worker_over_zeromq(parent: str, worker: str, go_bin: Path, tmp_path: Path) -> None:
    """The private link off: our own pairs put every byte on the protocol's wire."""
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("COMLINK_ZMQ_PORT", None)
    cmd = parents(go_bin)[parent] + ["--no-private-link"] + workers(go_bin)[worker]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    check_parent(parent, r.stdout)
    assert transport(r.stdout) == "zmq", r.stdout


def pool_pids(out: str, n: int) -> list[int]:
    """The pids of a `pool: N workers, pids A B ...` line."""
    line = next((l for l in out.splitlines() if l.startswith("pool: ")), None)
    assert line is not None, f"no pool line in the output:\n{out}"
    head, _, pids = line.partition(", pids ")
    assert head == f"pool: {n} workers", line
    return [int(p) for p in pids.split()]


@pytest.mark.parametrize("worker", NAMES)
@pytest.mark.parametrize("parent", LIBRARY)
def test_parent_calls_a_pool_of_workers(parent: str, worker: str, go_bin: Path, tmp_path: Path) -> None:
    """A pool of two workers of every language (the peer too) behind each binding's parent."""
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("COMLINK_ZMQ_PORT", None)
    cmd = parents(go_bin)[parent] + ["--workers", "2"] + workers(go_bin)[worker]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    check_parent(parent, r.stdout)
    pids = pool_pids(r.stdout, 2)
    assert len(set(pids)) == 2 and all(p > 0 for p in pids), r.stdout
    # The parent reaped both before it exited.
    assert not [p for p in pids if Path(f"/proc/{p}").exists()], pids


def service_command(worker: str, go: Path, service_id: str) -> list[str]:
    cmd = [a for a in workers(go)[worker] if a != "--worker"]
    return cmd + (["--service", service_id] if worker == "peer" else [service_id])


def registry(home: Path) -> dict:
    path = home / ".multifrost" / "services.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def services(go_bin: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """Every worker serving in connect mode under `math-<name>`, registered in a
    temporary HOME; stopped with SIGTERM afterwards, which must take each one
    out of the registry, and the HOME removed."""
    home = Path(tempfile.mkdtemp(prefix="mf-matrix-home-"))
    env = dict(os.environ, HOME=str(home))
    env.pop("COMLINK_ZMQ_PORT", None)
    ids = {name: f"math-{name}" for name in NAMES}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, service_id in ids.items():
            procs[name] = subprocess.Popen(service_command(name, go_bin, service_id), env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while set(ids.values()) - set(registry(home)):
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} worker exited: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, f"not all registered: {registry(home)}"
            time.sleep(0.05)
        for name, service_id in ids.items():
            assert registry(home)[service_id]["pid"] == procs[name].pid
        yield ids, home
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} worker exited while parents used it: {proc.communicate()[1]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        stopped = {}
        for name, proc in procs.items():
            try:
                stopped[name] = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                stopped[name] = "killed after 10 s"
            proc.stderr.close()
        left = registry(home)
        shutil.rmtree(home, ignore_errors=True)
    assert all(code == 0 for code in stopped.values()), stopped
    assert not set(ids.values()) & set(left), left


@pytest.mark.parametrize("worker", NAMES)
@pytest.mark.parametrize("parent", NAMES)
def test_parent_connects_to_worker_by_service_id(parent: str, worker: str, go_bin: Path,
                                                 services: tuple[dict[str, str], Path]) -> None:
    if parent == "peer" and worker == "peer":
        pytest.skip("the peer against itself is not our interop (its own README covers it)")
    ids, home = services
    env = dict(os.environ, HOME=str(home))
    env.pop("COMLINK_ZMQ_PORT", None)
    if parent == "peer":
        cmd = [PY, str(HERE / "peer_parent.py"), "connect", ids[worker]]
    else:
        cmd = parents(go_bin)[parent] + ["--connect", ids[worker]]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    check_parent(parent, r.stdout)
    if parent != "peer":
        assert transport(r.stdout) == "zmq", r.stdout


# ---------------------------------------------------------------------------
# Values across languages: each value parent (tests/interop/values/) echoes the
# same cases through a worker's `echo` and prints `<case> <canonical form>`.
#
# CANONICAL: nil, true, false; int:<decimal> (any integer width or signedness);
# float:<x> with x nan, inf, -inf, -0 or the number; str:<hex of the bytes>;
# bin:<hex>; [a,b,...]; {k:v,...}. A failed call prints `error:<text>`.
# Node has one number type: an integral number prints as int.

VALUES = HERE / "values"
SENT = {
    "emoji": "str:" + "😀𝄞".encode().hex(),
    "empty_str": "str:",
    "empty_bin": "bin:",
    "empty_array": "[]",
    "empty_map": "{}",
    "int64_min": f"int:{-2**63}",
    "int64_max": f"int:{2**63 - 1}",
    "uint64_max": f"int:{2**64 - 1}",
    "nan": "float:nan",
    "inf": "float:inf",
    "neg_inf": "float:-inf",
    "neg_zero": "float:-0",
    "deep_at_limit": "[" * 99 + "]" * 99,  # 100 levels with the arguments array: the limit (PROTOCOL §7)
}


DEPTH_REFUSED = "arguments are not one msgpack array: nesting exceeds the depth limit"


def expected_values(parent: str, worker: str) -> dict[str, str]:
    """What each parent must get back from each worker: the value it sent,
    except where a binding's documented mapping changes it (README, Values
    across languages). Nesting beyond the limit is refused by the parent's
    own core before it is sent, with each binding's invalid-argument error."""
    want = dict(SENT)
    want["deep_over_limit"] = "error:" + {
        "c": f"MF_ERR_INVALID_ARGUMENT: {DEPTH_REFUSED}",
        "go": f'multifrost: call "echo": {DEPTH_REFUSED}',
        "node": f"InvalidArgumentError(MF_ERR_INVALID_ARGUMENT): {DEPTH_REFUSED}",
        "python": f"InvalidArgumentError: {DEPTH_REFUSED}",
    }[parent]
    # A lone UTF-16 surrogate is not Unicode: Node's UTF-8 encoder sends U+FFFD in its
    # place; Python refuses to encode it, and Go refuses its UTF-8 form (ED A0 80, not
    # UTF-8), so nothing is sent.
    if parent == "node":
        want["lone_surrogate"] = "str:" + "\ufffd".encode().hex()
    if parent == "go":  # a Go string may hold any bytes; one that is not UTF-8 is refused unsent
        want["lone_surrogate"] = ('error:multifrost: call "echo": argument 1 (string): '
                                  "string is not valid UTF-8; pass []byte for bytes")
    if parent == "python":
        want["lone_surrogate"] = ("error:UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800' "
                                  "in position 0: surrogates not allowed")
    return want


@pytest.fixture(scope="session")
def value_parents(go_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("value-parents")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "multifrost"], capture_output=True, text=True,
                           check=True).stdout.split()
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(out / "value_parent_c"),
                    str(VALUES / "value_parent.c"), *flags, "-lm"], check=True, capture_output=True, timeout=120)
    env = dict(os.environ, CGO_ENABLED="1", GOFLAGS="-buildvcs=false")
    subprocess.run([GO, "build", "-o", str(out / "value_parent_go"), "."], cwd=VALUES / "go", env=env, check=True,
                   capture_output=True, timeout=300)
    return {
        "c": [str(out / "value_parent_c")],
        "go": [str(out / "value_parent_go")],
        "node": [str(NODE), str(VALUES / "value_parent.js")],
        "python": [PY, str(VALUES / "value_parent.py")],
    }


def parse_values(out: str) -> dict[str, str]:
    got = {}
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        got[name] = value
    return got


VALUE_RUNS: dict[tuple[str, str], dict[str, str]] = {}


def echo_values(parent: str, worker: str, go: Path, value_parents: dict[str, list[str]]) -> dict[str, str]:
    """Runs one value parent against one worker (once per session)."""
    if (parent, worker) not in VALUE_RUNS:
        home = Path(tempfile.mkdtemp(prefix="mf-values-home-"))
        try:
            env = dict(os.environ, HOME=str(home))
            env.pop("COMLINK_ZMQ_PORT", None)
            cmd = value_parents[parent] + workers(go)[worker]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        if r.returncode != 0:
            pytest.fail(f"{cmd}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        VALUE_RUNS[(parent, worker)] = parse_values(r.stdout)
    return dict(VALUE_RUNS[(parent, worker)])


VALUE_PARENTS = ["c", "go", "node", "python"]


@pytest.mark.parametrize("worker", NAMES)
@pytest.mark.parametrize("parent", VALUE_PARENTS)
def test_values_cross_languages(parent: str, worker: str, go_bin: Path,
                                value_parents: dict[str, list[str]]) -> None:
    got = echo_values(parent, worker, go_bin, value_parents)
    assert got == expected_values(parent, worker)


# ---------------------------------------------------------------------------
# Streams across languages (issue #20): each value parent run with --stream
# reads `count(5)` from a test worker whose `count` yields (a C handler's
# mf_reply_yield_json, a Go Yield, a Node async generator, a Python
# generator), then reads 3 items of `count(1e9)` and leaves the loop, which
# closes the stream, and polls the worker's `counted()` ([items yielded,
# count streams closed]) until the handler saw the close. It prints one line
# per item (`item <canonical form>`, `half <canonical form>`), `end` at the
# end of the first stream, then `closed <canonical form of the closed count>`.

STREAM_LINES = [f"item int:{i}" for i in range(5)] + ["end"] + [f"half int:{i}" for i in range(3)] + ["closed int:1"]


@pytest.fixture(scope="session")
def stream_workers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("stream-workers")
    env = dict(os.environ, CGO_ENABLED="1", GOFLAGS="-buildvcs=false")
    subprocess.run([GO, "build", "-o", str(out / "go_test_worker"), "./internal/testworker"],
                   cwd=ROOT / "bindings" / "go", env=env, check=True, capture_output=True, timeout=300)
    return {
        "c": [str(BUILD / "tests" / "c" / "c_test_worker")],
        "go": [str(out / "go_test_worker")],
        "node": [str(NODE), str(ROOT / "bindings" / "node" / "test" / "fixtures" / "worker.js"), "--worker"],
        "python": [PY, str(ROOT / "bindings" / "python" / "tests" / "sample_worker.py"), "--worker"],
    }


@pytest.mark.parametrize("worker", ["c", "go", "node", "python"])
@pytest.mark.parametrize("parent", VALUE_PARENTS)
def test_streams_cross_languages(parent: str, worker: str, value_parents: dict[str, list[str]],
                                 stream_workers: dict[str, list[str]], tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("COMLINK_ZMQ_PORT", None)
    cmd = value_parents[parent] + ["--stream"] + stream_workers[worker]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.stdout.splitlines() == STREAM_LINES, f"{cmd}\nstderr:\n{r.stderr}"
