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


async def wait_in_flight(worker, n, limit=10.0):
    """Waits until the parent has `n` calls in flight (sent, not answered)."""
    deadline = time.monotonic() + limit
    while worker.metrics["in_flight"] != n:
        assert time.monotonic() < deadline, f"never {n} calls in flight: {worker.metrics}"
        await asyncio.sleep(0.01)


def test_1000_concurrent_acalls_keep_the_loop_live(sample_worker):
    """1000 calls in flight at once while a 5 ms asyncio ticker keeps ticking.

    The ticks are counted in the window where every call has been sent and
    none has come back yet (each call sleeps 1 s in the worker): a loop blocked
    by the calls could not tick there at all.
    """

    async def main():
        async with ParentWorker.spawn(sample_worker) as worker:
            tick_times = []
            stop = asyncio.Event()

            async def ticker():
                while not stop.is_set():
                    await asyncio.sleep(0.005)
                    tick_times.append(time.monotonic())

            done_times = []

            async def one():
                value = await worker.acall.slow(1000)
                done_times.append(time.monotonic())
                return value

            sent = []

            async def all_sent_marker():
                # Tasks start in creation order: this runs after every call task began.
                sent.append(time.monotonic())

            tick_task = asyncio.create_task(ticker())
            await asyncio.sleep(0.02)
            start = time.monotonic()
            calls = [asyncio.create_task(one()) for _ in range(1000)]
            marker = asyncio.create_task(all_sent_marker())
            results = await asyncio.gather(*calls)
            await marker
            elapsed = time.monotonic() - start
            stop.set()
            await tick_task
            sums = await asyncio.gather(*(worker.acall.add(i, i) for i in range(1000)))
            window = (sent[0], min(done_times))
            in_window = sum(1 for t in tick_times if window[0] < t < window[1])
            return results, sums, elapsed, window, in_window, len(tick_times)

    results, sums, elapsed, window, in_window, ticks = run(main())
    assert results == [1000] * 1000
    assert sums == [2 * i for i in range(1000)]
    assert 1.0 <= elapsed < 10
    assert window[1] - window[0] > 0.3, window  # sending 1000 calls takes well under 0.7 s
    assert in_window >= 5, (in_window, window, ticks)


def test_crashing_worker_fails_calls_promptly(sample_worker):
    async def main():
        async with ParentWorker.spawn(sample_worker) as worker:
            slow = asyncio.ensure_future(worker.acall.slow(30_000))
            await wait_in_flight(worker, 1)
            start = time.monotonic()
            with pytest.raises(WorkerExitedError) as info:
                await worker.acall.crash()
            with pytest.raises(WorkerExitedError):
                await slow
            elapsed = time.monotonic() - start
            with pytest.raises(WorkerExitedError):
                await worker.acall.add(1, 1)
            return info.value, elapsed, worker.is_healthy

    err, elapsed, healthy = run(main())
    assert elapsed < 15.0  # the slow call would answer after 30 s
    assert err.status == Status.ERR_WORKER_EXITED
    assert "code 3" in str(err)
    assert healthy is False


def test_aborting_worker_reports_the_signal(sample_worker):
    with ParentWorker.spawn(sample_worker) as worker:
        start = time.monotonic()
        with pytest.raises(WorkerExitedError, match="SIGABRT|signal 6"):
            worker.sync.call.abort()
        assert time.monotonic() - start < 2.0


def test_auto_restart_brings_a_new_process(sample_worker):
    with ParentWorker.spawn(sample_worker, auto_restart=True, max_restart_attempts=3) as worker:
        first = worker.sync.call.pid()
        with pytest.raises(WorkerExitedError):
            worker.sync.call.crash()
        deadline = time.monotonic() + 10
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
        time.sleep(0.35)  # the 0.3 s cool-down the test asked for
        assert worker.sync.call.add(1, 1) == 2
        assert worker.circuit_open is False


def _wait_for_record(caplog, text, limit=5.0):
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
        start = time.monotonic()
        assert worker.sync.call.shout("hello from the worker", "second line ✓") == 2
        first = _wait_for_record(caplog, "[sample_worker.py STDOUT]: hello from the worker")
        _wait_for_record(caplog, "[sample_worker.py STDOUT]: second line ✓")
        assert time.monotonic() - start < 2.0  # line-buffered: no wait for a full pipe buffer
        assert first.levelno == logging.INFO
        assert first.multifrost_event["event"] == "worker_output"
        assert worker.sync.call.complain("to stderr") is True
        _wait_for_record(caplog, "[sample_worker.py STDERR]: to stderr")


def test_library_events_are_logged(sample_worker, caplog):
    caplog.set_level(logging.DEBUG, logger="multifrost")
    with ParentWorker.spawn(sample_worker) as worker:
        with pytest.raises(TimeoutError):
            worker.sync.call.with_options(timeout=0.05).slow(300)
    events = [getattr(r, "multifrost_event", {}).get("event") for r in caplog.records]
    assert "worker_start" in events
    assert "request_timeout" in events
    timeout_record = next(
        r for r in caplog.records if getattr(r, "multifrost_event", {}).get("event") == "request_timeout"
    )
    assert timeout_record.levelno == logging.WARNING
