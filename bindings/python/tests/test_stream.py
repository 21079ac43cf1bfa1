"""Streams end to end (issue #20): a worker's generator, the parent's `for` / `async for`.

Deadlines below are hang guards only, never measurements.
"""

import asyncio
import concurrent.futures
import gc
import math
import os
import signal
import threading
import time

import pytest
from conftest import REPO

from multifrost import (
    CallTimeoutError,
    CancelledCallError,
    ClosedError,
    ParentWorker,
    RemoteCallError,
    WorkerExitedError,
)

HANG_GUARD = 60.0
CREDIT = 16  # the library's default stream credit
C_TEST_WORKER = REPO / "build" / "tests" / "c" / "c_test_worker"


def run(coro):
    return asyncio.run(coro)


def eventually(predicate, what):
    """Waits until predicate() is true (hang guard only)."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: {what}")
        time.sleep(0.01)


@pytest.fixture
def worker(sample_worker):
    w = ParentWorker.spawn(sample_worker)
    w.sync.start()
    yield w
    w.sync.close()


@pytest.mark.parametrize("function", ["count", "acount"])
def test_items_arrive_in_order_and_the_stream_ends(worker, function):
    assert list(getattr(worker.sync.stream, function)(5)) == [0, 1, 2, 3, 4]
    assert list(getattr(worker.sync.stream, function)(0)) == []

    async def main():
        return [x async for x in getattr(worker.astream, function)(40)]

    assert run(main()) == list(range(40))


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, counting the jobs handed to it."""

    def __init__(self):
        super().__init__(max_workers=4)
        self.jobs = 0

    def submit(self, fn, /, *args, **kwargs):
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


def test_many_small_items_arrive_complete_and_in_order_whether_buffered_or_awaited(worker):
    # The worker pauses now and then (the parent has nothing buffered: the
    # wait goes to an executor thread); the consumer awaits something else
    # now and then (items pile up: they are taken on the loop's thread).
    n = 20_000

    async def main():
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        got = []
        async for x in worker.astream.bursts(n, 997, 20):
            got.append(x)
            if len(got) % 1_500 == 0:
                await asyncio.sleep(0.02)
        return got, executor.jobs

    got, waits = run(main())
    assert got == list(range(n))
    # Both ways were taken: more than the first item's wait, fewer than one per item.
    assert 1 < waits < n, waits
    # The stream is over and freed; the next one works as before.
    eventually(lambda: worker.metrics["streams_open"] == 0, "the stream to be freed")

    async def again():
        return [x async for x in worker.astream.count(3)]

    assert run(again()) == [0, 1, 2]


def test_other_tasks_run_while_a_stream_has_items_buffered(worker):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        # endless() keeps ahead of this consumer: once its window is full,
        # each item is there before it is asked for.
        stream = worker.astream.endless()
        first = [await stream.__anext__() for _ in range(50)]
        await asyncio.sleep(0.3)  # room for the worker to fill its window
        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        taken = [await stream.__anext__() for _ in range(500)]
        during = ticks - before
        task.cancel()
        await stream.aclose()
        return first + taken, during

    taken, during = run(main())
    assert taken == list(range(550))
    assert during > 0, "the other task never ran while the items were taken"


def test_with_options_sets_the_timeout(worker):
    stream = worker.sync.stream.with_options(timeout=math.inf).count(3)
    assert list(stream) == [0, 1, 2]

    async def main():
        return [x async for x in worker.astream.with_options(timeout=30).acount(3)]

    assert run(main()) == [0, 1, 2]


@pytest.mark.parametrize("function,error", [("count_then_fail", "ValueError"), ("acount_then_fail", "KeyError")])
def test_an_error_reaches_the_consumer_after_the_items_before_it(worker, function, error):
    got = []
    with pytest.raises(RemoteCallError, match=f"{error}: .*boom"):
        for x in getattr(worker.sync.stream, function)(3, "boom"):
            got.append(x)
    assert got == [0, 1, 2]

    async def main():
        seen = []
        with pytest.raises(RemoteCallError, match=f"{error}: .*bang"):
            async for x in getattr(worker.astream, function)(2, "bang"):
                seen.append(x)
        return seen

    assert run(main()) == [0, 1]


