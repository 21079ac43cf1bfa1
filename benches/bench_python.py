#!/usr/bin/env python3
"""The Python binding benchmark: what a Python caller of libmultifrost sees.

Cases (against build/benches/bench_worker, the same raw-msgpack worker as the
C API suite):
  acall_seq     ``await worker.acall.add(1, 2)`` one after the other   (µs/call)
  gather5000    5 000 ``worker.acall.add(i, 1)`` at once through
                ``asyncio.gather``, several batches                    (calls/s)
  sync_seq      ``worker.sync.call.add(1, 2)`` one after the other, on the
                main thread (a queue waited on in slices, for Ctrl-C)  (µs/call)
  sync_seq_thread  the same on another thread (a plain ``mf_call``)   (µs/call)
  astream_small ``async for x in worker.astream.items(n, 0)``: one stream
                of 100 000 small integers                              (items/s)
  stream_small  ``for x in worker.sync.stream.items(n, 0)``, the same   (items/s)

Every call checks its result; a wrong result or a failed call prints
"bench_python: FAILED: ..." and exits 1. The results are one JSON object on
stdout (format in benches/README.md); progress goes to stderr.

    bench_python.py [--worker build/benches/bench_worker] [--cases a,b] [--scale F]
"""

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import threading
import time

from multifrost import ParentWorker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(msg):
    print("bench_python: FAILED: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def scaled(n, scale, minimum):
    return max(minimum, int(n * scale + 0.5))


async def case_acall_seq(worker, scale, metrics, info):
    warmup, n = 300, scaled(5000, scale, 10)
    lat = []
    clock = time.perf_counter
    for i in range(warmup + n):
        if i == warmup:
            start = clock()
        t = clock()
        v = await worker.acall.add(1, 2)
        if v != 3:
            fail("add(1, 2) #%d returned %r" % (i, v))
        if i >= warmup:
            lat.append((clock() - t) * 1e6)
    mean = (clock() - start) * 1e6 / n
    metrics["acall_seq_p50_us"] = {"value": statistics.median(lat), "unit": "us", "better": "lower",
                                   "label": "await acall.add(1, 2) sequential (median)"}
    metrics["acall_seq_mean_us"] = {"value": mean, "unit": "us", "better": "lower",
                                    "label": "await acall.add(1, 2) sequential (mean)"}
    info["acall_seq_calls"] = n


async def gather_batch(worker, base, size):
    results = await asyncio.gather(*[worker.acall.add(base + k, 1) for k in range(size)])
    for k, v in enumerate(results):
        if v != base + k + 1:
            fail("add(%d, 1) returned %r" % (base + k, v))


async def case_gather5000(worker, scale, metrics, info):
    size = 5000
    batches = scaled(6, scale, 1)
    await gather_batch(worker, 0, size)  # warm-up
    rates = []
    for b in range(batches):
        t = time.perf_counter()
        await gather_batch(worker, (b + 1) * size, size)
        rates.append(size / (time.perf_counter() - t))
    metrics["gather5000_calls_per_s"] = {"value": statistics.median(rates), "unit": "call/s", "better": "higher",
                                         "label": "5000 acall.add at once via asyncio.gather (median batch)"}
    info["gather5000_batches"] = batches
    info["gather5000_rates"] = [round(r) for r in rates]


def sync_seq(worker, scale, metrics, name, where):
    warmup, n = 300, scaled(5000, scale, 10)
    lat = []
    clock = time.perf_counter
    call = worker.sync.call
    for i in range(warmup + n):
        t = clock()
        v = call.add(1, 2)
        if v != 3:
            fail("sync add(1, 2) #%d returned %r" % (i, v))
        if i >= warmup:
            lat.append((clock() - t) * 1e6)
    metrics[name + "_p50_us"] = {"value": statistics.median(lat), "unit": "us", "better": "lower",
                                 "label": "sync.call.add(1, 2) sequential, %s (median)" % where}


async def case_sync_seq(worker, scale, metrics, info):
    sync_seq(worker, scale, metrics, "sync_seq", "main thread")


async def case_sync_seq_thread(worker, scale, metrics, info):
    t = threading.Thread(target=sync_seq, args=(worker, scale, metrics, "sync_seq_thread", "another thread"))
    t.start()
    t.join()
    if "sync_seq_thread_p50_us" not in metrics:
        fail("the calling thread ended without a result")


def check_items(items, n):
    if items != n:
        fail("the stream of items(%d, 0) ended after %d items" % (n, items))


async def case_astream_small(worker, scale, metrics, info):
    async def read(n):
        i = 0
        async for x in worker.astream.items(n, 0):
            if x != i:
                fail("item #%d is %r" % (i, x))
            i += 1
        check_items(i, n)

    n = scaled(100000, scale, 100)
    await read(1000)  # warm-up
    t = time.perf_counter()
    await read(n)
    metrics["astream_small_items_per_s"] = {"value": n / (time.perf_counter() - t), "unit": "item/s",
                                            "better": "higher",
                                            "label": "async for over astream.items: 100 000 small integers"}


async def case_stream_small(worker, scale, metrics, info):
    def read(n):
        i = 0
        for x in worker.sync.stream.items(n, 0):
            if x != i:
                fail("item #%d is %r" % (i, x))
            i += 1
        check_items(i, n)

    n = scaled(100000, scale, 100)
    read(1000)  # warm-up
    t = time.perf_counter()
    read(n)
    metrics["stream_small_items_per_s"] = {"value": n / (time.perf_counter() - t), "unit": "item/s",
                                           "better": "higher",
                                           "label": "for over sync.stream.items: 100 000 small integers"}


CASES = {"acall_seq": case_acall_seq, "gather5000": case_gather5000, "sync_seq": case_sync_seq,
         "sync_seq_thread": case_sync_seq_thread, "astream_small": case_astream_small,
         "stream_small": case_stream_small}


async def main_async(args):
    metrics, info = {}, {"python": sys.version.split()[0]}
    worker = ParentWorker.spawn(args.worker, default_timeout=30.0)
    async with worker:
        for name in args.cases:
            print("bench_python: %s" % name, file=sys.stderr, flush=True)
            gc.collect()
            await CASES[name](worker, args.scale, metrics, info)
    return {"suite": "python", "metrics": metrics, "info": info}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", default=os.path.join(ROOT, "build", "benches", "bench_worker"))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown or args.scale <= 0:
        ap.error("unknown case(s) %s (have: %s)" % (", ".join(unknown), ", ".join(CASES)) if unknown
                 else "--scale must be > 0")
    try:
        result = asyncio.run(main_async(args))
    except Exception as e:  # a failed call or start
        fail("%s: %s" % (type(e).__name__, e))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
