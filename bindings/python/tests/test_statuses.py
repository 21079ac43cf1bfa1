"""Every mf_status has its exception class, and real calls raise it."""

import asyncio
import re
import subprocess
import sys
import uuid

from conftest import REPO, SAMPLE_WORKER

import multifrost
from multifrost import (
    AlreadyRunningError,
    CallTimeoutError,
    CancelledCallError,
    ChildWorker,
    CircuitOpenError,
    ClosedError,
    InternalError,
    InvalidArgumentError,
    MultifrostError,
    MultifrostIOError,
    NoSuchFunctionError,
    ParentWorker,
    ProtocolError,
    RemoteCallError,
    ServiceNotFoundError,
    Status,
    WorkerExitedError,
)
from multifrost.errors import _BY_STATUS, error_for

CLASSES = {
    Status.ERR_INVALID_ARGUMENT: InvalidArgumentError,
    Status.ERR_TIMEOUT: CallTimeoutError,
    Status.ERR_REMOTE: RemoteCallError,
    Status.ERR_CIRCUIT_OPEN: CircuitOpenError,
    Status.ERR_WORKER_EXITED: WorkerExitedError,
    Status.ERR_NOT_FOUND: ServiceNotFoundError,
    Status.ERR_ALREADY_RUNNING: AlreadyRunningError,
    Status.ERR_PROTOCOL: ProtocolError,
    Status.ERR_IO: MultifrostIOError,
    Status.ERR_CLOSED: ClosedError,
    Status.ERR_PANIC: InternalError,
    Status.ERR_CANCELLED: CancelledCallError,
    Status.ERR_NO_SUCH_FUNCTION: NoSuchFunctionError,
}


def test_status_values_are_the_headers():
    header = (REPO / "include" / "multifrost.h").read_text()
    declared = {f"ERR_{name}": int(value) for name, value in re.findall(r"\bMF_ERR_(\w+) = (\d+)", header)}
    declared["OK"] = int(re.search(r"\bMF_OK = (\d+)", header).group(1))
    assert {s.name: s.value for s in Status} == declared


def test_every_failure_status_has_its_own_class():
    failures = [s for s in Status if s != Status.OK]
    assert set(_BY_STATUS) == set(failures)
    assert CLASSES == {s: _BY_STATUS[s] for s in failures}
    assert len(set(CLASSES.values())) == len(CLASSES)
    for status, cls in CLASSES.items():
        err = error_for(status, "text")
        assert type(err) is cls and err.status == status and str(err) == "text"
        assert isinstance(err, MultifrostError)
    # The two of issue #19: a missing function is still a remote failure; a
    # cancelled call is not asyncio's CancelledError (that one belongs to the task).
    assert issubclass(NoSuchFunctionError, RemoteCallError)
    assert not issubclass(CancelledCallError, asyncio.CancelledError)


def _raised(fn):
    try:
        fn()
    except MultifrostError as e:
        return e
    raise AssertionError("no error raised")


def test_real_calls_raise_each_statuss_class(tmp_path, home):
    seen = {}

    def expect(status, fn):
        err = _raised(fn)
        assert type(err) is CLASSES[status], (status, err)
        assert err.status == status
        seen[status] = str(err)

    # A worker without a parent's port: the library refuses to start it.
    expect(Status.ERR_INVALID_ARGUMENT, lambda: ChildWorker()._open())
    expect(Status.ERR_IO, lambda: ParentWorker.spawn(str(tmp_path / "no-such-worker")).sync.start())
    expect(Status.ERR_NOT_FOUND, lambda: ParentWorker.connect_sync("no-such-service", timeout=0.2))
    with ParentWorker.spawn(SAMPLE_WORKER, breaker_threshold=2, breaker_counts_remote_errors=True) as worker:
        call = worker.sync.call
        expect(Status.ERR_TIMEOUT, lambda: call.with_options(timeout=0.1).slow(60_000))
        expect(Status.ERR_NO_SUCH_FUNCTION, lambda: call.no_such_function())
        pending = worker.sync.start_call("slow", 60_000)
        pending.cancel()
        expect(Status.ERR_CANCELLED, pending.result)
        # Counted failures: the missing function and this one (not the timeout nor the cancel).
        expect(Status.ERR_REMOTE, lambda: call.fail("boom"))
        expect(Status.ERR_CIRCUIT_OPEN, lambda: call.add(1, 2))
    with ParentWorker.spawn(SAMPLE_WORKER) as worker:
        pending = worker.sync.start_call("slow", 60_000)
        worker.sync.close()  # ends the calls in flight
        expect(Status.ERR_CLOSED, pending.result)
    with ParentWorker.spawn(SAMPLE_WORKER) as worker:
        expect(Status.ERR_WORKER_EXITED, lambda: worker.sync.call.crash())

    sid = f"svc-{uuid.uuid4().hex[:10]}"
    service = subprocess.Popen([sys.executable, SAMPLE_WORKER, sid], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ParentWorker.connect_sync(sid, timeout=20).sync.close()  # it is registered
        second = ChildWorker(service_id=sid)
        try:
            expect(Status.ERR_ALREADY_RUNNING, second._open)
        finally:
            second._shutdown()
    finally:
        service.terminate()
        service.communicate(timeout=20)

    # MF_ERR_PROTOCOL needs a peer that breaks the protocol, MF_ERR_PANIC a
    # library bug: the mapping test above covers them.
    print()
    for status in sorted(seen):
        print(f"{status.name:24} {CLASSES[status].__name__:22} {seen[status]}")
    assert set(seen) == set(CLASSES) - {Status.ERR_PROTOCOL, Status.ERR_PANIC}


def test_library_not_found_is_its_own_class():
    assert issubclass(multifrost.LibraryNotFoundError, ImportError)
    assert not issubclass(multifrost.LibraryNotFoundError, MultifrostError)