def closed_count(worker):
    return worker.sync.call.stream_counters()[1]


def test_breaking_out_of_a_sync_loop_closes_the_generator(worker):
    before = closed_count(worker)
    for x in worker.sync.stream.endless():
        if x == 3:
            break
    eventually(lambda: closed_count(worker) == before + 1, "the worker's generator to be closed")
    # The serving thread is free again: a plain call is answered.
    assert worker.sync.call.add(1, 2) == 3


def test_an_exception_in_the_loop_and_close_end_the_stream(worker):
    before = closed_count(worker)
    # `with` closes it at once on the way out; a bare `for` closes it when
    # the iterator is collected, which a traceback kept alive may delay.
    with pytest.raises(ZeroDivisionError):
        with worker.sync.stream.aendless() as stream:
            for x in stream:
                if x == 2:
                    1 / 0
    eventually(lambda: closed_count(worker) == before + 1, "the stream to close after an exception")
    stream = worker.sync.stream.aendless()
    assert next(stream) == 0
    stream.close()
    eventually(lambda: closed_count(worker) == before + 2, "close() to close the stream")
    assert list(stream) == []


def test_leaving_an_async_loop_or_cancelling_its_task_closes_the_stream(worker, tmp_path):
    before = closed_count(worker)

    async def breaks():
        async for x in worker.astream.aendless():
            if x == 5:
                break

    run(breaks())
    gc.collect()
    eventually(lambda: closed_count(worker) == before + 1, "break to close the stream")

    async def cancelled():
        got = []

        async def consume():
            # A slow consumer: the task is cancelled while it waits for an item.
            async for x in worker.astream.endless():
                got.append(x)
                await asyncio.sleep(3600)

        task = asyncio.ensure_future(consume())
        deadline = time.monotonic() + HANG_GUARD
        while not got:
            assert time.monotonic() < deadline, "hang guard: first item"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancelled())
    gc.collect()
    eventually(lambda: closed_count(worker) == before + 2, "task cancellation to close the stream")

    async def cancelled_while_waiting(path):
        # The task is cancelled inside __anext__, while a thread waits for an
        # item that never comes (the handler waits for its cancel).
        async def consume():
            async for _ in worker.astream.with_options(timeout=HANG_GUARD).async_wait_for_cancel(path):
                pass

        task = asyncio.ensure_future(consume())
        deadline = time.monotonic() + HANG_GUARD
        while not os.path.exists(path):
            assert time.monotonic() < deadline, "hang guard: handler start"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the executor thread is now (most likely) in mf_stream_next
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cancelled_at

    cancels = worker.sync.call.async_cancels()
    cancelled_at = run(cancelled_while_waiting(str(tmp_path / "started")))
    eventually(lambda: worker.sync.call.async_cancels() == cancels + 1, "the waiting handler to be cancelled")
    # The waiting thread woke and freed the stream.
    eventually(lambda: worker.metrics["streams_open"] == 0, "the stream to be freed")
    print(f"task cancel -> handler saw it: {(worker.sync.call.cancel_seen() - cancelled_at) * 1000:.1f} ms")

    async def with_block():
        async with worker.astream.aendless() as stream:
            async for x in stream:
                if x == 1:
                    break

    run(with_block())
    eventually(lambda: closed_count(worker) == before + 3, "async with to close the stream")


@pytest.mark.parametrize("consumer", ["main thread", "other thread"])
def test_close_from_another_thread_ends_a_wait_for_an_item(worker, tmp_path, consumer):
    # The handler waits for its cancel: the consumer waits for an item that
    # never comes until another thread closes the stream.
    path = str(tmp_path / "started")
    stream = worker.sync.stream.with_options(timeout=HANG_GUARD).async_wait_for_cancel(path)
    cancels = worker.sync.call.async_cancels()
    outcome = {}

    def consume():
        try:
            outcome["value"] = next(stream)
        except BaseException as e:  # noqa: BLE001 - the outcome is what the test checks
            outcome["error"] = e
        outcome["at"] = time.monotonic()

    def close_when_waiting():
        eventually(lambda: os.path.exists(path), "the handler to start")
        time.sleep(0.1)  # the consumer is now (most likely) in mf_stream_next
        outcome["closed_at"] = time.monotonic()
        stream.close()

    other = threading.Thread(target=consume if consumer == "other thread" else close_when_waiting)
    other.start()
    if consumer == "other thread":
        close_when_waiting()
    else:
        consume()
    other.join(HANG_GUARD)
    assert not other.is_alive(), "hang guard: the other thread"
    assert isinstance(outcome.get("error"), CancelledCallError), outcome
    eventually(lambda: worker.sync.call.async_cancels() == cancels + 1, "the waiting handler to be cancelled")
    eventually(lambda: worker.metrics["streams_open"] == 0, "the stream to be freed")
    assert list(stream) == []
    print(
        f"close from another thread ({consumer} waits) -> wait ended: "
        f"{(outcome['at'] - outcome['closed_at']) * 1000:.1f} ms"
    )


