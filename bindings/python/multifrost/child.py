"""The serving side: subclass :class:`ChildWorker`, add methods, call ``run()``.

``run()`` takes calls from the library with ``mf_worker_next`` on the thread
that called it. Plain methods run right there, one at a time; ``async def``
methods are scheduled on an asyncio loop in a daemon thread and answered when
they finish, so many can run at once. The library's own I/O thread answers
heartbeats meanwhile, so a long call never makes the worker look dead.

A call the parent cancels (or whose deadline passes) stops like this:

- ``async def`` methods: their task is cancelled, so ``CancelledError`` is
  raised at the ``await`` the method is in (an async generator method gets
  it at its ``await``, or ``GeneratorExit`` at the ``yield`` it is
  suspended at). The loop hears of the cancel on
  a completion queue it watches (``mf_reply_on_cancel_queue`` +
  ``mf_queue_fd``), on its own thread. The other form,
  ``mf_reply_on_cancel``, calls a C function pointer on the library's
  driver thread while that reply's lock is held: as a ctypes callback it
  would make that thread (the one that also reads calls and answers
  heartbeats) wait for the GIL behind whatever Python is running, and any
  answer to the reply made while it waits must not hold the GIL (true of
  ``ctypes.CDLL``, fatal with ``PyDLL``). The queue keeps the rule of the
  whole binding: no library thread ever calls into Python.
- plain methods run on the serving thread: they ask, with
  :meth:`ChildWorker.cancelled` (``mf_reply_cancelled``, a plain read) or
  wait with :meth:`ChildWorker.wait_cancelled` (a sleep that ends early on a
  cancel: the serving thread itself waits on a queue of its own, again
  through ``mf_reply_on_cancel_queue``).

A cancelled method must still end: its answer is dropped by the parent. One
that runs on past the parent's cancel grace gets the worker stopped.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import inspect
import itertools
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from . import _ffi, _log, _values
from ._ffi import Status
from .errors import MultifrostError, error_for

__all__ = ["ChildWorker"]

# How long one mf_worker_next waits before the loop looks again (lets Python
# run its own signal handlers between waits; calls still arrive at once).
_POLL_MS = 250


class _Call:
    """The call a method is running for (the ``_current`` context variable)."""

    __slots__ = ("reply", "token", "in_loop", "hooked", "cancel_seen")

    def __init__(self, reply: int, token: int, in_loop: bool) -> None:
        self.reply = reply
        self.token = token  # its events' token on a cancel queue
        self.in_loop = in_loop  # an async method's task, not the serving thread
        self.hooked = False  # mf_reply_on_cancel_queue done
        self.cancel_seen = False  # its cancel event was taken from the queue


# The call of the running method: set around a plain method on the serving
# thread, and inside an async method's task (each task has its own context).
_current: "contextvars.ContextVar[Optional[_Call]]" = contextvars.ContextVar("multifrost_call", default=None)


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

    A cancelled call (the parent cancelled it, or its deadline passed) stops
    like this: an ``async def`` method gets ``asyncio.CancelledError`` at the
    ``await`` it is in; a plain method checks :meth:`cancelled` or sleeps with
    :meth:`wait_cancelled`::

        def render(self, frames):
            for i in range(frames):
                if self.cancelled():
                    return i          # dropped by the parent; ends the call
                draw(i)

        async def fetch(self, url):
            ...                       # CancelledError at an await when cancelled
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
        self._tokens = itertools.count(1)
        # The serving thread's cancel queue (plain methods), made on first use.
        self._sync_cancels: Optional[int] = None
        # The async loop's cancel queue, and its running tasks by token (loop thread only).
        self._loop_cancels: Optional[int] = None
        self._loop_cancels_fd = -1
        self._tasks: Dict[int, Tuple["asyncio.Task[Any]", _Call]] = {}

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

    # -- cancellation -----------------------------------------------------

    @staticmethod
    def _running_call(what: str) -> _Call:
        call = _current.get()
        if call is None:
            raise RuntimeError(
                f"{what} is for use inside a method while it serves a call "
                "(on the thread or in the task the library runs it on)"
            )
        return call

    def cancelled(self) -> bool:
        """Inside a method: True once the parent cancelled this call or its deadline passed.

        A long plain method checks it and stops early (any return or raise
        ends the call; the parent drops the answer). ``async def`` methods
        may check it too, but are cancelled at their next ``await`` anyway.

        Raises:
            RuntimeError: Called outside a method serving a call.
        """
        call = self._running_call("cancelled()")
        if call.cancel_seen:
            return True
        lib = _ffi.load()
        with self._replies_lock:  # the reply is valid only until it is answered
            if call.reply not in self._open_replies:
                return False
            return bool(lib.mf_reply_cancelled(call.reply))

    def wait_cancelled(self, timeout: float) -> bool:
        """Inside a plain method: sleeps up to ``timeout`` seconds, waking at once on a cancel.

        Returns:
            True if the call was cancelled (now or before), False if the time passed.

        Raises:
            RuntimeError: Called outside a plain method serving a call (an
                ``async def`` method awaits instead: its task is cancelled).
        """
        call = self._running_call("wait_cancelled()")
        if call.in_loop:
            raise RuntimeError("wait_cancelled() would block the event loop: in an async method, await instead")
        if call.cancel_seen:
            return True
        lib = _ffi.load()
        if self._sync_cancels is None:
            self._sync_cancels = lib.mf_queue_new()
        queue = self._sync_cancels
        if not call.hooked:
            if not self._hook(call, queue):
                return False
        deadline = _monotonic_ms() + max(0, int(timeout * 1000))
        events = (_ffi.mf_event * 4)()
        n = ctypes.c_size_t(0)
        while True:
            left = deadline - _monotonic_ms()
            # In slices, so Python signal handlers run between waits.
            status = lib.mf_queue_next(queue, max(0, min(left, _POLL_MS)), events, len(events), ctypes.byref(n))
            if status == Status.OK:
                # Events of earlier calls (cancelled after an earlier wait ended) are dropped.
                if any(events[i].token == call.token for i in range(n.value)):
                    call.cancel_seen = True
                    return True
            elif status != Status.ERR_TIMEOUT:
                raise error_for(status, _ffi.last_error())
            if left <= 0:
                return False

    def _hook(self, call: _Call, queue: int) -> bool:
        """``mf_reply_on_cancel_queue`` for an unanswered call; False if it was answered."""
        with self._replies_lock:
            if call.reply not in self._open_replies:
                return False
            self._check(_ffi.load().mf_reply_on_cancel_queue(call.reply, queue, call.token))
        call.hooked = True
        return True

    def _drain_loop_cancels(self) -> None:
        """On the async loop, when its cancel queue is readable: cancels those calls' tasks."""
        queue = self._loop_cancels
        if queue is None:
            return
        try:
            os.read(self._loop_cancels_fd, 64)
        except BlockingIOError:
            pass
        lib = _ffi.load()
        events = (_ffi.mf_event * 64)()
        n = ctypes.c_size_t(0)
        while lib.mf_queue_next(queue, 0, events, len(events), ctypes.byref(n)) == Status.OK:
            for i in range(n.value):
                entry = self._tasks.get(events[i].token)
                if entry is not None:
                    task, call = entry
                    call.cancel_seen = True
                    task.cancel()
            if n.value < len(events):
                break

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
        call = _Call(reply, next(self._tokens), in_loop=False)
        ctx = _current.set(call)
        try:
            args = _values.unpack(args_msgpack)
            if not isinstance(args, list):
                raise TypeError("arguments must be an array")
            method = getattr(self, name)
            result = method(*args)
            if inspect.isgenerator(result):
                # Its body runs here, on the serving thread, as a plain method's does.
                result = self._stream(result, call)
        except Exception as e:
            self._answer_error(reply, _error_text(e))
            return
        finally:
            _current.reset(ctx)
        if inspect.isasyncgen(result):
            result = self._astream(result, call)
        if inspect.isawaitable(result):
            call.in_loop = True
            self._schedule(result, call)
        else:
            self._answer(reply, result)

    def _yield(self, call: _Call, item: Any) -> bool:
        """``mf_reply_yield`` of one item: True to go on, False once the caller closed the stream.

        Blocks while the caller has all the items it asked for so far.

        Raises:
            TypeError: The item has no msgpack form.
            MultifrostError: The library refused the item.
        """
        try:
            data = _values.pack(item)
        except Exception as e:
            raise TypeError(f"the item cannot be sent: {e}") from e
        status = _ffi.load().mf_reply_yield(call.reply, data, len(data))
        if status == Status.ERR_CANCELLED:
            call.cancel_seen = True
            return False
        if status != Status.OK:
            raise error_for(status, _ffi.last_error())
        return True

    def _stream(self, gen: Any, call: _Call) -> None:
        """On the serving thread: sends a generator method's items; the answer is nil.

        A closed stream closes the generator (``GeneratorExit`` at its
        ``yield``); a plain call (or another implementation's parent) gets
        the items as one list, which the library makes of them.
        """
        try:
            for item in gen:
                if not self._yield(call, item):
                    break
        finally:
            gen.close()
        return None

    async def _astream(self, agen: Any, call: _Call) -> None:
        """In the async method's task: sends an async generator's items; the answer is nil.

        ``mf_reply_yield`` blocks while the caller has no credit left, so it
        runs on the loop's default executor, never on the loop itself; a
        cancel wakes it (MF_ERR_CANCELLED), so the task waits for it before
        the call is answered, and the reply is never answered during a yield.
        """
        loop = asyncio.get_running_loop()
        try:
            async for item in agen:
                fut = loop.run_in_executor(None, self._yield, call, item)
                try:
                    go_on = await asyncio.shield(fut)
                except asyncio.CancelledError:
                    await asyncio.wait([fut])
                    raise
                if not go_on:
                    break
        finally:
            await agen.aclose()
        return None

    def _schedule(self, awaitable: Any, call: _Call) -> None:
        self._ensure_loop().call_soon_threadsafe(self._start_task, awaitable, call)

    def _start_task(self, awaitable: Any, call: _Call) -> None:
        """On the loop: runs an async method's awaitable as a task that its call's cancel cancels."""

        async def _run() -> Any:
            _current.set(call)  # in the task's own context
            return await awaitable

        task = asyncio.get_running_loop().create_task(_run())
        self._tasks[call.token] = (task, call)
        # The reply is answered only by _finish, later on this loop, so it is open
        # here. Already cancelled: the event is queued at once.
        assert self._loop_cancels is not None
        self._hook(call, self._loop_cancels)
        task.add_done_callback(lambda t: self._finish(t, call))

    def _finish(self, task: "asyncio.Task[Any]", call: _Call) -> None:
        self._tasks.pop(call.token, None)
        if task.cancelled():
            why = "the call was cancelled" if call.cancel_seen else "the worker is stopping"
            self._answer_error(call.reply, f"CancelledError: {why}")
            return
        exc = task.exception()
        if exc is not None:
            self._answer_error(call.reply, _error_text(exc))
        else:
            self._answer(call.reply, task.result())

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            lib = _ffi.load()
            queue = lib.mf_queue_new()
            fd = ctypes.c_int(-1)
            self._check(lib.mf_queue_fd(queue, ctypes.byref(fd)))
            self._loop_cancels, self._loop_cancels_fd = queue, fd.value

            def _run_loop() -> None:
                asyncio.set_event_loop(loop)
                loop.add_reader(fd.value, self._drain_loop_cancels)
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
                _ffi.load().mf_queue_free(self._loop_cancels)  # its calls are all answered below
                self._loop_cancels = None
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
        if self._sync_cancels is not None:
            lib.mf_queue_free(self._sync_cancels)
            self._sync_cancels = None


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def _line_buffered() -> None:
    """print() output must reach the parent promptly: flush at every newline."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(line_buffering=True)
            except (ValueError, OSError):
                pass
