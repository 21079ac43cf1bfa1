"""Our parent under load while the independent peer worker is SIGKILLed.

Run by test_interop.py: spawns peer_worker.py through the Python binding
(which drives libmultifrost; the peer ignores the private link, so every call
travels over ZeroMQ), starts a load of calls, kills the worker once some have
been answered, and then checks that the restarted worker answers. Prints one
JSON object with what each call ended with; the test judges it.

    PYTHONPATH=bindings/python MULTIFROST_LIB=target/release/libmultifrost.so \
        python crash_load_parent.py
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from multifrost import ParentWorker
from multifrost.errors import WorkerExitedError

PEER_WORKER = Path(__file__).resolve().parent / "peer_worker.py"
CALLS = 150
ANSWERED_BEFORE_KILL = 10
# Far longer than the run: a call that ends by its timeout fails the test.
CALL_TIMEOUT = 60.0


def outcome(value: object, expected: float) -> str:
    if isinstance(value, WorkerExitedError):
        return "worker_exited"
    if isinstance(value, BaseException):
        return f"other: {type(value).__name__}: {value}"
    return "ok" if value == expected else f"wrong: {value!r} for {expected!r}"


async def main() -> int:
    worker = ParentWorker.spawn(
        PEER_WORKER, sys.executable, auto_restart=True, max_restart_attempts=3, default_timeout=CALL_TIMEOUT
    )
    await worker.start()
    report: dict[str, object] = {}
    try:
        first_pid = await worker.acall.pid()
        # Unique arguments: each reply must be its own call's (sleep returns ms).
        expected = [10.0 + i / 1000 for i in range(CALLS)]
        answered = asyncio.Event()
        count = 0

        async def one(ms: float) -> object:
            nonlocal count
            try:
                return await worker.acall.sleep(ms)
            except BaseException as e:  # noqa: BLE001 - the test judges every outcome
                return e
            finally:
                count += 1
                if count >= ANSWERED_BEFORE_KILL:
                    answered.set()

        tasks = [asyncio.ensure_future(one(ms)) for ms in expected]
        await answered.wait()
        os.kill(first_pid, signal.SIGKILL)
        results = await asyncio.gather(*tasks)
        report["load"] = [outcome(r, e) for r, e in zip(results, expected)]

        # Auto-restart: the next calls reach a new process. Those made while
        # it is starting wait for it; only the restart limit could refuse them.
        second_pid = await worker.acall.pid()
        report["pids"] = [first_pid, second_pid]
        after = await asyncio.gather(*(worker.acall.echo(i) for i in range(20)), return_exceptions=True)
        report["after"] = [outcome(r, i) for i, r in enumerate(after)]
    except BaseException as e:  # noqa: BLE001
        report["failed"] = f"{type(e).__name__}: {e}"
    finally:
        await worker.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
