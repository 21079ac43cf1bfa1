#!/usr/bin/env python3
"""Echoes the value cases through a worker and prints what came back.

Usage: value_parent.py <worker-program> [args...]

One line per case: `<case> <canonical form>` or `<case> error:<text>`; the
canonical form is described in tests/interop/test_matrix.py (CANONICAL).
"""

import math
import sys

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


def main(argv: list) -> int:
    worker = ParentWorker.spawn(argv[0], args=argv[1:], default_timeout=10.0)
    worker.sync.start()
    try:
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
