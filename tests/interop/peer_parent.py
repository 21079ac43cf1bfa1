#!/usr/bin/env python3
"""Independent multifrost parent (caller side) for interop tests.

Speaks the `comlink_ipc_v4` wire protocol (see PROTOCOL.md) directly on pyzmq and
msgpack, without using libmultifrost, and runs a fixed set of conformance checks
against a worker.

Usage:
  peer_parent.py spawn <program> [args...]
      Bind a DEALER on tcp://127.0.0.1:*, start the program with
      COMLINK_ZMQ_PORT=<port> and COMLINK_WORKER_MODE=1, wait until it echoes a
      heartbeat (10 s), run the checks, send `shutdown` and wait for it to exit.
  peer_parent.py connect <service_id>
      Find the service in $HOME/.multifrost/services.json (10 s), connect a DEALER
      to tcp://127.0.0.1:<port> and run the checks.
  peer_parent.py call <function> <args-json> <expected-json> <program> [args...]
      As spawn, with one check instead of the fixed set: function(*args) must
      answer the expected result.

Prints one line per check ("ok <name>" or "FAIL <name>: <details>") to stdout.
Exit status: 0 all checks passed, 1 a check failed, 2 usage error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import msgpack
import zmq

APP_ID = "comlink_ipc_v4"
CALL_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 10.0
DISCOVER_TIMEOUT_S = 10.0
NO_REPLY_WAIT_S = 0.5
SHUTDOWN_GRACE_S = 5.0
HB_TIMESTAMP = 1700000000.25


class CheckFailed(Exception):
    pass


class Timeout(Exception):
    pass


class Reply:
    """A `response` or `error` (or heartbeat echo) addressed to one of our ids."""

    def __init__(self, msg: dict[str, Any]) -> None:
        self.msg = msg
        self.type: Any = msg.get("type")

    @property
    def result(self) -> Any:
        return self.msg.get("result")  # a nil result may be left out entirely

    @property
    def error(self) -> Any:
        return self.msg.get("error")

    def describe(self) -> str:
        if self.type == "error":
            return f"error {self.error!r}"
        if self.type == "response":
            return f"response {self.result!r}"
        return f"{self.type} {self.msg!r}"


# --------------------------------------------------------------------------- transport


class Peer:
    """A DEALER speaking comlink_ipc_v4: sends requests, waits for the matching reply."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock

    @staticmethod
    def new_message(kind: str, **fields: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"app": APP_ID, "id": str(uuid.uuid4()), "type": kind,
                               "timestamp": time.time()}
        msg.update(fields)
        return {k: v for k, v in msg.items() if v is not None}

    def send(self, msg: dict[str, Any], block: bool = True) -> None:
        """Send [empty, payload]. With block=False raises zmq.Again if no peer yet."""
        payload = msgpack.packb(msg, use_bin_type=True)
        self.sock.send_multipart([b"", payload], flags=0 if block else zmq.NOBLOCK)

    def wait_for(self, msg_id: str, timeout: float) -> Reply:
        """Wait for a reply carrying `msg_id`; other traffic is dropped (or logged)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"no reply within {timeout:g} s")
            if not self.sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                continue
            frames = self.sock.recv_multipart()
            try:
                msg = msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)
            except Exception as e:
                print(f"  (dropped undecodable payload: {e})", file=sys.stderr)
                continue
            if not isinstance(msg, dict) or msg.get("app") != APP_ID:
                print(f"  (dropped foreign payload: {msg!r})", file=sys.stderr)
                continue
            if msg.get("type") in ("stdout", "stderr"):
                print(f"  [worker {msg['type'].upper()}]: {msg.get('output')}", file=sys.stderr)
                continue
            if msg.get("id") != msg_id:
                continue  # late or unrelated reply
            return Reply(msg)

    def call(self, function: Optional[str], args: list[Any], namespace: Optional[str] = "default",
             timeout: float = CALL_TIMEOUT_S) -> Reply:
        msg = self.new_message("call", function=function, args=args, namespace=namespace,
                               metadata={"timestamp_sent": time.time()})
        self.send(msg)
        return self.wait_for(msg["id"], timeout)

    def heartbeat(self, hb_timestamp: float, timeout: float = CALL_TIMEOUT_S,
                  block: bool = True) -> tuple[str, Reply]:
        msg = self.new_message("heartbeat", metadata={"hb_timestamp": hb_timestamp})
        self.send(msg, block=block)
        return msg["id"], self.wait_for(msg["id"], timeout)


# --------------------------------------------------------------------------- checks


def same_value(a: Any, b: Any) -> bool:
    """Deep equality that also compares types (True != 1, 1 != 1.0, b"" != "")."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return bool(a == b)