def test_a_slow_consumer_keeps_the_worker_waiting(worker):
    start = worker.sync.call.stream_counters()[0]
    stream = worker.sync.stream.aendless()
    assert next(stream) == 0
    # The worker fills the credit and then waits: it never runs further ahead.
    eventually(lambda: worker.sync.call.stream_counters()[0] - start >= CREDIT, "the worker to fill its credit")
    time.sleep(0.3)  # room to run ahead, if it wrongly could
    assert worker.sync.call.stream_counters()[0] - start <= CREDIT + 1
    taken = [next(stream) for _ in range(CREDIT * 2)]
    assert taken == list(range(1, CREDIT * 2 + 1))
    stream.close()


def test_the_stream_credit_option_bounds_how_far_the_worker_runs_ahead(sample_worker):
    with ParentWorker.spawn(sample_worker, stream_credit=4) as w:
        stream = w.sync.stream.aendless()
        assert next(stream) == 0
        eventually(lambda: w.sync.call.stream_counters()[0] >= 4, "the worker to fill its credit")
        time.sleep(0.3)  # room to run ahead, if it wrongly could
        assert w.sync.call.stream_counters()[0] <= 5
        assert [next(stream) for _ in range(10)] == list(range(1, 11))
        stream.close()


def test_a_worker_that_dies_mid_stream_ends_the_iteration_with_worker_exited(worker):
    got = []
    with pytest.raises(WorkerExitedError):
        for x in worker.sync.stream.aendless():
            got.append(x)
            if x == 2:
                os.kill(worker.pid, signal.SIGKILL)
    assert got[:3] == [0, 1, 2]
    assert got == list(range(len(got)))


def test_a_plain_call_of_a_generator_gets_the_list(worker):
    assert worker.sync.call.count(3) == [0, 1, 2]
    assert run(worker.acall.acount(4)) == [0, 1, 2, 3]
    with pytest.raises(RemoteCallError, match="ValueError: .*late"):
        worker.sync.call.count_then_fail(2, "late")


def test_a_stream_of_a_function_that_does_not_yield_ends_with_no_item(worker):
    assert list(worker.sync.stream.add(1, 2)) == []
    with pytest.raises(RemoteCallError, match="ValueError: nope"):
        list(worker.sync.stream.fail("nope"))


def test_streams_need_a_started_worker(sample_worker):
    w = ParentWorker.spawn(sample_worker)
    with pytest.raises(ClosedError):
        w.sync.stream.count(1)

    async def main():
        with pytest.raises(ClosedError):
            async for _ in w.astream.count(1):
                pass

    run(main())


def test_the_stream_timeout_limits_the_wait_for_an_item(worker):
    with pytest.raises(CallTimeoutError):
        list(worker.sync.stream.with_options(timeout=0.2).async_wait_for_cancel(""))


@pytest.mark.skipif(not C_TEST_WORKER.is_file(), reason="build/tests/c/c_test_worker is not built")
def test_streaming_from_the_c_worker():
    w = ParentWorker.spawn(str(C_TEST_WORKER))
    with w:
        assert list(w.sync.stream.count(5)) == [0, 1, 2, 3, 4]

        async def main():
            return [x async for x in w.astream.count(3)]

        assert run(main()) == [0, 1, 2]
        for x in w.sync.stream.count(1000):
            if x == 2:
                break
        eventually(lambda: w.sync.call.counted()[1] >= 1, "the C worker to see the stream closed")
