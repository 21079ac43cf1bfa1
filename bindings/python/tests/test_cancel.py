"""Cancellation end to end (issue #19): the parent's cancel reaches the handler.

Plain methods of the test worker run one at a time on its serving thread, so
a call answered after a cancelled plain method proves that method stopped.
Deadlines below are hang guards only, never measurements.
"""

import asyncio
import math
import os
import random
import signal
import threading
import time

import pytest

from multifrost import (
    CallTimeoutError,
    CancelledCallError,
    NoSuchFunctionError,
    ParentWorker,
    RemoteCallError,
    Status,
    WorkerExitedError,
)

HANG_GUARD = 60.0


def run(coro):
    return asyncio.run(coro)


async def until(predicate, what):
    """Waits (without blocking the loop) until predicate() is true."""
    deadline = time.monotonic() + HANG_GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: {what}")
        await asyncio.sleep(0.01)


def announced(path):
    return lambda: os.path.exists(path) and os.path.getsize(path) > 0


async def started(worker, function, path, *args):
    """A task calling ``function(path, *args)``, returned once the handler runs.

    The call has no time limit: only a cancel can end it early (a timeout
    would cancel it in the worker too, and hide a cancel that did not work).
    """
    proxy = worker.acall.with_options(timeout=math.inf)
    task = asyncio.ensure_future(getattr(proxy, function)(str(path), *args))
    await until(announced(str(path)), f"{function} to start")
    return task


@pytest.mark.parametrize("function", ["wait_for_cancel", "poll_for_cancel", "async_wait_for_cancel"])
def test_cooperative_handler_stops_on_cancel_and_the_next_call_is_answered(sample_worker, tmp_path, function):
    async def main():
        async with ParentWorker.spawn(sample_worker) as worker:
            pid = worker.pid
            task = await started(worker, function, tmp_path / "running")
            cancelled_at = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The serving thread is free again (for a plain method: it stopped).
            assert await worker.acall.add(1, 2) == 3
            seen_at = await worker.acall.cancel_seen()
            assert seen_at is not None, "the handler never saw its cancel"
            print(f"\n{function} saw its cancel {1000 * (seen_at - cancelled_at):.1f} ms after task.cancel()")
            if function == "async_wait_for_cancel":
                assert await worker.acall.async_cancels() == 1
            assert worker.pid == pid  # no escalation: it stopped in time
            assert worker.metrics["escalations"] == 0

    run(main())


def test_wait_for_timing_out_cancels_the_call_in_the_worker(sample_worker, tmp_path):
    async def main():
        async with ParentWorker.spawn(sample_worker) as worker:
            path = tmp_path / "running"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(worker.acall.wait_for_cancel(str(path)), 0.5)
            assert await worker.acall.add(2, 3) == 5
            if announced(str(path))():  # it ran (else the cancel reached it while queued)
                assert await worker.acall.cancel_seen() is not None

    run(main())


def test_a_handler_that_ignores_its_cancel_gets_the_worker_restarted(sample_worker, tmp_path):
    async def main():
        worker = ParentWorker.spawn(
            sample_worker, auto_restart=True, max_restart_attempts=1, cancel_grace=0.3, shutdown_grace=0.5
        )
        async with worker:
            first_pid = worker.pid
            # In flight in the worker: an async method, running on its loop.
            running = await started(worker, "async_wait_for_cancel", tmp_path / "async")
            spinning = await started(worker, "spin", tmp_path / "spinning", 120_000)
            spinning.cancel()
            with pytest.raises(WorkerExitedError) as info:
                await running
            assert "worker stopped: a handler of 'spin' ran on" in str(info.value)
            assert info.value.status == Status.ERR_WORKER_EXITED
            await until(lambda: worker.pid not in (None, first_pid) and worker.is_healthy, "the restart")
            assert await worker.acall.pid() == worker.pid != first_pid
            assert worker.metrics["escalations"] == 1

    run(main())


def test_a_call_cancelled_before_its_handler_starts_never_runs(sample_worker, tmp_path):
    async def main():
        async with ParentWorker.spawn(sample_worker) as worker:
            blocker = await started(worker, "wait_for_cancel", tmp_path / "running")
            side_effect = asyncio.ensure_future(worker.acall.add(1, 2))
            await asyncio.sleep(0)  # the call is sent
            side_effect.cancel()
            await asyncio.sleep(0)  # its cancel is sent, before the blocker's
            blocker.cancel()
            for task in (side_effect, blocker):
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert await worker.acall.adds() == 0
            assert await worker.acall.add(1, 2) == 3
            assert await worker.acall.adds() == 1  # the counter counts

    run(main())


def test_a_call_whose_deadline_passed_while_queued_never_runs(sample_worker, tmp_path):
    async def main():
        async with ParentWorker.spawn(sample_worker) as worker:
            blocker = await started(worker, "wait_for_cancel", tmp_path / "running")
            with pytest.raises(CallTimeoutError):
                await worker.acall.with_options(timeout=0.2).add(1, 2)
            blocker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocker
            assert await worker.acall.adds() == 0

    run(main())


