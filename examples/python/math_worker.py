#!/usr/bin/env python3
"""A math worker: add, multiply, factorial and echo, served with multifrost.

Spawn mode (a parent started it as `python3 math_worker.py --worker`, or with
no arguments): the port comes from COMLINK_ZMQ_PORT.
Connect mode: `python3 math_worker.py math-service` registers the service id
`math-service`; parents reach it with `ParentWorker.connect("math-service")`.
"""

import sys
from pathlib import Path

try:
    from multifrost import ChildWorker
except ImportError:  # not installed: use the binding from this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python"))
    from multifrost import ChildWorker


class MathWorker(ChildWorker):
    """Arithmetic for any parent, in any language."""

    def add(self, a, b):
        return a + b

    def multiply(self, a, b):
        return a * b

    def factorial(self, n):
        if n < 0:
            raise ValueError("factorial of a negative number")
        result = 1
        for i in range(2, n + 1):
            result *= i
        return result

    def echo(self, x):
        return x


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--worker"]
    MathWorker(service_id=args[0] if args else None).run()


if __name__ == "__main__":
    main()
