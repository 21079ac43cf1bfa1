"""Calls against the test worker: values, errors, sync and async methods, options, state."""

import asyncio
import math
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import multifrost
from multifrost import (
    CallTimeoutError,
    ClosedError,
    InvalidArgumentError,
    MultifrostError,
    ParentWorker,
    RemoteCallError,
    Status,
)


@pytest.fixture(scope="module")
def shared_worker():
    """One spawned test worker for the read-only tests of this module (sync API)."""
    from conftest import SAMPLE_WORKER

    with ParentWorker.spawn(SAMPLE_WORKER) as worker:
        yield worker


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        1.5,
        "héllo ✓",
        "",
        b"\x00\xffbytes",
        [1, [2, [3]]],
        {"a": 1, "nested": {"list": [1, 2.5, None]}},
        {1: "int key"},
    ],
)
def test_values_round_trip(shared_worker, value):
    assert shared_worker.sync.call.echo(value) == value


def test_tuples_become_lists(shared_worker):
    assert shared_worker.sync.call.echo((1, 2)) == [1, 2]


def test_unencodable_argument_raises_locally(shared_worker):
    with pytest.raises(TypeError):
        shared_worker.sync.call.echo(object())
    with pytest.raises(OverflowError):
        shared_worker.sync.call.echo(2**64)


def test_sync_method(shared_worker):
    assert shared_worker.sync.call.add(1, 2) == 3
    assert shared_worker.sync.call.add("a", "b") == "ab"


def test_async_method(shared_worker):
    assert shared_worker.sync.call.slow(20) == 20


def test_exception_text(shared_worker):
    with pytest.raises(RemoteCallError) as info:
        shared_worker.sync.call.fail("bad input")
    assert str(info.value) == "ValueError: bad input"
    assert info.value.status == Status.ERR_REMOTE
    assert isinstance(info.value, MultifrostError)


def test_async_method_exception_text(shared_worker):
    with pytest.raises(RemoteCallError, match=r"^KeyError: 'missing'$"):
        shared_worker.sync.call.afail("missing")


def test_wrong_argument_count_is_type_error_text(shared_worker):
    with pytest.raises(RemoteCallError) as info:
        shared_worker.sync.call.add(1)
    assert str(info.value).startswith("TypeError: ")
    assert "missing 1 required positional argument" in str(info.value)
    with pytest.raises(RemoteCallError, match=r"^TypeError: .*takes 3 positional arguments but 4 were given"):
        shared_worker.sync.call.add(1, 2, 3)


def test_wrong_argument_type_is_type_error_text(shared_worker):
    with pytest.raises(RemoteCallError, match=r"^TypeError: "):
        shared_worker.sync.call.add(1, "x")


def test_private_method_refused(shared_worker):
    with pytest.raises(RemoteCallError, match="Cannot call private method '_private'"):
        shared_worker.sync.call._private()


def test_unknown_function(shared_worker):
    with pytest.raises(multifrost.NoSuchFunctionError, match="^Function 'nosuch' not found$"):
        shared_worker.sync.call.nosuch()


def test_unsendable_result(shared_worker):
    with pytest.raises(RemoteCallError, match="^TypeError: the result cannot be sent"):
        shared_worker.sync.call.unsendable()


def test_call_function_by_name(shared_worker):
    assert shared_worker.sync.call_function("add", 2, 2) == 4


def test_dunder_attributes_are_not_remote(shared_worker):
    with pytest.raises(AttributeError):
        shared_worker.sync.call.__wrapped__  # noqa: B018


def test_state_properties(shared_worker):
    shared_worker.sync.call.add(1, 1)
    assert shared_worker.is_healthy is True
    assert shared_worker.circuit_open is False
    assert shared_worker.circuit_state == "closed"
    rtt = shared_worker.last_heartbeat_rtt_ms
    assert rtt is not None and rtt > 0
    metrics = shared_worker.metrics
    assert metrics["requests_total"] >= 1
    assert metrics["requests_success"] >= 1
    assert metrics["worker_pid"] == shared_worker.pid == shared_worker.sync.call.pid()
    assert shared_worker.name == "sample_worker.py"


