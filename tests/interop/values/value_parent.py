#!/usr/bin/env python3
"""Echoes the value cases through a worker and prints what came back.

Usage: value_parent.py [--stream] <worker-program> [args...]

One line per case: `<case> <canonical form>` or `<case> error:<text>`; the
canonical form is described in tests/interop/test_matrix.py (CANONICAL).
With --stream it streams the worker's `count` instead (STREAM_LINES there).
"""

import math
import sys
import time

from multifrost import ParentWorker

# The decoder's limit (PROTOCOL §7) counts the arguments array: a value nested
# 99 deep travels as 100 levels, the most allowed; one more is refused.
LIMIT = 100


def deep(n: int) -> list:
    v: list = []
    for _ in range(n - 1):
        v = [v]
    return v


CASES = [
    ("emoji", "😀𝄞"),
    ("empty_str", ""),
    ("empty_bin", b""),
    ("empty_array", []),
    ("empty_map", {}),
    ("int64_min", -(2**63)),
    ("int64_max", 2**63 - 1),
    ("uint64_max", 2**64 - 1),
    ("nan", math.nan),
    ("inf", math.inf),
    ("neg_inf", -math.inf),
    ("neg_zero", -0.0),
    ("deep_at_limit", deep(LIMIT - 1)),
    ("deep_over_limit", deep(LIMIT)),
    ("lone_surrogate", "\ud800"),  # a Python str may hold one; UTF-8 cannot
]


def canon(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"int:{v}"
    if isinstance(v, float):
        if math.isnan(v):
            return "float:nan"
        if math.isinf(v):
            return "float:inf" if v > 0 else "float:-inf"
        if v == 0 and math.copysign(1, v) < 0:
            return "float:-0"
        return f"float:{v!r}"
    if isinstance(v, str):
        return "str:" + v.encode("utf-8", "surrogatepass").hex()
    if isinstance(v, (bytes, bytearray)):
        return "bin:" + bytes(v).hex()
    if isinstance(v, list):
        return "[" + ",".join(canon(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(canon(k) + ":" + canon(x) for k, x in v.items()) + "}"
    return f"?{type(v).__name__}"


def stream(worker: ParentWorker) -> None:
    """count(5) to its end; count(10**9) closed after 3 items, then counted()
    polled until the worker saw the close (30 s: a hang guard)."""
    try:
        for x in worker.sync.stream.count(5):
            print("item", canon(x), flush=True)
        print("end", flush=True)
    except Exception as e:
        print(f"error:{type(e).__name__}: {e}", flush=True)
    with worker.sync.stream.count(10**9) as items:
        for i, x in enumerate(items):
            print("half", canon(x), flush=True)
            if i == 2:
                break
    deadline = time.monotonic() + 30
    closed = worker.sync.call.counted()[1]
    while closed < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
        closed = worker.sync.call.counted()[1]
    print("closed", canon(closed), flush=True)


def main(argv: list) -> int:
    streaming = argv[:1] == ["--stream"]
    if streaming:
        argv = argv[1:]
    worker = ParentWorker.spawn(argv[0], args=argv[1:], default_timeout=10.0)
    worker.sync.start()
    try:
        if streaming:
            stream(worker)
            return 0
        for name, value in CASES:
            try:
                print(name, canon(worker.sync.call.echo(value)), flush=True)
            except Exception as e:  # the case's answer is the error
                print(name, f"error:{type(e).__name__}: {e}".replace("\n", " "), flush=True)
    finally:
        worker.sync.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