def test_a_thousand_calls_half_cancelled_each_settle_exactly_once(sample_worker, monkeypatch):
    from multifrost import parent

    # Every completion event the loop's queue reader takes, by future.
    events = {}
    settle = parent._settle

    def counting_settle(fut, ok, value):
        events[fut] = events.get(fut, 0) + 1
        settle(fut, ok, value)

    monkeypatch.setattr(parent, "_settle", counting_settle)

    async def main():
        loop = asyncio.get_running_loop()
        loop_errors = []
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        rng = random.Random(19)
        async with ParentWorker.spawn(sample_worker) as worker:
            tasks, expected = [], []
            for i in range(1000):
                ms = rng.choice([0, 5, 50, 200])
                call = worker.acall.slow(ms) if i % 2 else worker.acall.echo(i)
                tasks.append(asyncio.ensure_future(call))
                expected.append(ms if i % 2 else i)
            await asyncio.sleep(0)  # every task ran to its await: every call is sent
            assert worker.metrics["requests_total"] == 1000
            doomed = set(rng.sample(range(1000), 500))
            for i in doomed:
                tasks[i].cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for i, outcome in enumerate(outcomes):
                if i in doomed:
                    assert isinstance(outcome, asyncio.CancelledError), (i, outcome)
                else:
                    assert outcome == expected[i], (i, outcome)
            await until(lambda: worker.metrics["in_flight"] == 0, "no call in flight")
            await until(lambda: not worker._conn.pending, "every completion taken")
            stats = worker.metrics
            assert await worker.acall.echo("still here") == "still here"
        assert loop_errors == []
        # The core ended each call once: as a value, or cancelled in flight
        # (a doomed call that had already ended was left alone by mf_cancel).
        assert stats["requests_success"] + stats["requests_failed"] == 1000
        assert stats["requests_failed"] == stats["cancels"] <= 500
        print(f"\n{stats['cancels']} of the 500 cancels caught their call in flight")

    run(main())
    # The queue reader took exactly one completion for each of the 1001 calls.
    assert len(events) == 1001 and set(events.values()) == {1}


def test_pending_calls_cancelled_from_another_thread_raise_cancelled_call_error(sample_worker):
    with ParentWorker.spawn(sample_worker) as worker:
        pending = [worker.sync.start_call("slow", 120_000) for _ in range(50)]
        done = [worker.sync.start_call("echo", i) for i in range(50)]
        canceller = threading.Thread(target=lambda: [p.cancel() for p in pending])
        canceller.start()
        canceller.join()
        for p in pending:
            with pytest.raises(CancelledCallError) as info:
                p.result()
            assert info.value.status == Status.ERR_CANCELLED
            assert str(info.value) == "call to 'slow' was cancelled"
            with pytest.raises(CancelledCallError):  # the outcome is kept
                p.result()
        assert [p.result() for p in done] == list(range(50))
        for p in done:
            p.cancel()  # a finished call is left alone
            assert p.result() in range(50)


def test_a_stopped_worker_misses_heartbeats_and_is_restarted(sample_worker):
    async def main():
        worker = ParentWorker.spawn(
            sample_worker,
            auto_restart=True,
            max_restart_attempts=1,
            heartbeat_interval=0.2,
            heartbeat_timeout=1.0,
            heartbeat_max_misses=2,
            shutdown_grace=0.5,
        )
        async with worker:
            hung_pid = worker.pid
            in_flight = asyncio.ensure_future(worker.acall.slow(120_000))
            await asyncio.sleep(0)
            os.kill(hung_pid, signal.SIGSTOP)
            try:
                with pytest.raises(WorkerExitedError) as info:
                    await in_flight
                assert "missed 2 heartbeats in a row (hung)" in str(info.value)
                await until(lambda: worker.pid not in (None, hung_pid) and worker.is_healthy, "the restart")
                assert await worker.acall.pid() == worker.pid
                assert worker.metrics["hangs"] == 1
            finally:
                try:
                    os.kill(hung_pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    run(main())


def test_a_missing_function_is_no_such_function_error_and_a_remote_call_error(sample_worker):
    with ParentWorker.spawn(sample_worker) as worker:
        with pytest.raises(NoSuchFunctionError) as info:
            worker.sync.call.no_such_thing(1)
        assert isinstance(info.value, RemoteCallError)
        assert info.value.status == Status.ERR_NO_SUCH_FUNCTION
        assert str(info.value) == "Function 'no_such_thing' not found"

        async def main():
            with pytest.raises(NoSuchFunctionError):
                await worker.acall.no_such_thing()

        run(main())


def test_handler_helpers_refuse_use_outside_a_call():
    from multifrost import ChildWorker

    worker = ChildWorker()
    with pytest.raises(RuntimeError, match="inside a method"):
        worker.cancelled()
    with pytest.raises(RuntimeError, match="inside a method"):
        worker.wait_cancelled(0)
