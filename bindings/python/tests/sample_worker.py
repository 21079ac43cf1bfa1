"""The worker the tests spawn: sync and async methods, errors, output, a private method."""

import asyncio
import os
import sys
import threading
import time

from multifrost import ChildWorker


def _announce(path):
    """Tells the test this handler runs: writes `path` (empty path: nothing)."""
    if path:
        with open(path, "w") as f:
            f.write(str(os.getpid()))


class SampleWorker(ChildWorker):
    adds_run = 0
    cancel_seen_at = None
    async_cancels_seen = 0

    def add(self, a, b):
        self.adds_run += 1
        return a + b

    def adds(self):
        """How many calls of add this worker has run."""
        return self.adds_run

    def echo(self, value):
        return value

    async def slow(self, ms):
        await asyncio.sleep(ms / 1000)
        return ms

    async def park(self, tag):
        """Waits until unpark(tag): a call in flight for as long as a test needs, with no time in it."""
        event = self._parked_events().setdefault(tag, asyncio.Event())
        self._parked_counts[tag] = self._parked_counts.get(tag, 0) + 1
        await event.wait()
        return tag

    async def parked(self, tag):
        """How many calls are parked under `tag`."""
        self._parked_events()
        return self._parked_counts.get(tag, 0)

    async def unpark(self, tag):
        """Lets the calls parked under `tag` answer; returns how many there were."""
        event = self._parked_events().pop(tag, None)
        if event is not None:
            event.set()
        return self._parked_counts.pop(tag, 0)

    def _parked_events(self):
        if not hasattr(self, "_parked"):
            self._parked, self._parked_counts = {}, {}
        return self._parked

    async def gather(self, n):
        """Waits until `n` calls of it run at once (or 10 s pass); returns how many did."""
        self._gathered = getattr(self, "_gathered", 0) + 1
        if not hasattr(self, "_all_gathered"):
            self._all_gathered = asyncio.Event()
        if self._gathered >= n:
            self._all_gathered.set()
        else:
            try:
                await asyncio.wait_for(self._all_gathered.wait(), 10)
            except asyncio.TimeoutError:
                pass
        return self._gathered

    def sleep_sync(self, ms):
        time.sleep(ms / 1000)
        return ms

    def sleep_sync_announced(self, ms):
        """sleep_sync that first prints "sleeping" (for a test to know it runs)."""
        print("sleeping", flush=True)
        time.sleep(ms / 1000)
        return ms

    def fail(self, text):
        raise ValueError(text)

    async def afail(self, text):
        await asyncio.sleep(0)
        raise KeyError(text)

    def shout(self, *lines):
        for line in lines:
            print(line)
        return len(lines)

    def complain(self, line):
        print(line, file=sys.stderr)
        return True

    def pid(self):
        return os.getpid()

    async def pid_when(self, path):
        """Waits until the file `path` exists (60 s at most), then returns the pid:
        a call in flight until the test lets every worker of a pool answer at once."""
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return os.getpid()

    def crash(self):
        os._exit(3)

    def abort(self):
        os.abort()

    def unsendable(self):
        return object()

    def where(self):
        return threading.current_thread().name

    async def awhere(self):
        return threading.current_thread().name

    def wait_for_cancel(self, path):
        """Cooperative: announces itself, then sleeps until its call is cancelled (60 s at most)."""
        _announce(path)
        if self.wait_cancelled(60):
            self.cancel_seen_at = time.monotonic()
            return "cancelled"
        return "never cancelled"

    def poll_for_cancel(self, path):
        """Cooperative by polling cancelled() in a loop (60 s at most)."""
        _announce(path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.cancelled():
                self.cancel_seen_at = time.monotonic()
                return "cancelled"
            time.sleep(0.001)
        return "never cancelled"

    def cancel_seen(self):
        """When (time.monotonic, shared by processes on Linux) a handler last saw its cancel."""
        return self.cancel_seen_at

    async def async_wait_for_cancel(self, path):
        """Async and cooperative by default: its task is cancelled (60 s at most)."""
        _announce(path)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancel_seen_at = time.monotonic()
            self.async_cancels_seen += 1
            raise
        return "never cancelled"

    def async_cancels(self):
        return self.async_cancels_seen

    def spin(self, path, ms):
        """Ignores its cancel: a busy loop for `ms` milliseconds."""
        _announce(path)
        end = time.monotonic() + ms / 1000
        while time.monotonic() < end:
            pass
        return ms

    # -- streams (issue #20) ------------------------------------------------
    # Plain generators run on the serving thread and hold it while they wait
    # for credit, so the counters are read with async methods (the loop's own
    # thread) and the long-running streams are async generators.

    yielded_total = 0
    streams_closed = 0
    count_yielded = 0
    count_closed = 0

    def count(self, n):
        """Yields 0..n-1; counts its items and the streams closed on it (counted)."""
        try:
            for i in range(n):
                yield i
                SampleWorker.count_yielded += 1
        except GeneratorExit:
            SampleWorker.count_closed += 1
            raise

    async def counted(self):
        """[items count yielded, count streams closed], as the C test worker's counted()."""
        return [SampleWorker.count_yielded, SampleWorker.count_closed]

    async def acount(self, n):
        """Yields 0..n-1, awaiting between items."""
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def bursts(self, n, every, pause_ms):
        """Yields 0..n-1, pausing pause_ms after each `every` items (the parent runs dry)."""
        for i in range(n):
            if i and i % every == 0:
                await asyncio.sleep(pause_ms / 1000)
            yield i

    def count_then_fail(self, n, text):
        """Yields 0..n-1, then raises ValueError(text)."""
        yield from range(n)
        raise ValueError(text)

    async def acount_then_fail(self, n, text):
        for i in range(n):
            yield i
        raise KeyError(text)

    def endless(self):
        """Yields 0, 1, 2, … until its stream is closed (then counts the close)."""
        i = 0
        try:
            while True:
                yield i
                i += 1
        except GeneratorExit:
            SampleWorker.streams_closed += 1
            raise

    async def aendless(self):
        """endless() as an async generator; every item it yields is counted.

        A closed stream stops it where it waits: GeneratorExit at a yield,
        CancelledError at an await (its task is cancelled); either counts.
        """
        i = 0
        try:
            while True:
                SampleWorker.yielded_total += 1
                yield i
                i += 1
                await asyncio.sleep(0)
        except (GeneratorExit, asyncio.CancelledError):
            SampleWorker.streams_closed += 1
            raise

    async def stream_counters(self):
        """[items aendless yielded, streams closed]."""
        return [SampleWorker.yielded_total, SampleWorker.streams_closed]

    def _private(self):
        return "secret"


def main() -> None:
    """`sample_worker.py [--worker] [--namespace NS] [SERVICE_ID]`."""
    args = [a for a in sys.argv[1:] if a != "--worker"]
    namespace = None
    if "--namespace" in args:
        i = args.index("--namespace")
        namespace = args[i + 1]
        del args[i : i + 2]
    SampleWorker(service_id=args[0] if args else None, namespace=namespace).run()
    # Reached only if run() returned normally (shutdown, SIGINT, SIGTERM).
    print("run() returned", flush=True)


if __name__ == "__main__":
    main()
