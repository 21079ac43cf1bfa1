"""Pools (issue #21): ``workers=`` copies of a worker behind one ParentWorker."""

import asyncio
import os
import signal
import time
from collections import Counter

import pytest

from conftest import REPO
from multifrost import InvalidArgumentError, ParentWorker, WorkerExitedError

C_TEST_WORKER = REPO / "build" / "tests" / "c" / "c_test_worker"


def run(coro):
    return asyncio.run(coro)


def pool_pids(worker):
    return [w["pid"] for w in worker.metrics["workers"]]


def gone(pid):
    """True once `pid` was reaped (a zombie still has its /proc entry)."""
    return not os.path.exists(f"/proc/{pid}")


async def wait_until(check, what, limit=60.0):
    """Polls `check()` until it is true; `limit` is a hang guard, not a speed limit."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"never {what}"
        await asyncio.sleep(0.02)


def test_calls_spread_over_the_workers(sample_worker, tmp_path):
    release = tmp_path / "release"

    async def main():
        async with ParentWorker.spawn(sample_worker, workers=3) as pool:
            pids = pool_pids(pool)
            stats = pool.metrics
            # Nine calls held in the workers: the fewest-in-flight rule puts three in each.
            held = [asyncio.ensure_future(pool.acall.pid_when(str(release))) for _ in range(9)]
            await wait_until(lambda: pool.metrics["in_flight"] == 9, "9 calls in flight")
            per_worker = [w["in_flight"] for w in pool.metrics["workers"]]
            release.touch()
            held_pids = await asyncio.gather(*held)
            # Blocking calls one after another (equal loads take turns), and
            # blocking calls from a thread while async calls run.
            loop = asyncio.get_running_loop()
            sync_pids = await loop.run_in_executor(None, lambda: [pool.sync.call.pid() for _ in range(30)])
            mixed = await asyncio.gather(
                loop.run_in_executor(None, lambda: [pool.sync.call.add(i, 1) for i in range(20)]),
                *(pool.acall.add(i, 2) for i in range(20)),
            )
            return pids, stats, per_worker, held_pids, sync_pids, mixed, pool.metrics

    pids, stats, per_worker, held_pids, sync_pids, mixed, after = run(main())
    assert len(pids) == 3 and len(set(pids)) == 3 and 0 not in pids
    assert stats["worker_pid"] == pids[0]
    assert stats["healthy"] is True and all(w["healthy"] for w in stats["workers"])
    assert per_worker == [3, 3, 3]
    assert Counter(held_pids) == {pid: 3 for pid in pids}
    assert Counter(sync_pids) == {pid: 10 for pid in pids}
    assert mixed[0] == [i + 1 for i in range(20)] and mixed[1:] == [i + 2 for i in range(20)]
    # The totals are the sums over the workers.
    assert after["requests_total"] == sum(w["requests_total"] for w in after["workers"]) == 9 + 30 + 40
    assert all(w["requests_total"] > 0 for w in after["workers"])
    assert after["recycles"] == 0


def test_a_killed_worker_fails_only_its_calls_and_is_restarted(sample_worker, tmp_path):
    release = tmp_path / "release"

    async def main():
        async with ParentWorker.spawn(sample_worker, workers=3, auto_restart=True) as pool:
            pids = pool_pids(pool)
            held = [asyncio.ensure_future(pool.acall.pid_when(str(release))) for _ in range(6)]
            await wait_until(lambda: [w["in_flight"] for w in pool.metrics["workers"]] == [2, 2, 2], "2 calls in each")
            victim = pids[1]
            os.kill(victim, signal.SIGKILL)
            # The victim's two calls fail; the four others are still in flight.
            await wait_until(lambda: sum(1 for c in held if c.done()) == 2, "the killed worker's calls ended")
            early = [c for c in held if c.done()]
            errors = [c.exception() for c in early]
            still_waiting = sum(1 for c in held if not c.done())
            # The others answer meanwhile.
            answers = [await pool.acall.add(i, i) for i in range(10)]
            sync_answers = await asyncio.get_running_loop().run_in_executor(
                None, lambda: [pool.sync.call.add(i, 1) for i in range(10)]
            )
            release.touch()
            late = await asyncio.gather(*(c for c in held if c not in early))

            def restarted():
                workers = pool.metrics["workers"]
                return (
                    all(w["healthy"] for w in workers)
                    and workers[1]["pid"] not in (0, victim)
                    and workers[1]["restarts"] == 1
                )

            await wait_until(restarted, "the killed worker restarted and healthy")
            after = pool_pids(pool)
            served = Counter(pool.sync.call.pid() for _ in range(30))
            return pids, victim, errors, still_waiting, answers, sync_answers, late, after, served, pool.metrics

    pids, victim, errors, still_waiting, answers, sync_answers, late, after, served, stats = run(main())
    assert len(errors) == 2 and all(isinstance(e, WorkerExitedError) for e in errors), errors
    assert still_waiting == 4
    assert answers == [2 * i for i in range(10)]
    assert sync_answers == [i + 1 for i in range(10)]
    assert Counter(late) == {pids[0]: 2, pids[2]: 2}
    assert after[0] == pids[0] and after[2] == pids[2] and after[1] not in pids
    assert set(served) == set(after)
    assert stats["restarts"] == 1
    assert gone(victim)


def test_recycling_loses_no_call_and_changes_the_pid(sample_worker):
    async def main():
        async with ParentWorker.spawn(sample_worker, workers=2, max_calls_per_worker=5) as pool:
            first = pool_pids(pool)
            tokens = [f"token-{i}" for i in range(100)]
            echoed = await asyncio.gather(*(pool.acall.echo(t) for t in tokens))
            sync_tokens = [f"sync-{i}" for i in range(30)]
            sync_echoed = [pool.sync.call.echo(t) for t in sync_tokens]
            seen = [pool.sync.call.pid() for _ in range(23)]
            stats = pool.metrics
            return first, tokens, echoed, sync_tokens, sync_echoed, seen, stats

    first, tokens, echoed, sync_tokens, sync_echoed, seen, stats = run(main())
    assert echoed == tokens
    assert sync_echoed == sync_tokens
    assert not set(first) & set(seen)  # both first workers were replaced
    assert max(Counter(seen).values()) <= 5
    assert len(set(seen)) >= 23 // 5
    # The first two, and every pid seen that is not one of the last two, were recycled.
    current = [w["pid"] for w in stats["workers"]]
    assert stats["recycles"] == sum(w["recycles"] for w in stats["workers"]) >= 2 + len(set(seen) - set(current))
    assert stats["requests_failed"] == 0 and stats["restarts"] == 0
    assert all(gone(pid) for pid in set(first) | set(seen))


def test_close_reaps_every_worker(sample_worker):
    pool = ParentWorker.spawn(sample_worker, workers=3)
    pool.sync.start()
    pids = pool_pids(pool)
    assert all(not gone(pid) for pid in pids)
    assert sorted(pool.sync.call.pid() for _ in range(3)) == sorted(pids)
    pool.sync.close()
    assert [pid for pid in pids if not gone(pid)] == []


def test_a_pool_of_c_workers(tmp_path):
    assert C_TEST_WORKER.is_file(), f"{C_TEST_WORKER} is built by `make programs`"

    async def main():
        async with ParentWorker.spawn(C_TEST_WORKER, workers=3) as pool:
            pids = pool_pids(pool)
            served = [pool.sync.call.pid() for _ in range(9)]
            sums = await asyncio.gather(*(pool.acall.add(i, 10) for i in range(30)))
            echoed = await pool.acall.echo({"text": "héllo", "list": [1, 2.5, None]})
            return pids, served, sums, echoed, pool.metrics

    pids, served, sums, echoed, stats = run(main())
    assert len(set(pids)) == 3
    assert Counter(served) == {pid: 3 for pid in pids}
    assert sums == [i + 10 for i in range(30)]
    assert echoed == {"text": "héllo", "list": [1, 2.5, None]}
    assert all(w["requests_total"] > 0 for w in stats["workers"])
    assert all(gone(pid) for pid in pids)


def test_a_worker_count_out_of_range_is_refused(sample_worker):
    for bad, text in ((0, "workers must be 1..=256, got 0"), (257, "workers must be 1..=256, got 257")):
        worker = ParentWorker.spawn(sample_worker, workers=bad)
        with pytest.raises(InvalidArgumentError) as info:
            worker.sync.start()
        assert str(info.value) == text
        assert not worker.is_started
    for options in ({"workers": -1}, {"workers": "2"}, {"max_calls_per_worker": -1}, {"max_calls_per_worker": 1.5}):
        with pytest.raises(InvalidArgumentError):
            ParentWorker.spawn(sample_worker, **options).sync.start()

