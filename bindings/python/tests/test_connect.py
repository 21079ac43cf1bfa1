"""Connect mode: services in a temporary HOME, discovery, namespaces, signals."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from conftest import SAMPLE_WORKER

from multifrost import (
    AlreadyRunningError,
    ParentWorker,
    ServiceNotFoundError,
    Status,
)


def _service_id():
    return f"svc-{uuid.uuid4().hex[:10]}"


def _registry(home):
    path = home / ".multifrost" / "services.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _start_service(service_id, *extra):
    return subprocess.Popen(
        [sys.executable, SAMPLE_WORKER, *extra, service_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


@pytest.fixture
def service(home):
    sid = _service_id()
    proc = _start_service(sid)
    yield sid, proc
    _stop(proc)


def test_connect_calls_sync_and_async_methods(service, home):
    sid, proc = service

    async def main():
        worker = await ParentWorker.connect(sid, timeout=30.0)
        async with worker:
            return (
                await worker.acall.add(20, 22),
                await worker.acall.slow(10),
                worker.is_healthy,
                worker.pid,
                worker.name,
            )

    assert asyncio.run(main()) == (42, 10, True, None, sid)
    entry = _registry(home)[sid]
    assert entry["pid"] == proc.pid and entry["port"] > 0


def test_connect_sync(service):
    sid, _ = service
    worker = ParentWorker.connect_sync(sid, timeout=30.0)
    try:
        assert worker.sync.call.add(1, 2) == 3
    finally:
        worker.sync.close()


def test_two_parents_share_one_service(service):
    sid, _ = service

    async def main():
        a = await ParentWorker.connect(sid)
        b = await ParentWorker.connect(sid)
        async with a, b:
            return await asyncio.gather(a.acall.add(1, 1), b.acall.add(2, 2))

    assert asyncio.run(main()) == [2, 4]


def test_unknown_service_is_not_found(home):
    async def main():
        start = time.monotonic()
        with pytest.raises(ServiceNotFoundError) as info:
            await ParentWorker.connect("no-such-service", timeout=0.3)
        return info.value, time.monotonic() - start

    err, elapsed = asyncio.run(main())
    assert "no-such-service" in str(err)
    assert isinstance(err, LookupError)
    assert err.status == Status.ERR_NOT_FOUND
    assert elapsed >= 0.29  # it waited for the service as long as it was asked to


def test_second_worker_with_the_same_id_fails(service):
    sid, _ = service
    # Wait until the first one is registered (the parent connect does that polling).
    ParentWorker.connect_sync(sid).sync.close()
    proc = _start_service(sid)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        _stop(proc)
    assert proc.returncode == 2
    assert "already running" in err, err


def test_already_running_error_in_process(service):
    from multifrost import ChildWorker

    sid, _ = service
    ParentWorker.connect_sync(sid).sync.close()

    class W(ChildWorker):
        def f(self):
            return 1

    with pytest.raises(SystemExit) as info:
        W(service_id=sid).run()
    assert info.value.code == 2
    assert isinstance(info.value.__cause__, AlreadyRunningError)


def test_namespace_per_call_with_a_second_connection(home):
    sid = _service_id()
    proc = _start_service(sid, "--namespace", "blue")
    try:

        async def main():
            worker = await ParentWorker.connect(sid)
            async with worker:
                blue = worker.acall.with_options(namespace="blue")
                first = await blue.add(1, 2)
                second = await blue.with_options(timeout=30).slow(10)
                # "default" calls are dropped by this worker: no answer, and
                # the method never runs.
                with pytest.raises(TimeoutError):
                    await worker.acall.with_options(timeout=1.0).add(1, 2)
                return first, second, await blue.adds()

        assert asyncio.run(main()) == (3, 10, 1)
        # The sync proxy does the same.
        worker = ParentWorker.connect_sync(sid)
        try:
            assert worker.sync.call.with_options(namespace="blue").add(2, 2) == 4
        finally:
            worker.sync.close()
    finally:
        _stop(proc)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_makes_run_return_and_unregisters(home, sig):
    sid = _service_id()
    proc = _start_service(sid)
    try:
        # Ready once a parent got an answer.
        ParentWorker.connect_sync(sid).sync.close()
        assert sid in _registry(home)
    finally:
        code, out, err = _stop(proc, sig)
    assert code == 0, err
    assert "run() returned" in out
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert sid not in _registry(home)


def test_sigint_during_a_long_sync_method(home):
    sid = _service_id()
    proc = _start_service(sid)
    try:
        worker = ParentWorker.connect_sync(sid)

        async def main():
            call = asyncio.ensure_future(worker.call_function("sleep_sync_announced", 500, timeout=20.0))
            # The method is running once it says so.
            assert await asyncio.to_thread(proc.stdout.readline) == "sleeping\n"
            proc.send_signal(signal.SIGINT)
            return await call

        # SIGINT ends run() by itself, and the running call is answered first.
        assert asyncio.run(main()) == 500
        worker.sync.close()
        # Wait for that exit rather than racing it with _stop's SIGTERM.
        proc.wait(timeout=20)
    finally:
        code, out, err = _stop(proc)
    assert code == 0, err
    assert "run() returned" in out
    assert "KeyboardInterrupt" not in err, err
    assert sid not in _registry(home)


def test_worker_without_port_exits_with_a_message():
    env = {k: v for k, v in os.environ.items() if k != "COMLINK_ZMQ_PORT"}
    proc = subprocess.run(
        [sys.executable, SAMPLE_WORKER, "--worker"], env=env, capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 2
    assert "COMLINK_ZMQ_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_worker_with_bad_port_exits_with_a_message():
    env = dict(os.environ, COMLINK_ZMQ_PORT="80")
    proc = subprocess.run(
        [sys.executable, SAMPLE_WORKER, "--worker"], env=env, capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 2
    assert "COMLINK_ZMQ_PORT" in proc.stderr
