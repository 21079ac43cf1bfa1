#!/usr/bin/env python3
"""Spawns a math worker, calls each of its functions and prints the results.

Usage: math_parent.py [--no-private-link] [--workers N] <worker-program-or-script> [args...]
       math_parent.py --connect <service-id-or-tcp-endpoint>

--no-private-link puts every byte on ZeroMQ; the last line printed is the
transport the calls took (`link` or `zmq`). --workers N runs a pool of N
copies of the worker and then also prints `pool: N workers, pids <pid> ...`.

A `.py` (or any non-executable file) is run as `python3 script --worker`, a
`.js` as `node script --worker`; a compiled worker (e.g. build/math_worker)
is run directly with the args.
"""

import asyncio
import json
import sys
from pathlib import Path

try:
    from multifrost import ParentWorker, RemoteCallError
except ImportError:  # not installed: use the binding from this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python"))
    from multifrost import ParentWorker, RemoteCallError


async def main(argv: list) -> int:
    workers = None
    if argv[0] == "--connect":
        worker = await ParentWorker.connect(argv[1])
    else:
        private_link = True
        while argv[0] in ("--no-private-link", "--workers"):
            if argv[0] == "--no-private-link":
                private_link, argv = False, argv[1:]
            else:
                workers, argv = int(argv[1]), argv[2:]
        target, args = argv[0], argv[1:]
        interpreter = {"executable": "node"} if target.endswith(".js") else {}
        worker = ParentWorker.spawn(
            target, args=args, default_timeout=10.0, private_link=private_link, workers=workers, **interpreter
        )
    async with worker:
        print(f"add(1, 2) = {await worker.acall.add(1, 2)}")
        print(f"multiply(6, 7) = {await worker.acall.multiply(6, 7)}")
        print(f"factorial(10) = {await worker.acall.factorial(10)}")
        try:
            value = await worker.acall.factorial(-1)
            print(f"factorial(-1) = {value} (expected an error)")
            return 1
        except RemoteCallError as e:
            print(f"factorial(-1) failed: {e}")
        text = "héllo ✓"
        echoed = await worker.acall.echo(text)
        shown_in, shown_out = (
            json.dumps(v, ensure_ascii=False) for v in (text, echoed)
        )
        print(f"echo({shown_in}) = {shown_out}")
        print(f"transport: {worker.metrics['transport']}")
        if workers is not None:
            pids = [w["pid"] for w in worker.metrics["workers"]]
            print(f"pool: {len(pids)} workers, pids {' '.join(map(str, pids))}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1:])))
