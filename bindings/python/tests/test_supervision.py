"""Event-loop liveness under load, crashes, restarts, the breaker and worker output."""

import asyncio
import logging
import time

import pytest

from multifrost import (
    CircuitOpenError,
    ParentWorker,
    RemoteCallError,
    Status,
    WorkerExitedError,
)


def run(coro):
    return asyncio.run(coro)


async def wait_in_flight(worker, n, limit=30.0):
    """Waits until the parent has `n` calls in flight (sent, not answered); `limit` is a hang guard."""
    deadline = time.monotonic() + limit
    while worker.metrics["in_flight"] != n:
        assert time.monotonic() < deadline, f"never {n} calls in flight: {worker.metrics}"
        await asyncio.sleep(0.01)


def test_1000_concurrent_acalls_keep_the_loop_live(sample_worker):
    """1000 calls in flight at once, parked in the worker until the test lets them go.

    While they are in flight the loop runs a ticker and more calls: a loop
    blocked by the calls could never get to letting them go.
    """

    async def main():
        async with ParentWorker.spawn(sample_worker) as worker:
            calls = [asyncio.create_task(worker.acall.park("many")) for _ in range(1000)]
            await wait_in_flight(worker, 1000)
            ticks = 0
            while ticks < 5:
                await asyncio.sleep(0.005)
                ticks += 1
            sums = await asyncio.gather(*(worker.acall.add(i, i) for i in range(100)))
            parked = await worker.acall.parked("many")
            answered_early = sum(1 for c in calls if c.done())
            in_flight = worker.metrics["in_flight"]
            released = await worker.acall.unpark("many")
            results = await asyncio.gather(*calls)
            return parked, answered_early, in_flight, sums, released, results

    parked, answered_early, in_flight, sums, released, results = run(main())
    assert (parked, answered_early, in_flight) == (1000, 0, 1000)
    assert sums == [2 * i for i in range(100)]
    assert released == 1000
    assert results == ["many"] * 1000


def test_crashing_worker_fails_calls_promptly(sample_worker):
    async def main():
        async with ParentWorker.spawn(sample_worker) as worker:
            # Never answered: a crash noticed only when the calls' 30 s default
            # timeout passes would fail them with TimeoutError instead.
            parked = asyncio.ensure_future(worker.acall.park("crash"))
            await wait_in_flight(worker, 1)
            with pytest.raises(WorkerExitedError) as info:
                await worker.acall.crash()
            with pytest.raises(WorkerExitedError):
                await parked
            with pytest.raises(WorkerExitedError):
                await worker.acall.add(1, 1)
            return info.value, worker.is_healthy

    err, healthy = run(main())
    assert err.status == Status.ERR_WORKER_EXITED
    assert "code 3" in str(err)
    assert healthy is False


def test_aborting_worker_reports_the_signal(sample_worker):
    with ParentWorker.spawn(sample_worker) as worker:
        with pytest.raises(WorkerExitedError, match="SIGABRT|signal 6") as info:
            worker.sync.call.abort()
        assert info.value.status == Status.ERR_WORKER_EXITED


def test_auto_restart_brings_a_new_process(sample_worker):
    with ParentWorker.spawn(sample_worker, auto_restart=True, max_restart_attempts=3) as worker:
        first = worker.sync.call.pid()
        with pytest.raises(WorkerExitedError):
            worker.sync.call.crash()
        deadline = time.monotonic() + 30
        while True:
            try:
                second = worker.sync.call.pid()
                break
            except (WorkerExitedError, CircuitOpenError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert second != first
        assert worker.metrics["restarts"] >= 1


def test_breaker_opens_after_remote_errors_when_they_count(sample_worker):
    # Timeouts and cancels are not breaker failures; remote errors are when asked.
    async def main():
        async with ParentWorker.spawn(
            sample_worker, breaker_threshold=2, breaker_cooldown=30.0, breaker_counts_remote_errors=True
        ) as worker:
            for _ in range(2):
                with pytest.raises(RemoteCallError):
                    await worker.acall.fail("boom")
            sent = worker.metrics["requests_total"]
            with pytest.raises(CircuitOpenError) as info:
                await worker.acall.add(1, 2)
            return info.value, sent, worker.circuit_open, worker.circuit_state, worker.metrics

    err, sent, is_open, state, metrics = run(main())
    assert err.status == Status.ERR_CIRCUIT_OPEN
    assert metrics["requests_total"] == sent  # refused, not sent (every sent call counts)
    assert is_open is True and state == "open"
    assert metrics["circuit_trips"] == 1


def test_breaker_half_open_probe_closes_it(sample_worker):
    with ParentWorker.spawn(
        sample_worker, breaker_threshold=1, breaker_cooldown=0.3, breaker_counts_remote_errors=True
    ) as worker:
        with pytest.raises(RemoteCallError):
            worker.sync.call.fail("boom")
        with pytest.raises(CircuitOpenError):
            worker.sync.call.add(1, 1)
        sent = worker.metrics["requests_total"]
        # Refused, unsent, until the 0.3 s cool-down has passed; then one call
        # goes through as the probe.
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = worker.sync.call.add(1, 1)
                break
            except CircuitOpenError:
                assert time.monotonic() < deadline, worker.metrics
                time.sleep(0.02)
        assert probe == 2
        assert worker.metrics["requests_total"] == sent + 1  # only the probe was sent
        assert worker.circuit_open is False
        assert worker.circuit_state == "closed"


def _wait_for_record(caplog, text, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for r in caplog.records:
            if r.name == "multifrost" and r.getMessage() == text:
                return r
        time.sleep(0.01)
    raise AssertionError(f"no log record {text!r}; got {[r.getMessage() for r in caplog.records]}")


def test_print_reaches_the_parent_log(sample_worker, caplog):
    caplog.set_level(logging.INFO, logger="multifrost")
    with ParentWorker.spawn(sample_worker) as worker:
        assert worker.sync.call.shout("hello from the worker", "second line ✓") == 2
        # The worker keeps running: lines that waited for a full pipe buffer
        # (or the exit) would never arrive here.
        first = _wait_for_record(caplog, "[sample_worker.py STDOUT]: hello from the worker")
        _wait_for_record(caplog, "[sample_worker.py STDOUT]: second line ✓")
        assert first.levelno == logging.INFO
        assert first.multifrost_event["event"] == "worker_output"
        assert worker.sync.call.complain("to stderr") is True
        _wait_for_record(caplog, "[sample_worker.py STDERR]: to stderr")


def test_library_events_are_logged(sample_worker, caplog):
    caplog.set_level(logging.DEBUG, logger="multifrost")
    with ParentWorker.spawn(sample_worker) as worker:
        with pytest.raises(TimeoutError):
            worker.sync.call.with_options(timeout=0.05).park("log")
    events = [getattr(r, "multifrost_event", {}).get("event") for r in caplog.records]
    assert "worker_start" in events
    assert "request_timeout" in events
    timeout_record = next(
        r for r in caplog.records if getattr(r, "multifrost_event", {}).get("event") == "request_timeout"
    )
    assert timeout_record.levelno == logging.WARNING
