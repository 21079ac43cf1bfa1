#!/usr/bin/env python3
"""Independent multifrost worker (child side) for interop tests.

Speaks the `comlink_ipc_v4` wire protocol (see PROTOCOL.md) directly on pyzmq and
msgpack, without using libmultifrost, so that our library can be tested against a
second, separately written implementation.

Modes:
  spawn (default)   read COMLINK_ZMQ_PORT, connect a ROUTER to tcp://localhost:<port>
  --service ID      register ID in $HOME/.multifrost/services.json, bind a ROUTER on
                    tcp://127.0.0.1:<free port>, unregister on exit

`--worker` is accepted and ignored (script workers are started as
`python3 script --worker`).

Functions served: add, multiply, factorial, echo, sleep, fail, pid; `_secret` exists
but is private and must be refused. Single-threaded: a handler runs in the receive
loop, so heartbeats wait while a call (e.g. `sleep`) is running.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

import msgpack
import zmq

APP_ID = "comlink_ipc_v4"
NAMESPACE = "default"

LOCK_RETRY_S = 0.1
LOCK_TIMEOUT_S = 10.0
LOCK_STALE_S = 10.0


def log(text: str) -> None:
    """Diagnostics go to stderr only; stdout stays silent."""
    print(f"peer_worker[{os.getpid()}]: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- functions


def add(a: Any, b: Any) -> Any:
    return a + b


def multiply(a: Any, b: Any) -> Any:
    return a * b


def factorial(n: int) -> int:
    if n < 0:
        raise ValueError("factorial of a negative number")
    return math.factorial(n)


def echo(x: Any) -> Any:
    return x


def sleep(ms: Any) -> Any:
    time.sleep(ms / 1000.0)
    return ms


def fail(msg: str) -> None:
    raise RuntimeError(msg)


def pid() -> int:
    return os.getpid()


def _secret() -> str:
    return "this must never be returned over the wire"


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "add": add,
    "multiply": multiply,
    "factorial": factorial,
    "echo": echo,
    "sleep": sleep,
    "fail": fail,
    "pid": pid,
    "_secret": _secret,
}


# --------------------------------------------------------------------------- registry


def pid_alive(p: Any) -> bool:
    """True if `p` is the PID of a running process (EPERM still means alive)."""
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


class RegistryError(Exception):
    pass


class Registry:
    """The shared service registry of PROTOCOL.md §3."""

    def __init__(self, home: Optional[str] = None) -> None:
        home = home or os.environ.get("HOME") or str(Path.home())
        self.dir = Path(home) / ".multifrost"
        self.file = self.dir / "services.json"
        self.tmp = self.dir / "services.tmp"
        self.lock_path = self.dir / "services.lock"
        self._lock_fd: Optional[int] = None

    # -- lock ------------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.chmod(self.dir, 0o700)
        except OSError:
            pass

    def _remove_if_stale(self) -> None:
        """Remove the lock file if it is older than LOCK_STALE_S or its PID is dead."""
        try:
            st = os.stat(self.lock_path)
            content = self.lock_path.read_text().strip()
        except FileNotFoundError:
            return
        except OSError:
            return
        age = time.time() - st.st_mtime
        stale = age > LOCK_STALE_S
        if not stale and content:
            try:
                stale = not pid_alive(int(content))
            except ValueError:
                stale = False  # unreadable content: only the age decides
        if stale:
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass

    def acquire(self) -> None:
        self._ensure_dir()
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                self._remove_if_stale()
                if time.monotonic() >= deadline:
                    raise RegistryError(
                        f"could not acquire registry lock {self.lock_path} "
                        f"within {LOCK_TIMEOUT_S:g} s"
                    )
                time.sleep(LOCK_RETRY_S)
                continue
            os.write(fd, str(os.getpid()).encode())
            try:
                # Advisory lock as well, as other implementations take one.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass
            self._lock_fd = fd
            return

    def release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(fd)

    # -- file ------------------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log(f"registry {self.file} unreadable, treating it as empty")
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, services: dict[str, Any]) -> None:
        """Write services.tmp, then rename it over services.json (atomic for readers)."""
        fd = os.open(self.tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(services, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(self.tmp, 0o600)
        os.replace(self.tmp, self.file)

    # -- operations ------------------------------------------------------------------

    def register(self, service_id: str, bind: Callable[[], int]) -> int:
        """Under the lock: refuse a live duplicate, call `bind()` to get the port,
        write our entry. Returns the port."""
        self.acquire()
        try:
            services = self.read()
            entry = services.get(service_id)
            if isinstance(entry, dict) and pid_alive(entry.get("pid")):
                raise RegistryError(
                    f"service '{service_id}' already running "
                    f"(pid {entry.get('pid')}, port {entry.get('port')})"
                )
            port = bind()
            services[service_id] = {
                "port": port,
                "pid": os.getpid(),
                "started": datetime.now().isoformat(),
            }
            self.write(services)
            return port
        finally:
            self.release()

    def unregister(self, service_id: str) -> None:
        """Remove our entry, only if it still carries our PID."""
        self.acquire()
        try:
            services = self.read()
            entry = services.get(service_id)
            if isinstance(entry, dict) and entry.get("pid") == os.getpid():
                del services[service_id]
                self.write(services)
        finally:
            self.release()


# --------------------------------------------------------------------------- serving


class Terminate(BaseException):
    """Raised from the SIGTERM/SIGINT handler to leave the serve loop."""


def on_signal(signum: int, _frame: Any) -> None:
    raise Terminate(signum)


class Worker:
    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self.dropped = 0
        self.running = True

    @staticmethod
    def pack(msg: dict[str, Any]) -> bytes:
        # Senders leave out fields whose value would be nil.
        payload: bytes = msgpack.packb({k: v for k, v in msg.items() if v is not None},
                                       use_bin_type=True)
        return payload

    def send(self, envelope: list[bytes], msg: dict[str, Any]) -> None:
        try:
            payload = self.pack(msg)
        except Exception as e:
            if msg.get("type") != "response":
                raise
            # A result msgpack cannot carry (e.g. an int beyond 64 bits): report it.
            payload = self.pack(self.error(msg.get("id"), f"{type(e).__name__}: {e}"))
        self.sock.send_multipart(envelope + [payload])

    @staticmethod
    def error(msg_id: Any, text: str) -> dict[str, Any]:
        return {"app": APP_ID, "id": msg_id, "type": "error", "error": text,
                "timestamp": time.time()}

    def handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self.dropped += 1
            return
        # Reply with exactly the envelope we got: [identity, empty] normally.
        envelope, payload = frames[:-1], frames[-1]
        try:
            msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception:
            self.dropped += 1  # not msgpack, or trailing bytes
            return
        if not isinstance(msg, dict) or msg.get("app") != APP_ID:
            self.dropped += 1
            return

        kind = msg.get("type")
        if kind == "call":
            self.handle_call(envelope, msg)
        elif kind == "heartbeat":
            meta = msg.get("metadata")
            hb_ts = meta.get("hb_timestamp") if isinstance(meta, dict) else None
            reply_meta: dict[str, Any] = {"hb_response": True}
            if hb_ts is not None:
                reply_meta = {"hb_timestamp": hb_ts, "hb_response": True}
            self.send(envelope, {"app": APP_ID, "id": msg.get("id"), "type": "heartbeat",
                                 "timestamp": time.time(), "metadata": reply_meta})
        elif kind == "shutdown":
            self.running = False
        # any other type: ignore

    def handle_call(self, envelope: list[bytes], msg: dict[str, Any]) -> None:
        namespace = msg.get("namespace")
        if namespace is not None and namespace != NAMESPACE:
            return  # not ours: no reply at all
        msg_id = msg.get("id")
        name = msg.get("function")
        if not isinstance(name, str) or not name or msg_id is None:
            self.send(envelope, self.error(msg_id, "message missing 'function' field"))
            return
        args = msg.get("args")
        if args is None:
            args = []
        if not isinstance(args, list):
            self.send(envelope, self.error(msg_id, "TypeError: 'args' must be an array"))
            return
        if name.startswith("_"):
            self.send(envelope, self.error(msg_id, f"Cannot call private method '{name}'"))
            return
        func = FUNCTIONS.get(name)
        if func is None:
            self.send(envelope, self.error(msg_id, f"Function '{name}' not found"))
            return
        try:
            result = func(*args)
        except Terminate:
            raise
        except Exception as e:
            self.send(envelope, self.error(msg_id, f"{type(e).__name__}: {e}"))
            return
        self.send(envelope, {"app": APP_ID, "id": msg_id, "type": "response",
                             "result": result, "timestamp": time.time()})

    def serve(self) -> None:
        while self.running:
            self.handle(self.sock.recv_multipart())


def spawn_port() -> int:
    """Port from COMLINK_ZMQ_PORT, or exit 2 with a clear message."""
    raw = os.environ.get("COMLINK_ZMQ_PORT")
    if raw is None:
        msg = "COMLINK_ZMQ_PORT is not set (start me from a parent, or use --service ID)"
    else:
        try:
            port = int(raw.strip(), 10)
        except ValueError:
            msg = f"COMLINK_ZMQ_PORT={raw!r} is not a number"
        else:
            if 1024 <= port <= 65535:
                return port
            msg = f"COMLINK_ZMQ_PORT={port} is outside 1024..65535"
    print(f"peer_worker: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Independent comlink_ipc_v4 worker for interop tests")
    ap.add_argument("--service", metavar="ID", help="connect mode: register ID and bind")
    ap.add_argument("--worker", action="store_true", help="accepted and ignored")
    opts = ap.parse_args(argv)

    port = None if opts.service else spawn_port()

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 1000)  # let the last replies out on exit
    registry: Optional[Registry] = None
    registered = False
    try:
        if opts.service:
            registry = Registry()

            def bind() -> int:
                sock.bind("tcp://127.0.0.1:*")
                endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
                return int(endpoint.rsplit(":", 1)[1])

            try:
                port = registry.register(opts.service, bind)
            except RegistryError as e:
                print(f"peer_worker: {e}", file=sys.stderr, flush=True)
                return 1
            registered = True
            log(f"service '{opts.service}' bound on tcp://127.0.0.1:{port}")
        else:
            sock.connect(f"tcp://localhost:{port}")
            log(f"connected to tcp://localhost:{port}")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            Worker(sock).serve()
        except Terminate:
            pass
    finally:
        # No more interruptions while we clean up the registry.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if registry is not None and registered:
            try:
                registry.unregister(opts.service)
            except RegistryError as e:
                log(f"unregister failed: {e}")
        sock.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