def test_many_threads_sync_calls(shared_worker):
    def work(i):
        return [shared_worker.sync.call.add(i, j) for j in range(25)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    assert results == [[i + j for j in range(25)] for i in range(8)]


def test_close_ends_blocking_calls_of_other_threads(sample_worker):
    # Threads call with plain mf_call on references of their own; a close
    # from here ends their calls in flight, and later ones are refused.
    worker = ParentWorker.spawn(sample_worker)
    worker.sync.start()
    outcomes = []

    def caller():
        try:
            outcomes.append(worker.sync.call.slow(20_000))
        except ClosedError as e:
            outcomes.append(e)
        with pytest.raises(ClosedError, match="closed"):
            worker.sync.call.add(1, 1)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while worker.metrics.get("in_flight") != 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.metrics["in_flight"] == 4
    worker.sync.close()
    for t in threads:
        t.join()
    assert len(outcomes) == 4
    assert all(isinstance(o, ClosedError) for o in outcomes), outcomes


CTRL_C_SCRIPT = r"""
import os, signal, sys, threading, time
from multifrost import ParentWorker

# Python installs KeyboardInterrupt for SIGINT only when the signal was not
# ignored at start-up; a test run in the background (`make test &`, some CI
# runners) starts everything with it ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
worker = ParentWorker.spawn(sys.argv[1])
worker.sync.start()

def interrupt_once_in_flight():
    while worker.metrics.get("in_flight") != 1:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)

def wait_in_flight(n):
    while worker.metrics.get("in_flight") != n:
        time.sleep(0.01)

def let_go_next():
    # Once "next" is parked in the worker (the interrupted call was
    # cancelled and is not counted any more).
    wait_in_flight(1)
    while worker.sync.call.parked("next") != 1:
        time.sleep(0.01)
    worker.sync.call.unpark("next")

threading.Thread(target=interrupt_once_in_flight, daemon=True).start()
try:
    print("returned", worker.sync.call.park("interrupted"), flush=True)
except KeyboardInterrupt:
    print("interrupted with", worker.metrics["in_flight"], "in flight", flush=True)
# The interrupted call was cancelled (nothing is left in flight, and its
# handler's task in the worker is cancelled too).
threading.Thread(target=let_go_next, daemon=True).start()
print("next", worker.sync.call.park("next"), flush=True)
print("then", worker.sync.call.add(1, 2), flush=True)
worker.sync.close()
"""


def test_ctrl_c_interrupts_a_blocking_call_in_the_main_thread(sample_worker, tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), sample_worker], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["interrupted with 0 in flight", "next next", "then 3"], done.stderr


CTRL_C_START_SCRIPT = r"""
import os, signal, subprocess, sys, threading, time
from multifrost import ParentWorker

signal.signal(signal.SIGINT, signal.default_int_handler)
# `sleep` is not a worker: it never answers, so start() would wait for its 20 s
# timeout, then stop it.
worker = ParentWorker.spawn("/bin/sleep", args=["600"], start_timeout=20)


def sleep_children():
    out = subprocess.run(["pgrep", "-P", str(os.getpid()), "-x", "sleep"], capture_output=True, text=True)
    return out.stdout.split()


def interrupt_once_started():
    while not sleep_children():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)


threading.Thread(target=interrupt_once_started, daemon=True).start()
try:
    worker.sync.start()
    print("started", flush=True)
except KeyboardInterrupt:
    # Interrupted at once, the start is still waiting: its program still runs.
    print("interrupted", "while starting" if sleep_children() else "after the start gave up", flush=True)
# The abandoned start ends by itself and its program is stopped; nothing is left behind.
deadline = time.monotonic() + 90
while sleep_children() and time.monotonic() < deadline:
    time.sleep(0.1)
print("children", len(sleep_children()), flush=True)
"""