def expect_result(reply: Reply, expected: Any) -> None:
    if reply.type != "response":
        raise CheckFailed(f"expected response {expected!r}, got {reply.describe()}")
    if not same_value(reply.result, expected):
        raise CheckFailed(f"expected {expected!r} ({type(expected).__name__}), "
                          f"got {reply.result!r} ({type(reply.result).__name__})")


def expect_error(reply: Reply, needle: str) -> None:
    if reply.type != "error":
        raise CheckFailed(f"expected an error containing {needle!r}, got {reply.describe()}")
    if not isinstance(reply.error, str) or needle not in reply.error:
        raise CheckFailed(f"error text {reply.error!r} does not contain {needle!r}")


ECHO_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, "", "héllo ✓",
    b"\x00\x01\xff", [1, "a", [2.5]], {"k": {"n": [1, 2]}},
]


def build_checks(peer: Peer) -> list[tuple[str, Callable[[], None]]]:
    def heartbeat() -> None:
        msg_id, reply = peer.heartbeat(HB_TIMESTAMP)
        meta = reply.msg.get("metadata")
        if reply.type != "heartbeat":
            raise CheckFailed(f"expected a heartbeat echo, got {reply.describe()}")
        if reply.msg.get("id") != msg_id:
            raise CheckFailed("echo carries another id")
        if not isinstance(meta, dict):
            raise CheckFailed(f"echo has no metadata map: {reply.msg!r}")
        if not same_value(meta.get("hb_timestamp"), HB_TIMESTAMP):
            raise CheckFailed(f"hb_timestamp {meta.get('hb_timestamp')!r} != {HB_TIMESTAMP!r}")
        if meta.get("hb_response") is not True:
            raise CheckFailed(f"hb_response is {meta.get('hb_response')!r}, expected True")

    def result_check(function: str, args: list[Any], expected: Any) -> Callable[[], None]:
        return lambda: expect_result(peer.call(function, args), expected)

    def error_check(function: Optional[str], args: list[Any], needle: str) -> Callable[[], None]:
        return lambda: expect_error(peer.call(function, args), needle)

    def namespace_other() -> None:
        try:
            reply = peer.call("add", [1, 2], namespace="other", timeout=NO_REPLY_WAIT_S)
        except Timeout:
            return
        raise CheckFailed(f"expected no reply, got {reply.describe()}")

    checks: list[tuple[str, Callable[[], None]]] = [
        ("heartbeat", heartbeat),
        ("add [1, 2]", result_check("add", [1, 2], 3)),
        ("multiply [6, 7]", result_check("multiply", [6, 7], 42)),
        ("factorial [10]", result_check("factorial", [10], 3628800)),
        ("factorial [-1]", error_check("factorial", [-1], "negative")),
    ]
    for value in ECHO_VALUES:
        checks.append((f"echo {value!r}", result_check("echo", [value], value)))
    checks += [
        ("missing function", error_check(None, [], "function")),
        ("private _secret", error_check("_secret", [], "Cannot call private method")),
        ("unknown nosuch", error_check("nosuch", [], "not found")),
        ("namespace other", namespace_other),
        ("add [2, 3] after", result_check("add", [2, 3], 5)),
    ]
    return checks


def run_checks(peer: Peer, checks: Optional[list[tuple[str, Callable[[], None]]]] = None) -> list[str]:
    """Run every check (the fixed set by default), print one line each, return
    the names that failed."""
    failed: list[str] = []
    for name, check in build_checks(peer) if checks is None else checks:
        try:
            check()
        except (CheckFailed, Timeout) as e:
            print(f"FAIL {name}: {e}", flush=True)
            failed.append(name)
        else:
            print(f"ok {name}", flush=True)
    return failed


