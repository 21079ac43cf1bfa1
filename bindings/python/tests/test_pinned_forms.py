"""The pinned API forms of issue 5, exactly as written, against examples/python/math_worker.py."""

import asyncio
import signal
import subprocess
import sys
import uuid

import pytest
from conftest import EXAMPLES

from multifrost import ChildWorker, CircuitOpenError, ParentWorker, RemoteCallError

MATH_WORKER = str(EXAMPLES / "math_worker.py")


def test_async_with_spawn_acall():
    async def main():
        async with ParentWorker.spawn(MATH_WORKER) as worker:
            result = await worker.acall.factorial(10)
        return result

    assert asyncio.run(main()) == 3628800


def test_sync_start_call_close():
    worker = ParentWorker.spawn(MATH_WORKER)
    worker.sync.start()
    result = worker.sync.call.factorial(10)
    worker.sync.close()
    assert result == 3628800


def test_spawn_returns_an_unstarted_worker():
    worker = ParentWorker.spawn(MATH_WORKER)
    assert not worker.is_started
    assert worker.metrics == {}
    assert worker.pid is None
    worker.sync.close()  # closing a never-started worker is fine


def test_await_start_then_close():
    async def main():
        worker = ParentWorker.spawn(MATH_WORKER)
        await worker.start()
        try:
            return await worker.acall.add(2, 3), worker.is_started
        finally:
            await worker.close()

    assert asyncio.run(main()) == (5, True)


def test_remote_error_is_remote_call_error():
    async def main():
        async with ParentWorker.spawn(MATH_WORKER) as worker:
            with pytest.raises(RemoteCallError) as info:
                await worker.acall.factorial(-1)
            return info.value

    err = asyncio.run(main())
    assert str(err) == "ValueError: factorial of a negative number"
    assert err.remote_type == "ValueError"
    assert err.remote_message == "factorial of a negative number"


def test_circuit_open_error_is_exported():
    assert issubclass(CircuitOpenError, Exception)


def test_connect_then_async_with(home):
    service = f"math-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, MATH_WORKER, service], stderr=subprocess.PIPE, text=True)
    try:

        async def main():
            worker = await ParentWorker.connect(service, timeout=30.0)
            async with worker:
                return await worker.acall.multiply(6, 7), worker.is_healthy

        assert asyncio.run(main()) == (42, True)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()


def test_child_worker_subclass_forms():
    class MyWorker(ChildWorker):
        def add(self, a, b):
            return a + b

        async def fetch_data(self, url):
            return url

    assert MyWorker().list_functions() == ["add", "fetch_data"]
    assert MyWorker(service_id="math-service").service_id == "math-service"
