"""ChildWorker: what is offered, and where methods run."""

import threading
import time

from multifrost import ChildWorker, ParentWorker


class Base(ChildWorker):
    def inherited(self):
        return 1

    def overridden(self):
        return "base"


class Derived(Base):
    def overridden(self):
        return "derived"

    async def coroutine(self):
        return 2

    @staticmethod
    def static(x):
        return x

    @classmethod
    def klass(cls):
        return cls.__name__

    def _hidden(self):
        return 3

    def __dunder__(self):
        return 4

    constant = 5
    lam = None


def test_list_functions_public_methods_only():
    assert Derived().list_functions() == ["coroutine", "inherited", "klass", "overridden", "static"]


def test_base_class_offers_nothing_of_its_own():
    assert ChildWorker().list_functions() == []
    for own in ("run", "stop", "list_functions"):
        assert own not in Derived().list_functions()


def test_sync_methods_run_on_the_run_thread_async_ones_on_the_loop_thread(sample_worker):
    with ParentWorker.spawn(sample_worker) as worker:
        assert worker.sync.call.where() == threading.main_thread().name  # "MainThread" in the worker
        assert worker.sync.call.awhere() == "multifrost-async-methods"


def test_run_on_a_thread_and_stop(monkeypatch):
    """run() also works off the main thread (no signal handlers then) and stop() ends it."""
    import os
    import socket

    # A parent-less spawn-mode worker: give it a port nobody listens on; it
    # connects lazily, so run() serves until stop().
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("COMLINK_ZMQ_PORT", str(port))

    class W(ChildWorker):
        def f(self):
            return 1

    w = W()
    t = threading.Thread(target=w.run)
    t.start()
    try:
        # Serving once the worker has its handle (30 s: a hang guard).
        deadline = time.monotonic() + 30
        while w._handle is None:
            assert time.monotonic() < deadline, "run() never started serving"
            threading.Event().wait(0.01)
        w.stop()
        t.join(timeout=30)
        assert not t.is_alive(), "run() did not return after stop()"
    finally:
        w.stop()
        os.environ.pop("COMLINK_ZMQ_PORT", None)