def test_ctrl_c_interrupts_a_start_in_the_main_thread(tmp_path):
    script = tmp_path / "ctrl_c_start.py"
    script.write_text(CTRL_C_START_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["interrupted while starting", "children 0"], done.stderr


def test_timeout_is_builtin_timeout_error(shared_worker):
    async def main(worker):
        before = worker.metrics["timeouts"]
        start = time.monotonic()
        # The parked call never answers on its own: the error comes from the
        # timer, while the method still runs, and not before the 0.1 s asked.
        with pytest.raises(TimeoutError) as info:
            await worker.acall.with_options(timeout=0.1).park("timeout")
        elapsed = time.monotonic() - start
        still_parked = await worker.acall.parked("timeout")
        await worker.acall.unpark("timeout")
        # The worker is still usable afterwards.
        after = await worker.acall.add(1, 1)
        return info.value, elapsed, still_parked, after, worker.metrics["timeouts"] - before

    err, elapsed, still_parked, after, timeouts = run(main(shared_worker))
    assert isinstance(err, CallTimeoutError) and err.status == Status.ERR_TIMEOUT
    assert "timed out" in str(err)
    assert elapsed >= 0.09
    assert still_parked == 1
    assert after == 2
    assert timeouts == 1


def test_sync_timeout_and_default_timeout(sample_worker):
    with ParentWorker.spawn(sample_worker, default_timeout=0.2) as worker:
        with pytest.raises(TimeoutError):
            worker.sync.call.park("default")
        with pytest.raises(TimeoutError):
            worker.sync.call.with_options(timeout=0.05).park("per-call")
        assert worker.sync.call.with_options(timeout=30).slow(300) == 300
        assert worker.sync.call_function("slow", 10, timeout=math.inf) == 10


def test_bad_timeout_values(shared_worker):
    for bad in (0, -1, float("nan"), "1"):
        with pytest.raises(InvalidArgumentError):
            shared_worker.sync.call.with_options(timeout=bad).add(1, 1)


def test_async_methods_run_concurrently(shared_worker):
    # Each call waits until all 20 run at once: one at a time, the first
    # would give up after 10 s having seen only itself.
    async def main(worker):
        return await asyncio.gather(*(worker.acall.gather(20) for _ in range(20)))

    assert run(main(shared_worker)) == [20] * 20


def test_sync_methods_run_one_at_a_time(shared_worker):
    async def main(worker):
        start = time.monotonic()
        results = await asyncio.gather(*(worker.acall.sleep_sync(150) for _ in range(4)))
        return results, time.monotonic() - start

    results, elapsed = run(main(shared_worker))
    assert results == [150] * 4
    assert elapsed >= 0.55


def test_long_sync_call_keeps_heartbeats(sample_worker):
    # Heartbeats every 100 ms while a 5 s method runs, each with 2 s to be
    # answered (a busy machine meets that; a worker answering none during
    # the method would miss about 30).
    with ParentWorker.spawn(
        sample_worker, heartbeat_interval=0.1, heartbeat_timeout=2.0, heartbeat_max_misses=2
    ) as worker:
        assert worker.sync.call.sleep_sync(5000) == 5000
        assert worker.is_healthy
        assert worker.metrics["heartbeat_misses"] == 0


def test_calls_before_start_and_after_close(sample_worker):
    worker = ParentWorker.spawn(sample_worker)
    with pytest.raises(ClosedError, match="not started"):
        worker.sync.call.add(1, 1)
    worker.sync.start()
    assert worker.sync.call.add(1, 1) == 2
    worker.sync.close()
    worker.sync.close()  # idempotent
    with pytest.raises(ClosedError, match="closed"):
        worker.sync.call.add(1, 1)
    with pytest.raises(ClosedError):
        worker.sync.start()


def test_close_fails_calls_in_flight(sample_worker):
    async def main():
        worker = ParentWorker.spawn(sample_worker)
        await worker.start()
        # Never answered: only the close can end it.
        pending = asyncio.ensure_future(worker.acall.park("close"))
        deadline = time.monotonic() + 30
        while worker.metrics["in_flight"] != 1:
            assert time.monotonic() < deadline, worker.metrics
            await asyncio.sleep(0.01)
        await worker.close()
        with pytest.raises(ClosedError) as info:
            await asyncio.wait_for(pending, 60)  # a hang guard
        return info.value

    assert run(main()).status == Status.ERR_CLOSED


def test_cancelled_await_does_not_break_later_calls(shared_worker):
    async def main(worker):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(worker.acall.slow(300), 0.05)
        # The late result arrives (the call leaves in_flight) and is dropped.
        deadline = time.monotonic() + 30
        while worker.metrics["in_flight"] != 0:
            assert time.monotonic() < deadline, worker.metrics
            await asyncio.sleep(0.01)
        return await worker.acall.add(3, 4)

    assert run(main(shared_worker)) == 7


def test_namespace_needs_connect_mode_for_spawned_workers(shared_worker):
    async def main(worker):
        assert await worker.acall.with_options(namespace="default").add(1, 2) == 3
        with pytest.raises(InvalidArgumentError, match="namespace"):
            await worker.acall.with_options(namespace="other").add(1, 2)

    run(main(shared_worker))


def test_one_worker_serves_several_event_loops(shared_worker):
    async def main(worker, n):
        return await worker.acall.add(n, n)

    results = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(asyncio.run(main(shared_worker, n)))) for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 2, 4, 6]