def wait_ready(peer: Peer, proc: Optional[subprocess.Popen[bytes]]) -> None:
    """Heartbeat until the worker echoes (READY_TIMEOUT_S). A bound DEALER cannot send
    until the child has connected, so sends are non-blocking and retried."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise CheckFailed(f"worker exited with status {proc.returncode} before it was ready")
        try:
            wait = min(1.0, max(0.05, deadline - time.monotonic()))
            peer.heartbeat(time.time(), timeout=wait, block=False)
            return
        except zmq.Again:
            time.sleep(0.05)  # no connected peer yet
        except Timeout:
            pass  # sent but not echoed yet: try again with a fresh id
    raise CheckFailed(f"worker not ready within {READY_TIMEOUT_S:g} s")


def finish(failed: list[str], total_label: str) -> int:
    if failed:
        print(f"{len(failed)} check(s) failed ({total_label}): {', '.join(failed)}", flush=True)
        return 1
    print(f"all checks passed ({total_label})", flush=True)
    return 0


# --------------------------------------------------------------------------- modes


def stop_child(proc: subprocess.Popen[bytes], grace: float) -> Optional[int]:
    """Wait `grace` s for the child to exit by itself; else SIGTERM, then SIGKILL.
    Returns its status if it exited by itself, else None. Always reaps it."""
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return None


def cmd_spawn(argv: list[str], build: Callable[[Peer], list[tuple[str, Callable[[], None]]]] = build_checks) -> int:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    port = int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
    env = dict(os.environ, COMLINK_ZMQ_PORT=str(port), COMLINK_WORKER_MODE="1")
    label = f"spawn {' '.join(argv)}"
    try:
        proc = subprocess.Popen(argv, env=env)
    except OSError as e:
        print(f"FAIL start: cannot run {argv[0]!r}: {e}", flush=True)
        sock.close()
        ctx.term()
        return 1

    peer = Peer(sock)
    failed: list[str] = []
    ready = False
    try:
        try:
            wait_ready(peer, proc)
            ready = True
        except CheckFailed as e:
            print(f"FAIL ready: {e}", flush=True)
            failed.append("ready")
        if ready:
            failed = run_checks(peer, build(peer))
            peer.send(Peer.new_message("shutdown"))
    finally:
        # A worker that never became ready gets no grace period.
        status = stop_child(proc, SHUTDOWN_GRACE_S if ready else 0.0)
        sock.close()
        ctx.term()

    if ready:
        if status is None:
            print(f"FAIL shutdown: worker did not exit within {SHUTDOWN_GRACE_S:g} s "
                  f"of the shutdown message (terminated)", flush=True)
            failed.append("shutdown")
        elif status != 0:
            print(f"FAIL shutdown: worker exited with status {status}", flush=True)
            failed.append("shutdown")
        else:
            print("ok shutdown", flush=True)
    return finish(failed, label)


def pid_alive(p: Any) -> bool:
    if not isinstance(p, int) or isinstance(p, bool) or p <= 0:
        return False
    try:
        os.kill(p, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def discover(service_id: str, timeout: float) -> int:
    """Poll the registry (no lock needed: writers rename atomically) for a live entry."""
    home = os.environ.get("HOME") or str(Path.home())
    path = Path(home) / ".multifrost" / "services.json"
    deadline = time.monotonic() + timeout
    while True:
        try:
            services = json.loads(path.read_text())
        except (OSError, ValueError):
            services = {}
        entry = services.get(service_id) if isinstance(services, dict) else None
        if isinstance(entry, dict) and pid_alive(entry.get("pid")):
            port = entry.get("port")
            if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
                return port
        if time.monotonic() >= deadline:
            raise CheckFailed(f"service '{service_id}' not found within {timeout:g} s")
        time.sleep(0.1)


def cmd_connect(service_id: str) -> int:
    label = f"connect {service_id}"
    try:
        port = discover(service_id, DISCOVER_TIMEOUT_S)
    except CheckFailed as e:
        print(f"FAIL discover: {e}", flush=True)
        return finish(["discover"], label)
    print(f"ok discover (port {port})", flush=True)

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    peer = Peer(sock)
    try:
        try:
            wait_ready(peer, None)
        except CheckFailed as e:
            print(f"FAIL ready: {e}", flush=True)
            return finish(["ready"], label)
        return finish(run_checks(peer), label)
    finally:
        sock.close()
        ctx.term()


def cmd_call(argv: list[str]) -> int:
    function, args_json, expected_json = argv[:3]
    args, expected = json.loads(args_json), json.loads(expected_json)
    if not isinstance(args, list):
        print(USAGE, file=sys.stderr)
        return 2

    def build(peer: Peer) -> list[tuple[str, Callable[[], None]]]:
        return [(f"{function} {args_json}", lambda: expect_result(peer.call(function, args), expected))]

    return cmd_spawn(argv[3:], build)


USAGE = """usage: peer_parent.py spawn <program> [args...]
       peer_parent.py connect <service_id>
       peer_parent.py call <function> <args-json> <expected-json> <program> [args...]"""


def main(argv: list[str]) -> int:
    # Hand-parsed: everything after `spawn` belongs to the child, `--worker` included.
    if len(argv) >= 2 and argv[0] == "spawn":
        return cmd_spawn(argv[1:])
    if len(argv) == 2 and argv[0] == "connect":
        return cmd_connect(argv[1])
    if len(argv) >= 5 and argv[0] == "call":
        return cmd_call(argv[1:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
