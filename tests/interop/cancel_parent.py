"""Our parent cancels calls to the independent v4 peer worker.

Run by test_interop.py: spawns peer_worker.py through the Python binding (it
ignores the private link, so everything travels over ZeroMQ as v4 messages).
The peer predates `cancel` and ignores it (as the protocol asks of unknown
message types): a cancelled call ends at once for our caller, the peer runs
it to its end anyway, and the next call is answered. A missing function
reaches our caller as MF_ERR_NO_SUCH_FUNCTION, from the peer's v4 text.
Prints one JSON object; the test judges it.

    PYTHONPATH=bindings/python MULTIFROST_LIB=target/release/libmultifrost.so \
        python cancel_parent.py
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from multifrost import CallTimeoutError, NoSuchFunctionError, ParentWorker

PEER_WORKER = Path(__file__).resolve().parent / "peer_worker.py"


async def main() -> int:
    # cancel_grace 0: the peer's ignored cancels must not get it stopped.
    worker = ParentWorker.spawn(PEER_WORKER, sys.executable, cancel_grace=0)
    await worker.start()
    report: dict[str, object] = {}
    try:
        pid = await worker.acall.pid()
        sleeping = asyncio.ensure_future(worker.acall.sleep(800))
        await asyncio.sleep(0)  # sent
        sleeping.cancel()
        try:
            await sleeping
            report["cancelled"] = "not cancelled"
        except asyncio.CancelledError:
            report["cancelled"] = "CancelledError"
        # The peer is single-threaded: this waits for the ignored sleep, and its
        # late answer must not be taken for this call's.
        report["next"] = await worker.acall.add(20, 22)
        try:
            await worker.acall.with_options(timeout=0.2).sleep(800)
            report["timed_out"] = "answered"
        except CallTimeoutError as e:
            report["timed_out"] = str(e)
        report["after_timeout"] = await worker.acall.echo("still serving")
        try:
            await worker.acall.no_such_function(1)
            report["missing"] = "answered"
        except NoSuchFunctionError as e:
            report["missing"] = {"status": int(e.status), "text": str(e)}
        report["same_pid"] = await worker.acall.pid() == pid
        report["stats"] = {k: worker.metrics[k] for k in ("cancels", "escalations", "in_flight")}
    except BaseException as e:  # noqa: BLE001 - the test judges every outcome
        report["failed"] = f"{type(e).__name__}: {e}"
    finally:
        await worker.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
