"""The serving side: subclass :class:`ChildWorker`, add methods, call ``run()``.

``run()`` takes calls from the library with ``mf_worker_next`` on the thread
that called it. Plain methods run right there, one at a time; ``async def``
methods are scheduled on an asyncio loop in a daemon thread and answered when
they finish, so many can run at once. The library's own I/O thread answers
heartbeats meanwhile, so a long call never makes the worker look dead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import inspect
import signal
import sys
import threading
from typing import Any, Dict, List, Optional

from . import _ffi, _log, _values
from ._ffi import Status
from .errors import MultifrostError, error_for

__all__ = ["ChildWorker"]

# How long one mf_worker_next waits before the loop looks again (lets Python
# run its own signal handlers between waits; calls still arrive at once).
_POLL_MS = 250


def _error_text(e: BaseException) -> str:
    """``"<ExceptionType>: <message>"``, the convention of every worker."""
    return f"{type(e).__name__}: {e}"


class ChildWorker:
    """Base class of a worker: every public method of a subclass can be called.

    Example::

        class MathWorker(ChildWorker):
            def add(self, a, b):
                return a + b

            async def fetch(self, url):
                ...

        if __name__ == "__main__":
            MathWorker().run()          # spawn mode, from COMLINK_ZMQ_PORT
            # MathWorker(service_id="math-service").run()  # connect mode

    Methods whose names start with ``_`` are private: they are not offered and
    the library refuses calls to them ("Cannot call private method").
    """

    def __init__(self, service_id: Optional[str] = None, *, namespace: Optional[str] = None) -> None:
        """Creates the worker (nothing is opened until :meth:`run`).

        Args:
            service_id: None for spawn mode (a parent started this process and
                set ``COMLINK_ZMQ_PORT``); a service id for connect mode
                (registered in ``$HOME/.multifrost/services.json`` while
                running); or ``tcp://host:port`` to bind there without the registry.
            namespace: The namespace served (default ``"default"``); calls for
                another namespace are dropped.
        """
        self.service_id = service_id
        self.namespace = namespace
        self._handle: Optional[int] = None
        self._handle_lock = threading.Lock()
        self._stop_requested = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        # Replies not answered yet, by address: each is answered exactly once.
        self._open_replies: Dict[int, int] = {}
        self._replies_lock = threading.Lock()

    # -- what can be called -------------------------------------------------

    def list_functions(self) -> List[str]:
        """The names callable by parents: public methods of the subclass(es).

        Returns:
            Sorted method names, without ``ChildWorker``'s own methods and
            without names starting with ``_``.
        """
        names = set()
        for cls in type(self).__mro__:
            if cls is ChildWorker or cls is object:
                continue
            for name, value in vars(cls).items():
                if name.startswith("_") or name in names:
                    continue
                if isinstance(value, (staticmethod, classmethod)) or inspect.isfunction(value):
                    names.add(name)
        return sorted(names)

    # -- serving ----------------------------------------------------------

    def run(self) -> None:
        """Serves calls until a ``shutdown`` from the parent, SIGTERM, SIGINT or :meth:`stop`.

        Spawn mode reads ``COMLINK_ZMQ_PORT`` from the environment. If the
        worker cannot start (no or a bad port, a service id that is taken),
        the reason is printed to stderr and the process exits with status 2,
        as the protocol asks of workers.

        Raises:
            SystemExit: The worker could not start (status 2).
        """
        if not hasattr(self, "_replies_lock"):  # a subclass __init__ that skipped ours
            ChildWorker.__init__(self, getattr(self, "service_id", None), namespace=getattr(self, "namespace", None))
        self._stop_requested = False
        _line_buffered()
        previous = self._catch_signals()
        try:
            try:
                self._open()
            except MultifrostError as e:
                sys.stderr.write(f"{type(self).__name__}: {e}\n")
                sys.stderr.flush()
                raise SystemExit(2) from e
            try:
                self._serve()
            finally:
                self._shutdown()
        finally:
            for sig, handler in previous.items():
                if handler is not None:
                    signal.signal(sig, handler)

    def _catch_signals(self) -> Dict[int, Any]:
        """Makes SIGINT/SIGTERM mean "stop serving" for the whole of run().

        While serving, the library's own handler does this (and restores the
        previous handler after). This Python handler covers the moments just
        before and after: a parent sends ``shutdown`` and SIGTERM together, and
        a SIGTERM that lands after the library's handler is gone would
        otherwise kill the process in the middle of run()'s clean-up, and a
        SIGINT would raise KeyboardInterrupt there.
        """
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: Dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Makes :meth:`run` return soon. Any thread, e.g. from inside a method."""
        with self._handle_lock:
            self._stop_requested = True
            if self._handle is not None:
                _ffi.load().mf_worker_stop(self._handle)

    def _open(self) -> None:
        lib = _ffi.load()
        _log.install()
        handle = _ffi.mf_worker_p()
        sid = _ffi.encode(self.service_id) if self.service_id else None
        status = lib.mf_worker_new(sid, ctypes.byref(handle))
        if status != Status.OK:
            raise error_for(status, _ffi.last_error())
        try:
            if self.namespace:
                self._check(lib.mf_worker_set_namespace(handle, _ffi.encode(self.namespace)))
            for name in self.list_functions():
                self._check(lib.mf_worker_register_pull(handle, _ffi.encode(name)))
            # The library handles SIGINT/SIGTERM while it serves (it replaces
            # Python's SIGINT handler for that time and restores it after).
            self._check(lib.mf_worker_start(handle))
        except BaseException:
            lib.mf_worker_free(handle)
            raise
        with self._handle_lock:
            self._handle = handle.value
            if self._stop_requested:  # stop() or a signal came while we were starting
                lib.mf_worker_stop(self._handle)

    @staticmethod
    def _check(status: int) -> None:
        if status != Status.OK:
            raise error_for(status, _ffi.last_error())

    def _serve(self) -> None:
        lib = _ffi.load()
        incoming = _ffi.mf_incoming()
        handle = self._handle
        while True:
            try:
                status = lib.mf_worker_next(handle, _POLL_MS, ctypes.byref(incoming))
                if status == Status.ERR_TIMEOUT:
                    continue
                if status == Status.ERR_CLOSED:
                    return
                if status != Status.OK:
                    raise error_for(status, _ffi.last_error())
                # The name and arguments belong to the reply: copy them first.
                name = incoming.function.decode("utf-8", "replace")
                args = ctypes.string_at(incoming.args, incoming.args_len) if incoming.args_len else b"\x90"
                reply = incoming.reply
                with self._replies_lock:
                    self._open_replies[reply] = reply
                self._dispatch(name, args, reply)
            except KeyboardInterrupt:
                # SIGINT that arrived while Python's own handler was in place
                # (just before or after the library's): stop like the library would,
                # and wait for MF_ERR_CLOSED, which the core reports only once the
                # service's registry entry is gone (tests/worker.rs pins it).
                lib.mf_worker_stop(handle)
                self._drain_until_closed(handle, incoming)
                return

    def _drain_until_closed(self, handle: int, incoming: Any) -> None:
        """After a stop: calls still handed out are left for _shutdown to answer."""
        lib = _ffi.load()
        while True:
            try:
                status = lib.mf_worker_next(handle, _POLL_MS, ctypes.byref(incoming))
            except KeyboardInterrupt:
                continue
            if status == Status.OK:
                with self._replies_lock:
                    self._open_replies[incoming.reply] = incoming.reply
            elif status != Status.ERR_TIMEOUT:
                return

    def _dispatch(self, name: str, args_msgpack: bytes, reply: int) -> None:
        try:
            args = _values.unpack(args_msgpack)
            if not isinstance(args, list):
                raise TypeError("arguments must be an array")
            method = getattr(self, name)
            result = method(*args)
        except Exception as e:
            self._answer_error(reply, _error_text(e))
            return
        if inspect.isawaitable(result):
            self._schedule(result, reply)
        else:
            self._answer(reply, result)

    def _schedule(self, awaitable: Any, reply: int) -> None:
        loop = self._ensure_loop()

        async def _run() -> Any:
            return await awaitable

        future = asyncio.run_coroutine_threadsafe(_run(), loop)

        def _done(f: "concurrent.futures.Future[Any]") -> None:
            if f.cancelled():
                self._answer_error(reply, "CancelledError: the worker is stopping")
                return
            exc = f.exception()
            if exc is not None:
                self._answer_error(reply, _error_text(exc))
            else:
                self._answer(reply, f.result())

        future.add_done_callback(_done)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def _run_loop() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=_run_loop, name="multifrost-async-methods", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._loop_thread = loop, thread
        return self._loop

    def _take_reply(self, reply: int) -> bool:
        with self._replies_lock:
            return self._open_replies.pop(reply, None) is not None

    def _answer(self, reply: int, value: Any) -> None:
        try:
            data = _values.pack(value)
        except Exception as e:
            self._answer_error(reply, f"TypeError: the result cannot be sent: {e}")
            return
        if not self._take_reply(reply):
            return
        status = _ffi.load().mf_reply_ok(reply, data, len(data))
        if status != Status.OK:  # refused (e.g. over the size limits): the reply is still ours
            msg = _ffi.last_error()
            with self._replies_lock:
                self._open_replies[reply] = reply
            self._answer_error(reply, f"ValueError: {msg}")

    def _answer_error(self, reply: int, message: str) -> None:
        if not self._take_reply(reply):
            return
        _ffi.load().mf_reply_error(reply, _ffi.encode(message.replace("\0", "\\0"), "replace"))

    def _shutdown(self) -> None:
        lib = _ffi.load()
        loop, thread = self._loop, self._loop_thread
        if loop is not None and thread is not None:

            def _cancel_all() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.call_later(0.2, loop.stop)

            try:
                loop.call_soon_threadsafe(_cancel_all)
            except RuntimeError:
                pass
            thread.join(timeout=2)
            if not thread.is_alive():
                loop.close()
            self._loop = self._loop_thread = None
        # Calls still unanswered must not leak (and their callers should not wait for a timeout).
        with self._replies_lock:
            leftovers = list(self._open_replies)
        for reply in leftovers:
            self._answer_error(reply, "RuntimeError: the worker stopped before answering")
        with self._handle_lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            lib.mf_worker_stop(handle)
            lib.mf_worker_free(handle)


def _line_buffered() -> None:
    """print() output must reach the parent promptly: flush at every newline."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(line_buffering=True)
            except (ValueError, OSError):
                pass