def test_many_successive_event_loops_leak_no_descriptors(shared_worker):
    # Each loop gets a completion queue watched by its selector; a queue whose
    # loop has closed is released when another loop makes its first call.
    import os

    async def main(n):
        return await worker.acall.add(n, 1)

    worker = shared_worker
    assert run(main(0)) == 1
    before = len(os.listdir("/proc/self/fd"))
    assert [run(main(n)) for n in range(50)] == [n + 1 for n in range(50)]
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_a_blocked_loop_does_not_stall_other_callers(sample_worker):
    # Each loop takes its completions from a queue of its own; while one
    # loop is blocked, another loop's calls and blocking calls must still
    # complete, and the blocked loop's next call too once it runs again.
    with ParentWorker.spawn(sample_worker) as worker:
        others_done = threading.Event()
        first_ready = threading.Event()
        results = {}

        async def first():
            results["first"] = await worker.acall.add(1, 1)
            first_ready.set()
            # Block this loop (no await) until the others have finished.
            results["others_in_time"] = others_done.wait(30)
            results["first_again"] = await worker.acall.add(2, 2)

        async def second():
            return [await worker.acall.add(n, 100) for n in range(20)]

        t = threading.Thread(target=lambda: asyncio.run(first()))
        t.start()
        assert first_ready.wait(30)
        results["second"] = asyncio.run(second())
        results["sync"] = [worker.sync.call.add(n, 1000) for n in range(5)]
        others_done.set()
        t.join(30)
        assert results == {
            "first": 2,
            "others_in_time": True,
            "first_again": 4,
            "second": [n + 100 for n in range(20)],
            "sync": [n + 1000 for n in range(5)],
        }


def test_spawn_with_namespace_option_reaches_a_namespaced_worker(sample_worker):
    # The worker serves namespace "blue"; a parent in "default" gets no answer.
    with ParentWorker.spawn(sample_worker, args=["--namespace", "blue"], namespace="blue") as worker:
        assert worker.sync.call.add(1, 2) == 3
    with ParentWorker.spawn(sample_worker, args=["--namespace", "blue"], default_timeout=0.3) as worker:
        with pytest.raises(TimeoutError):
            worker.sync.call.add(1, 2)


def test_stats_say_link_by_default_and_zmq_with_private_link_off(sample_worker):
    with ParentWorker.spawn(sample_worker) as worker:
        assert worker.metrics["transport"] == "link"
        assert worker.sync.call.add(1, 2) == 3
    with ParentWorker.spawn(sample_worker, private_link=False) as worker:
        assert worker.metrics["transport"] == "zmq"
        assert worker.sync.call.add(1, 2) == 3


def test_missing_script_reports_the_interpreter_error(tmp_path):
    worker = ParentWorker.spawn(str(tmp_path / "nope.py"))
    with pytest.raises(multifrost.WorkerExitedError, match="nope.py"):
        worker.sync.start()


def test_missing_program_without_interpreter_is_io_error(tmp_path):
    # No such file and no .py: a program, which the library cannot start
    # (not a script handed to Python, which would exit at once).
    for program in (str(tmp_path / "nowhere" / "worker"), "no-such-program-anywhere"):
        with pytest.raises(multifrost.MultifrostIOError) as info:
            ParentWorker.spawn(program).sync.start()
        assert info.value.status == Status.ERR_IO
        assert program in str(info.value)


def test_missing_interpreter_is_io_error(tmp_path):
    worker = ParentWorker.spawn(str(tmp_path / "worker.py"), executable="/nonexistent/python")
    with pytest.raises(multifrost.MultifrostIOError) as info:
        worker.sync.start()
    assert isinstance(info.value, OSError)
    assert "/nonexistent/python" in str(info.value)


def test_forgotten_worker_is_closed_when_collected(sample_worker):
    import gc
    import os

    worker = ParentWorker.spawn(sample_worker)
    worker.sync.start()
    pid = worker.pid
    del worker
    gc.collect()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError("the worker of a collected ParentWorker is still running")


@pytest.mark.parametrize(
    "options",
    [
        {"breaker_threshold": 0},
        {"breaker_threshold": -1},
        {"heartbeat_max_misses": -3},
        {"auto_restart": True, "max_restart_attempts": -1},
        {"heartbeat_interval": -1.0},
        {"default_timeout": 0},
    ],
)
def test_bad_options_are_refused_before_spawning(sample_worker, options):
    worker = ParentWorker.spawn(sample_worker, **options)
    with pytest.raises(InvalidArgumentError):
        worker.sync.start()
    assert not worker.is_started
