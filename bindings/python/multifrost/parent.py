"""The calling side: :class:`ParentWorker` spawns a worker or connects to one.

Async calls are started with ``mf_call_queued`` and complete on a queue of
their own event loop: the loop watches the queue's descriptor
(``mf_queue_fd``, ``loop.add_reader``) and resolves the futures itself, so a
result reaches the awaiting coroutine with no thread in between. A blocking
call from any thread but the main one is a plain ``mf_call`` (the GIL is
released while it waits). The main thread must stay interruptible by Ctrl-C,
so its blocking calls complete on a queue of its own, waited on in slices.
No library thread ever calls into Python, and awaiting a call never blocks
the event loop.

Cancelling is the caller's own gesture, so it ends the remote call too: every
call is started with ``mf_call_queued_start``, which hands back the call's id,
and a future cancelled by its task (``task.cancel()``, ``asyncio.wait_for``
running out) calls ``mf_cancel`` with it. The core then queues the call's
event with MF_ERR_CANCELLED; the queue reader finds the future already done
and drops it. A blocking call on the main thread interrupted by Ctrl-C is
cancelled the same way; :meth:`SyncHandle.start_call` gives other threads a
call they can cancel.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
import math
import os
import shutil
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _ffi, _log, _values
from ._ffi import Status
from .errors import (
    ClosedError,
    InvalidArgumentError,
    ProtocolError,
    error_for,
)

__all__ = [
    "ParentWorker",
    "AsyncCallProxy",
    "SyncCallProxy",
    "AsyncStreamProxy",
    "SyncStreamProxy",
    "SyncHandle",
    "PendingCall",
    "Stream",
    "AsyncStream",
]

PathLike = Union[str, "os.PathLike[str]"]

# How many completions one mf_queue_next may hand over at once.
_BATCH = 256

# How long the main thread waits on its queue or for a stream's item at a
# time: Ctrl-C (any Python signal handler) runs between two waits.
_SLICE_MS = 100


def _ms(seconds: float, what: str, allow_zero: bool = False) -> int:
    """Seconds as whole milliseconds for the C API (at least 1 for a positive value)."""
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidArgumentError(f"{what} must be a number of seconds, got {seconds!r}")
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidArgumentError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {seconds!r}")
    if math.isinf(seconds):
        raise InvalidArgumentError(f"{what} must be finite, got {seconds!r}")
    return max(1, int(round(seconds * 1000))) if seconds > 0 else 0


def _count(value: int, what: str, minimum: int = 0, maximum: int = 0xFFFFFFFF) -> int:
    """A whole number for a ``uint32_t`` (or, with ``maximum``, wider) option:
    ctypes would wrap a negative or too large one silently."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidArgumentError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return value


def _call_timeout_ms(timeout: Optional[float]) -> int:
    """A per-call timeout for ``mf_call_queued``: None → 0 (the parent's default), inf → -1 (none)."""
    if timeout is None:
        return 0
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and math.isinf(timeout) and timeout > 0:
        return -1
    return _ms(timeout, "timeout")


def _check(status: int) -> None:
    if status != Status.OK:
        raise error_for(status, _ffi.last_error())


@dataclass
class _Plan:
    """What to start: a program to spawn or a target to connect to, plus options."""

    program: Optional[str] = None
    args: List[str] = field(default_factory=list)
    target: Optional[str] = None
    name: Optional[str] = None
    namespace: Optional[str] = None
    default_timeout: Optional[float] = None
    heartbeat: Optional[Tuple[float, float, int]] = None
    breaker: Optional[Tuple[int, float]] = None
    breaker_counts_remote_errors: bool = False
    auto_restart: int = 0
    start_timeout: Optional[float] = None
    connect_timeout: Optional[float] = None
    shutdown_grace: Optional[float] = None
    cancel_grace: Optional[float] = None
    private_link: bool = True
    stream_credit: Optional[int] = None
    workers: Optional[int] = None
    max_calls_per_worker: Optional[int] = None

    def options(self, namespace: Optional[str] = None) -> int:
        """A new ``mf_options`` for this plan; the caller frees it."""
        lib = _ffi.load()
        o = int(lib.mf_options_new())
        try:
            if self.name:
                _check(lib.mf_options_set_name(o, _ffi.encode(self.name)))
            ns = namespace or self.namespace
            if ns:
                _check(lib.mf_options_set_namespace(o, _ffi.encode(ns)))
            if self.default_timeout is not None:
                _check(lib.mf_options_set_default_timeout(o, _ms(self.default_timeout, "default_timeout")))
            if self.heartbeat is not None:
                interval, timeout, misses = self.heartbeat
                _check(
                    lib.mf_options_set_heartbeat(
                        o,
                        _ms(interval, "heartbeat_interval", allow_zero=True),
                        _ms(timeout, "heartbeat_timeout", allow_zero=True),
                        _count(misses, "heartbeat_max_misses"),
                    )
                )
            if self.breaker is not None:
                threshold, cooldown = self.breaker
                _check(
                    lib.mf_options_set_breaker(
                        o, _count(threshold, "breaker_threshold", 1), _ms(cooldown, "breaker_cooldown", allow_zero=True)
                    )
                )
            if self.breaker_counts_remote_errors:
                _check(lib.mf_options_set_breaker_counts_remote_errors(o, True))
            if self.auto_restart:
                _check(lib.mf_options_set_auto_restart(o, _count(self.auto_restart, "max_restart_attempts")))
            if self.start_timeout is not None:
                _check(lib.mf_options_set_start_timeout(o, _ms(self.start_timeout, "start_timeout")))
            if self.connect_timeout is not None:
                _check(lib.mf_options_set_connect_timeout(o, _ms(self.connect_timeout, "timeout")))
            if self.shutdown_grace is not None:
                _check(
                    lib.mf_options_set_shutdown_grace(o, _ms(self.shutdown_grace, "shutdown_grace", allow_zero=True))
                )
            if self.cancel_grace is not None:
                _check(lib.mf_options_set_cancel_grace(o, _ms(self.cancel_grace, "cancel_grace", allow_zero=True)))
            if not self.private_link:
                _check(lib.mf_options_set_private_link(o, False))
            if self.stream_credit is not None:
                _check(lib.mf_options_set_stream_credit(o, _count(self.stream_credit, "stream_credit", 1)))
            if self.workers is not None:
                # The core checks the range (1..=256) and says so in its words.
                _check(lib.mf_options_set_workers(o, _count(self.workers, "workers")))
            if self.max_calls_per_worker is not None:
                n = _count(self.max_calls_per_worker, "max_calls_per_worker", maximum=0xFFFFFFFFFFFFFFFF)
                _check(lib.mf_options_set_max_calls_per_worker(o, n))
        except BaseException:
            lib.mf_options_free(o)
            raise
        return o


# A waiter: the event loop of an async caller, and its future.
_Waiter = Tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _settle(fut: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    """On the future's event loop: resolves it, unless the caller cancelled it meanwhile."""
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _decoded(data: bytes) -> Tuple[bool, Any]:
    """A result's bytes as (True, value), or (False, ProtocolError) when they do not decode."""
    try:
        return True, _values.unpack(data)
    except Exception as e:  # undecodable result
        return False, ProtocolError(f"cannot decode the result: {e}")


def _outcome(ev: "_ffi.mf_event") -> Tuple[bool, Any]:
    """An event's result as (True, value) or (False, exception)."""
    if ev.status == Status.OK:
        return _decoded(ctypes.string_at(ev.result, ev.result_len) if ev.result_len else b"")
    msg = ev.error_message.decode("utf-8", "replace") if ev.error_message else ""
    return False, error_for(ev.status, msg)


class _MainQueue:
    """The main thread's completion queue for its blocking calls (one at a time).

    A completion of a call the main thread stopped waiting for (Ctrl-C) may
    still arrive: it is dropped by the next wait, by its token.
    """

    def __init__(self) -> None:
        lib = _ffi.load()
        self.queue = lib.mf_queue_new()
        self.events = (_ffi.mf_event * 4)()
        self.count = ctypes.c_size_t(0)
        self.tokens = itertools.count(1)

    def wait(self, token: int) -> Any:
        """Blocks until call ``token`` completes; returns its value or raises its error."""
        lib = _ffi._lib
        while True:
            status = lib.mf_queue_next(self.queue, _SLICE_MS, self.events, len(self.events), ctypes.byref(self.count))
            if status == Status.OK:
                for i in range(self.count.value):
                    ev = self.events[i]
                    if ev.token == token:
                        ok, value = _outcome(ev)
                        if ok:
                            return value
                        raise value
            elif status != Status.ERR_TIMEOUT:
                raise error_for(status, _ffi.last_error())


_main_queue: Optional[_MainQueue] = None


class _LoopQueue:
    """The completion queue of one event loop: the loop reads it when its descriptor is readable."""

    def __init__(self, conn: "_Connection", loop: asyncio.AbstractEventLoop) -> None:
        lib = _ffi.load()
        self.conn = conn
        self.loop = loop
        self.queue = lib.mf_queue_new()
        fd = ctypes.c_int(-1)
        status = lib.mf_queue_fd(self.queue, ctypes.byref(fd))
        if status != Status.OK:
            err = error_for(status, _ffi.last_error())
            lib.mf_queue_free(self.queue)
            raise err
        self.fd = fd.value
        self.events = (_ffi.mf_event * _BATCH)()
        self.freed = False
        loop.add_reader(self.fd, self.drain)

    def drain(self) -> None:
        """On the loop, when the queue's descriptor is readable: resets it,
        then takes every waiting completion and settles its future."""
        if self.freed:
            return
        try:
            os.read(self.fd, 64)
        except BlockingIOError:
            pass
        lib = _ffi._lib
        n = ctypes.c_size_t(0)
        pending = self.conn.pending
        while lib.mf_queue_next(self.queue, 0, self.events, _BATCH, ctypes.byref(n)) == Status.OK:
            taken = n.value
            for i in range(taken):
                ev = self.events[i]
                waiter = pending.pop(ev.token, None)
                if waiter is not None:
                    _settle(waiter[1], *_outcome(ev))
            if taken < _BATCH:
                break  # the queue was empty; a later completion makes the fd readable again

    def release(self) -> None:
        """On the loop, after the parent handles closed: settles the rest, frees."""
        if self.freed:
            return
        self.drain()
        self.freed = True
        try:
            self.loop.remove_reader(self.fd)
        except Exception:  # the loop is closing
            pass
        self._free()

    def _free(self) -> None:
        _ffi.load().mf_queue_free(self.queue)

    def release_from(self, closing_thread_loop: Optional[asyncio.AbstractEventLoop]) -> None:
        """Releases this queue from any thread: on its loop, or now if that loop is closed."""
        if closing_thread_loop is self.loop:
            self.release()
            return
        try:
            self.loop.call_soon_threadsafe(self.release)
        except RuntimeError:  # the loop is closed: its selector (and our readers) are gone
            self.freed = True
            self._free()


# Function names as C strings, so repeated calls do not encode them again.
_function_names: Dict[str, bytes] = {}


def _function_name(function: str) -> bytes:
    fn = _function_names.get(function)
    if fn is None:
        fn = _ffi.encode(function)
        if len(_function_names) < 4096:
            _function_names[function] = fn
    return fn


class _Connection:
    """The C handles of one ParentWorker and its completion machinery.

    Holds no reference to the ParentWorker, so a forgotten worker can be
    collected (its finalizer closes this).
    """

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.lock = threading.Lock()  # guards handles against close while a call starts
        self.start_lock = threading.Lock()  # one start (or namespace connect) at a time
        self.handle: Optional[int] = None
        self.extra: Dict[str, int] = {}  # namespace -> extra parent handle (connect mode)
        self.loop_queues: Dict[asyncio.AbstractEventLoop, _LoopQueue] = {}
        self.pending: Dict[int, _Waiter] = {}
        self.tokens = itertools.count(1)
        self.closed = False

    # -- life cycle -------------------------------------------------------

    def _open_handle(self, namespace: Optional[str] = None) -> int:
        lib = _ffi.load()
        _log.install()
        opts = self.plan.options(namespace)
        out = _ffi.mf_parent_p()
        try:
            if self.plan.program is not None:
                argv = (ctypes.c_char_p * (len(self.plan.args) + 1))()
                for i, a in enumerate(self.plan.args):
                    argv[i] = _ffi.encode(a)
                argv[len(self.plan.args)] = None
                status = lib.mf_spawn(_ffi.encode(self.plan.program), argv, opts, ctypes.byref(out))
            else:
                assert self.plan.target is not None
                status = lib.mf_connect(_ffi.encode(self.plan.target), opts, ctypes.byref(out))
            _check(status)  # mf_last_error is read on this same thread
        finally:
            lib.mf_options_free(opts)
        assert out.value
        return out.value

    def _open_interruptibly(self) -> int:
        """``_open_handle``; on the main thread it runs on a helper thread while
        the main thread waits in short slices, so Ctrl-C ends the wait at once
        (a start abandoned that way is closed as soon as it completes)."""
        if threading.current_thread() is not threading.main_thread():
            return self._open_handle()
        done = threading.Event()
        guard = threading.Lock()
        box: Dict[str, Any] = {"abandoned": False}

        def start() -> None:
            handle, error = None, None
            try:
                handle = self._open_handle()  # mf_last_error is read on this thread
            except BaseException as e:  # handed to the waiting thread
                error = e
            with guard:
                box["handle"], box["error"] = handle, error
                abandoned = box["abandoned"]
            done.set()
            if abandoned and handle is not None:
                _ffi.load().mf_parent_close(handle)

        threading.Thread(target=start, name="multifrost-start", daemon=True).start()
        try:
            while not done.wait(0.1):
                pass
        except BaseException:
            with guard:
                box["abandoned"] = True
                handle = box.get("handle")
            if handle is not None:
                _ffi.load().mf_parent_close(handle)
            raise
        if box["error"] is not None:
            raise box["error"]
        return box["handle"]

    def open(self) -> None:
        """Spawns or connects (blocking); a no-op when already started."""
        with self.start_lock:
            with self.lock:
                if self.closed:
                    raise ClosedError("this worker was closed; create a new ParentWorker")
                if self.handle is not None:
                    return
            handle = self._open_interruptibly()
            lib = _ffi.load()
            with self.lock:
                if self.closed:  # closed while we were starting
                    lib.mf_parent_close(handle)
                    raise ClosedError("this worker was closed while it was starting")
                self.handle = handle

    def has_namespace(self, namespace: Optional[str]) -> bool:
        return namespace is None or namespace == (self.plan.namespace or "default") or namespace in self.extra

    def ensure_namespace(self, namespace: str) -> None:
        """Opens a second connection for calls in ``namespace`` (connect mode only; blocking)."""
        if self.has_namespace(namespace):
            return
        if self.plan.target is None:
            raise InvalidArgumentError(
                f"namespace {namespace!r} differs from this spawned worker's namespace "
                f"{self.plan.namespace or 'default'!r}: the C API sets the namespace per parent "
                "(mf_options_set_namespace) and a spawned worker can be reached only by the parent "
                "that spawned it; pass namespace= to ParentWorker.spawn() instead"
            )
        with self.start_lock:
            with self.lock:
                if self.closed or self.handle is None:
                    raise ClosedError("the worker is not started (or was closed)")
                if namespace in self.extra:
                    return
            handle = self._open_handle(namespace)
            with self.lock:
                if self.closed:
                    _ffi.load().mf_parent_close(handle)
                    raise ClosedError("the worker was closed")
                self.extra[namespace] = handle

    def close(self) -> None:
        """Closes every handle, fails calls in flight with ClosedError; idempotent."""
        lib = _ffi._lib
        with self.lock:
            was_closed = self.closed
            self.closed = True
            handles = ([self.handle] if self.handle is not None else []) + list(self.extra.values())
            self.handle = None
            self.extra = {}
            loop_queues = list(self.loop_queues.values())
            self.loop_queues = {}
        if was_closed and not handles:
            return
        if lib is not None:
            for h in handles:
                lib.mf_parent_close(h)  # in-flight calls complete with MF_ERR_CLOSED
            try:
                current: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            for lq in loop_queues:
                lq.release_from(current)
        # Completions that never came (there should be none) must not leave awaiters hanging.
        for token, (loop, fut) in list(self.pending.items()):
            if self.pending.pop(token, None) is not None:
                try:
                    loop.call_soon_threadsafe(_settle, fut, False, ClosedError("the worker was closed"))
                except RuntimeError:  # the loop was closed: nobody is waiting any more
                    pass

    # -- calls ----------------------------------------------------------

    def _handle_for(self, namespace: Optional[str]) -> int:
        """Under ``self.lock``: the handle that serves ``namespace``.

        Raises:
            ClosedError: Not started, or closed.
        """
        if namespace is None or namespace == (self.plan.namespace or "default"):
            handle = self.handle
        else:
            handle = self.extra.get(namespace)
        if handle is None:
            if self.closed:
                raise ClosedError("the worker was closed")
            raise ClosedError(
                "the worker is not started: use `async with`, `await worker.start()` or `worker.sync.start()`"
            )
        return handle

    def begin(self, function: str, args: bytes, timeout_ms: int, namespace: Optional[str], waiter: _Waiter) -> None:
        """Starts one call from an event loop; its completion settles ``waiter`` on that loop.

        When the waiter's future is cancelled first (its task was), the
        remote call is cancelled too.

        Raises:
            ClosedError: Not started, or closed.
            MultifrostError: The call could not be started.
        """
        fn = _function_name(function)
        token = next(self.tokens)
        lib = _ffi.load()
        call_id = ctypes.c_uint64(0)
        with self.lock:
            handle = self._handle_for(namespace)
            loop, fut = waiter
            lq = self.loop_queues.get(loop)
            if lq is None:
                lq = self._new_loop_queue(loop)
            # Registered before the call starts; its completion is read on this loop, later.
            self.pending[token] = waiter
            status = lib.mf_call_queued_start(
                handle, fn, args, len(args), timeout_ms, lq.queue, token, ctypes.byref(call_id)
            )
            if status != Status.OK:
                self.pending.pop(token, None)
                raise error_for(status, _ffi.last_error())
        cid = call_id.value

        def _on_done(f: "asyncio.Future[Any]") -> None:
            # On the loop. A future settled by its completion is not
            # cancelled; one cancelled by its task means the caller gave up.
            if f.cancelled():
                self.cancel(handle, cid)

        fut.add_done_callback(_on_done)

    def cancel(self, handle: int, call_id: int) -> None:
        """``mf_cancel`` of one call of ``handle``, unless the handle was closed
        meanwhile (closing ended the call already and freed the handle)."""
        with self.lock:
            if handle != self.handle and handle not in self.extra.values():
                return
            # MF_OK also for a call that already ended; nothing else can fail here.
            _ffi.load().mf_cancel(handle, call_id)

    def call(self, function: str, args: bytes, timeout_ms: int, namespace: Optional[str]) -> Any:
        """One blocking call: its result, or its error raised.

        Another thread may close meanwhile: a call through its own reference
        (``mf_parent_retain``) then ends with ClosedError.
        """
        global _main_queue
        fn = _function_name(function)
        lib = _ffi.load()
        if threading.current_thread() is threading.main_thread():
            mq = _main_queue
            if mq is None:
                mq = _main_queue = _MainQueue()
            token = next(mq.tokens)
            call_id = ctypes.c_uint64(0)
            with self.lock:
                handle = self._handle_for(namespace)
                status = lib.mf_call_queued_start(
                    handle, fn, args, len(args), timeout_ms, mq.queue, token, ctypes.byref(call_id)
                )
                if status != Status.OK:
                    raise error_for(status, _ffi.last_error())
            try:
                return mq.wait(token)
            except BaseException:
                # Ctrl-C (or any error): the caller gave up on the call, so the
                # worker may stop it (a call that already ended is left alone).
                self.cancel(handle, call_id.value)
                raise
        with self.lock:
            ref = lib.mf_parent_retain(self._handle_for(namespace))
        out = _ffi.mf_buffer()
        try:
            status = lib.mf_call(ref, fn, args, len(args), timeout_ms, ctypes.byref(out))
            if status != Status.OK:
                raise error_for(status, _ffi.last_error())
            try:
                data = ctypes.string_at(out.data, out.len) if out.len else b""
            finally:
                lib.mf_buffer_free(out)
        finally:
            lib.mf_parent_release(ref)
        ok, value = _decoded(data)
        if ok:
            return value
        raise value

    def start_call(self, function: str, args: bytes, timeout_ms: int, namespace: Optional[str]) -> "PendingCall":
        """Starts one call on a queue of its own (see :class:`PendingCall`)."""
        fn = _function_name(function)
        lib = _ffi.load()
        queue = lib.mf_queue_new()
        call_id = ctypes.c_uint64(0)
        try:
            with self.lock:
                handle = self._handle_for(namespace)
                status = lib.mf_call_queued_start(
                    handle, fn, args, len(args), timeout_ms, queue, 1, ctypes.byref(call_id)
                )
                if status != Status.OK:
                    raise error_for(status, _ffi.last_error())
        except BaseException:
            lib.mf_queue_free(queue)
            raise
        return PendingCall(self, handle, queue, call_id.value, function)

    def open_stream(self, function: str, args: bytes, timeout_ms: int, namespace: Optional[str]) -> "_StreamState":
        """Starts ``function`` as a stream (``mf_stream_open`` does not wait for the worker)."""
        fn = _function_name(function)
        lib = _ffi.load()
        out = _ffi.mf_stream_p()
        with self.lock:
            status = lib.mf_stream_open(self._handle_for(namespace), fn, args, len(args), timeout_ms, ctypes.byref(out))
            if status != Status.OK:
                raise error_for(status, _ffi.last_error())
        # The stream holds the core's parent state itself: closing the parent
        # ends it (its next item is the close error), and it is freed apart.
        return _StreamState(out.value)

    def _new_loop_queue(self, loop: asyncio.AbstractEventLoop) -> _LoopQueue:
        """A completion queue for ``loop`` (under ``self.lock``); frees those of closed loops."""
        for old in [lq for lq in self.loop_queues.values() if lq.loop.is_closed()]:
            del self.loop_queues[old.loop]
            old.release_from(None)
            for token, (wl, _) in list(self.pending.items()):
                if wl is old.loop:
                    self.pending.pop(token, None)
        lq = _LoopQueue(self, loop)
        self.loop_queues[loop] = lq
        return lq

    def stats(self) -> Optional[Dict[str, Any]]:
        with self.lock:
            if self.handle is None:
                return None
            ptr = _ffi.load().mf_parent_stats_json(self.handle)
        text = _ffi.take_string(ptr)
        return json.loads(text) if text else None


class PendingCall:
    """A call started by :meth:`SyncHandle.start_call`, for code that may
    want to stop it from another thread.

    ``result()`` waits for it (on the main thread in short slices, so Ctrl-C
    still works); ``cancel()``, from any thread, ends it at once: ``result()``
    then raises :class:`CancelledCallError`, and the worker is told to stop
    the handler.
    """

    def __init__(self, conn: _Connection, handle: int, queue: int, call_id: int, function: str) -> None:
        self._conn = conn
        self._handle = handle
        self._call_id = call_id
        self._function = function
        self._lock = threading.Lock()  # one waiter takes the event; the others find the outcome
        self._outcome: Optional[Tuple[bool, Any]] = None
        self._queue = queue
        # The queue outlives an unfinished call (the core keeps it until the call ends).
        self._free = weakref.finalize(self, _ffi.load().mf_queue_free, queue)

    @property
    def call_id(self) -> int:
        """The library's id of the call (never 0)."""
        return self._call_id

    def cancel(self) -> None:
        """Cancels the call if it is still in flight; any thread, any number of times."""
        self._conn.cancel(self._handle, self._call_id)

    def result(self) -> Any:
        """Blocks until the call ends; its value, or its error raised.

        Raises:
            CancelledCallError: :meth:`cancel` ended the call first.
            MultifrostError: As for :meth:`SyncHandle.call_function`.
        """
        with self._lock:
            if self._outcome is None:
                self._outcome = self._wait()
                self._free()
        ok, value = self._outcome
        if ok:
            return value
        raise value

    def _wait(self) -> Tuple[bool, Any]:
        lib = _ffi.load()
        events = (_ffi.mf_event * 1)()
        n = ctypes.c_size_t(0)
        main = threading.current_thread() is threading.main_thread()
        while True:
            status = lib.mf_queue_next(self._queue, _SLICE_MS if main else -1, events, 1, ctypes.byref(n))
            if status == Status.OK:
                return _outcome(events[0])
            if status != Status.ERR_TIMEOUT:
                return False, error_for(status, _ffi.last_error())

    def __repr__(self) -> str:
        state = "pending" if self._outcome is None else "done"
        return f"<PendingCall {self._function!r} id={self._call_id} {state}>"


# The end of a stream, as _StreamState.next returns it.
_END = object()
# next(block=False): no item has come yet, or another thread is in next; wait on another thread.
_NOT_YET = object()


class _StreamState:
    """One ``mf_stream`` and who may touch it.

    One thread at a time is in :meth:`next` (``turn``); it owns the stream
    while there (``in_next``), and only it frees it then. :meth:`close`
    from another thread (a cancelled task, ``aclose``, a finalizer) sends
    ``mf_stream_cancel``, which ends a waiting ``mf_stream_next`` at once
    with MF_ERR_CANCELLED; the thread in ``next`` then closes the stream on
    its way out. A close while no thread is in ``next`` closes the stream
    at once. ``mu`` guards ``ptr``, ``in_next`` and ``closing`` and is never
    held during a wait, so a cancel or close never races a free.

    ``next`` waits with no limit of its own, except on the main thread:
    there it waits in slices of ``_SLICE_MS`` so that Python's signal
    handlers (Ctrl-C) run between two waits; ``*end`` false after
    MF_ERR_TIMEOUT tells such a slice from the call's own timeout.
    ``next(block=False)`` never waits, neither for ``turn`` nor for an item
    (``mf_stream_next`` with 0 ms): an event loop's thread takes the items
    already buffered with it and goes to another thread only for ``_NOT_YET``.
    """

    def __init__(self, ptr: int) -> None:
        self.ptr: Optional[int] = ptr
        self.turn = threading.Lock()
        self.mu = threading.Lock()
        self.in_next = False
        self.closing = False

    def next(self, block: bool = True) -> Any:
        """Blocks for the next item: its value, ``_END``, or the call's error raised.

        A :meth:`close` from another thread during the wait raises
        :class:`CancelledCallError` here. With ``block`` false it returns
        ``_NOT_YET`` instead of waiting, and the stream stays open.
        """
        if block:
            with self.turn:
                return self._take(_SLICE_MS if threading.current_thread() is threading.main_thread() else -1)
        if not self.turn.acquire(blocking=False):
            return _NOT_YET
        try:
            return self._take(0)
        finally:
            self.turn.release()

    def _take(self, wait: int) -> Any:
        """:meth:`next` holding ``turn``; ``wait`` 0 never blocks."""
        lib = _ffi.load()
        item = _ffi.mf_buffer()
        end = ctypes.c_bool(False)
        with self.mu:
            if self.ptr is None or self.closing:
                self._free()
                return _END
            ptr = self.ptr
            self.in_next = True
        over = True
        try:
            while True:
                status = lib.mf_stream_next(ptr, wait, ctypes.byref(item), ctypes.byref(end))
                if status == Status.OK:
                    if end.value:
                        return _END
                    try:
                        data = ctypes.string_at(item.data, item.len) if item.len else b""
                    finally:
                        lib.mf_buffer_free(item)
                    ok, value = _decoded(data)
                    if not ok:
                        raise value
                    over = False
                    return value
                if status == Status.ERR_TIMEOUT and not end.value:
                    if wait == 0:
                        over = False
                        return _NOT_YET
                    continue  # one slice of the main thread's wait passed
                raise error_for(status, _ffi.last_error())
        finally:
            with self.mu:
                self.in_next = False
                if over or self.closing:
                    self._free()

    def close(self) -> None:
        """Any thread: closes now, or cancels a wait in progress whose thread then closes."""
        with self.mu:
            self.closing = True
            if self.ptr is None:
                return
            if self.in_next:
                if _ffi._lib is not None:
                    _ffi._lib.mf_stream_cancel(self.ptr)
            else:
                self._free()

    def _free(self) -> None:
        """Under ``mu``, with no thread in ``mf_stream_next``: ``mf_stream_close``
        (cancels an unfinished stream's call)."""
        ptr, self.ptr = self.ptr, None
        if ptr is not None and _ffi._lib is not None:
            _ffi._lib.mf_stream_close(ptr)


class Stream:
    """The items of one streamed call, in order: ``for x in worker.sync.stream.count(5)``.

    The iteration ends when the worker's generator ends; an error in the
    worker (or a timeout, or the worker exiting) is raised after the items
    sent before it. Leaving the loop early (``break``, an exception,
    dropping the iterator) or :meth:`close` closes the stream, and the
    worker's generator is closed (``GeneratorExit`` at its ``yield``).
    Blocks the calling thread; one thread at a time iterates it. A
    :meth:`close` from another thread ends a wait for an item at once:
    that ``next`` raises :class:`CancelledCallError`. On the main thread
    Ctrl-C interrupts the wait (``KeyboardInterrupt``) and closes the stream.
    """

    def __init__(self, state: _StreamState, function: str) -> None:
        self._state = state
        self._function = function
        # Dropped unfinished (a `break` out of `for`): closes the stream.
        self._finalizer = weakref.finalize(self, state.close)

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Any:
        try:
            value = self._state.next()
        except BaseException:
            self._state.close()  # Ctrl-C on the main thread: the caller gave up
            raise
        if value is _END:
            raise StopIteration
        return value

    def close(self) -> None:
        """Closes the stream (cancels the call if unfinished); idempotent."""
        self._finalizer()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Stream {self._function!r} {'closed' if self._state.ptr is None else 'open'}>"


# How many buffered items AsyncStream.__anext__ takes in a row before it lets
# the event loop run other tasks once.
_FAST_RUN = 64


class AsyncStream:
    """:class:`Stream` for asyncio: ``async for x in worker.astream.count(5)``.

    Each item is awaited without blocking the event loop: an item the
    library has already received is taken on the loop's thread (a
    ``mf_stream_next`` that does not wait); only when none has come yet
    does the blocking ``mf_stream_next`` run in the loop's default executor.
    After ``_FAST_RUN`` items in a row taken without a wait, ``__anext__``
    lets the loop run once, so a stream that never runs dry does not starve
    other tasks. The stream is opened at the first ``__anext__`` (on the
    executor). Cancelling the task that iterates it, ``break``, an
    exception, dropping the iterator or :meth:`aclose` closes the stream and
    the worker's generator, at once also while an executor thread waits for
    an item (``mf_stream_cancel`` ends that wait, and the thread then frees
    the stream).
    """

    def __init__(
        self, conn: _Connection, function: str, args: bytes, timeout_ms: int, namespace: Optional[str]
    ) -> None:
        self._conn = conn
        self._function = function
        self._args: Optional[bytes] = args
        self._timeout_ms = timeout_ms
        self._namespace = namespace
        self._state: Optional[_StreamState] = None
        self._closed = False
        self._finalizer: Optional[weakref.finalize] = None
        self._fast_run = 0  # items taken on the loop's thread since it last ran other tasks

    def _open_and_next(self) -> Any:
        """On an executor thread: opens the stream on first use, then waits for an item."""
        if self._state is None:
            if self._closed:
                return _END
            args, self._args = self._args, None
            assert args is not None
            if self._namespace is not None:
                self._conn.ensure_namespace(self._namespace)
            self._state = self._conn.open_stream(self._function, args, self._timeout_ms, self._namespace)
            self._finalizer = weakref.finalize(self, self._state.close)
            if self._closed:
                self._state.close()
        return self._state.next()

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Any:
        try:
            value = _NOT_YET
            if self._state is not None:
                if self._fast_run >= _FAST_RUN:
                    self._fast_run = 0
                    await asyncio.sleep(0)
                value = self._state.next(block=False)
            if value is _NOT_YET:
                self._fast_run = 0
                value = await asyncio.get_running_loop().run_in_executor(None, self._open_and_next)
            else:
                self._fast_run += 1
        except BaseException:
            # Cancelled while the executor thread waits: the close cancels
            # the stream, whose wait ends at once; that thread frees it.
            self._close()
            raise
        if value is _END:
            raise StopAsyncIteration
        return value

    def _close(self) -> None:
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()

    async def aclose(self) -> None:
        """Closes the stream (cancels the call if unfinished); idempotent, never blocks."""
        self._close()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._close()

    def __repr__(self) -> str:
        return f"<AsyncStream {self._function!r}>"


class _RemoteFunction:
    """``proxy.name``: calling it calls the remote function ``name``."""

    __slots__ = ("_call", "_name")

    def __init__(self, call: Callable[..., Any], name: str) -> None:
        self._call = call
        self._name = name

    def __call__(self, *args: Any) -> Any:
        return self._call(self._name, *args)

    def __repr__(self) -> str:
        return f"<remote function {self._name!r}>"


class _CallProxyBase:
    __slots__ = ("_worker", "_timeout", "_namespace")

    def __init__(
        self, worker: "ParentWorker", timeout: Optional[float] = None, namespace: Optional[str] = None
    ) -> None:
        self._worker = worker
        self._timeout = timeout
        self._namespace = namespace

    def __getattr__(self, name: str) -> _RemoteFunction:
        # Dunder lookups (copy, pickle, inspect, await) are not remote functions.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _RemoteFunction(self._invoke, name)

    def _invoke(self, name: str, *args: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _with(self, timeout: Optional[float], namespace: Optional[str]) -> Any:
        """A proxy of the same kind; each option not given keeps this one's."""
        return type(self)(
            self._worker,
            timeout if timeout is not None else self._timeout,
            namespace if namespace is not None else self._namespace,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} timeout={self._timeout} namespace={self._namespace}>"


class AsyncCallProxy(_CallProxyBase):
    """``worker.acall``: ``await worker.acall.name(*args)`` calls ``name`` in the worker.

    Attribute access gives a remote function; calling it returns a coroutine.
    Names starting with ``_`` are sent too and refused by the worker
    (``RemoteCallError: Cannot call private method ...``).
    """

    __slots__ = ()

    def with_options(self, *, timeout: Optional[float] = None, namespace: Optional[str] = None) -> "AsyncCallProxy":
        """A proxy whose calls use these options.

        Args:
            timeout: Seconds for each call (None: the worker's default; ``math.inf``: no limit).
            namespace: The namespace the calls are sent in. A namespace other
                than the worker's own needs a connect-mode worker (a second
                connection is opened for it on first use).

        Returns:
            A new proxy; this one is unchanged.
        """
        return self._with(timeout, namespace)

    def _invoke(self, name: str, *args: Any) -> Awaitable[Any]:
        return self._worker.call_function(name, *args, timeout=self._timeout, namespace=self._namespace)


class SyncCallProxy(_CallProxyBase):
    """``worker.sync.call``: ``worker.sync.call.name(*args)`` calls ``name`` and blocks."""

    __slots__ = ()

    def with_options(self, *, timeout: Optional[float] = None, namespace: Optional[str] = None) -> "SyncCallProxy":
        """A proxy whose calls use these options (see :meth:`AsyncCallProxy.with_options`)."""
        return self._with(timeout, namespace)

    def _invoke(self, name: str, *args: Any) -> Any:
        return self._worker.sync.call_function(name, *args, timeout=self._timeout, namespace=self._namespace)


class AsyncStreamProxy(_CallProxyBase):
    """``worker.astream``: ``async for x in worker.astream.name(*args)`` streams ``name``'s items."""

    __slots__ = ()

    def with_options(self, *, timeout: Optional[float] = None, namespace: Optional[str] = None) -> "AsyncStreamProxy":
        """A proxy whose streams use these options (see :meth:`AsyncCallProxy.with_options`).

        The timeout limits the wait for the first item and then between items.
        """
        return self._with(timeout, namespace)

    def _invoke(self, name: str, *args: Any) -> AsyncStream:
        return self._worker.stream_function(name, *args, timeout=self._timeout, namespace=self._namespace)


class SyncStreamProxy(_CallProxyBase):
    """``worker.sync.stream``: ``for x in worker.sync.stream.name(*args)`` streams ``name``'s items."""

    __slots__ = ()

    def with_options(self, *, timeout: Optional[float] = None, namespace: Optional[str] = None) -> "SyncStreamProxy":
        """A proxy whose streams use these options (see :meth:`AsyncStreamProxy.with_options`)."""
        return self._with(timeout, namespace)

    def _invoke(self, name: str, *args: Any) -> Stream:
        return self._worker.sync.stream_function(name, *args, timeout=self._timeout, namespace=self._namespace)


class SyncHandle:
    """``worker.sync``: the blocking face of a :class:`ParentWorker`.

    Safe to use from any thread, any number at once.
    """

    __slots__ = ("_worker",)

    def __init__(self, worker: "ParentWorker") -> None:
        self._worker = worker

    def start(self) -> "ParentWorker":
        """Spawns or connects, returning once the worker has answered (a no-op if started).

        Returns:
            The worker, for chaining.

        Raises:
            WorkerExitedError: The worker exited before answering (exit status
                and last stderr lines in the message).
            CallTimeoutError: No answer within the start-up / connect timeout.
            ServiceNotFoundError: Connect mode: no live service with that id.
            MultifrostIOError: The program could not be started.
            ClosedError: The worker was already closed.
        """
        self._worker._conn.open()
        return self._worker

    def close(self) -> None:
        """Stops the worker (see :meth:`ParentWorker.close`); blocking, idempotent."""
        self._worker._close_now()

    @property
    def call(self) -> SyncCallProxy:
        """The blocking call proxy: ``worker.sync.call.add(1, 2)``."""
        return SyncCallProxy(self._worker)

    @property
    def stream(self) -> SyncStreamProxy:
        """The blocking stream proxy: ``for x in worker.sync.stream.count(5)``."""
        return SyncStreamProxy(self._worker)

    def stream_function(
        self, function: str, *args: Any, timeout: Optional[float] = None, namespace: Optional[str] = None
    ) -> Stream:
        """Calls ``function(*args)`` as a stream: its items, as the worker's generator yields them.

        Arguments as for :meth:`call_function`; ``timeout`` limits the wait
        for the first item and then between items. At most the parent's
        stream window (16 items, more when they are small) is sent ahead
        of those taken; the worker's generator waits for the rest.

        Returns:
            The :class:`Stream` (an iterator; also a context manager that closes it).

        Raises:
            CircuitOpenError, ClosedError, TypeError: The stream was not started.
            Iterating raises the call's errors as :meth:`call_function` does,
            after the items sent before them.
        """
        conn = self._worker._conn
        payload = _values.pack_args(args)
        timeout_ms = _call_timeout_ms(timeout)
        if namespace is not None:
            conn.ensure_namespace(namespace)
        return Stream(conn.open_stream(function, payload, timeout_ms, namespace), function)

    def start_call(
        self, function: str, *args: Any, timeout: Optional[float] = None, namespace: Optional[str] = None
    ) -> PendingCall:
        """Starts ``function(*args)`` without waiting, as a call another thread can cancel.

        Arguments as for :meth:`call_function`. Example::

            pending = worker.sync.start_call("render", scene)
            stop_button.on_click(pending.cancel)      # any thread
            image = pending.result()                  # CancelledCallError if stopped

        Returns:
            The :class:`PendingCall`.

        Raises:
            CircuitOpenError, ClosedError, TypeError: The call was not started.
        """
        conn = self._worker._conn
        payload = _values.pack_args(args)
        timeout_ms = _call_timeout_ms(timeout)
        if namespace is not None:
            conn.ensure_namespace(namespace)
        return conn.start_call(function, payload, timeout_ms, namespace)

    def call_function(
        self, function: str, *args: Any, timeout: Optional[float] = None, namespace: Optional[str] = None
    ) -> Any:
        """Calls ``function(*args)`` in the worker and blocks until the result.

        Args:
            function: The remote function's name.
            *args: Positional arguments (msgpack-encodable values).
            timeout: Seconds (None: the worker's default; ``math.inf``: no limit).
            namespace: See :meth:`AsyncCallProxy.with_options`.

        Returns:
            The decoded result.

        Raises:
            RemoteCallError: The function raised; the message is the worker's text.
            NoSuchFunctionError: The worker has no such function (a RemoteCallError).
            CallTimeoutError: No result in time (a ``TimeoutError``); the
                call is cancelled in the worker too.
            CircuitOpenError: The breaker is open; the call was not sent.
            WorkerExitedError: The worker exited during the call.
            ClosedError: The worker is not started or was closed.
            TypeError: An argument has no msgpack form.
        """
        conn = self._worker._conn
        payload = _values.pack_args(args)
        timeout_ms = _call_timeout_ms(timeout)
        if namespace is not None:
            conn.ensure_namespace(namespace)
        return conn.call(function, payload, timeout_ms, namespace)


class ParentWorker:
    """A worker process (spawned) or service (connected) whose functions you call.

    Create one with :meth:`spawn` or :meth:`connect`; start it with
    ``async with``, ``await worker.start()`` or ``worker.sync.start()``; call
    with ``await worker.acall.name(...)`` or ``worker.sync.call.name(...)``;
    end it with ``close()``. Thread-safe: any thread may call at once.

    A spawned worker is stopped (``shutdown``, then SIGTERM, then SIGKILL after
    the grace period) and reaped by ``close()``, and also when the object is
    collected or the interpreter exits.
    """

    def __init__(self, plan: _Plan) -> None:
        """Use :meth:`spawn` or :meth:`connect` instead."""
        self._plan = plan
        self._conn = _Connection(plan)
        self._finalizer = weakref.finalize(self, _close_forgotten, self._conn)
        self._sync = SyncHandle(self)
        self._acall = AsyncCallProxy(self)

    # -- construction -----------------------------------------------------

    @classmethod
    def spawn(
        cls,
        script_path: PathLike,
        executable: str = sys.executable,
        auto_restart: bool = False,
        max_restart_attempts: int = 5,
        default_timeout: Optional[float] = None,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 3.0,
        heartbeat_max_misses: int = 3,
        *,
        args: Sequence[str] = (),
        namespace: Optional[str] = None,
        name: Optional[str] = None,
        breaker_threshold: Optional[int] = None,
        breaker_cooldown: Optional[float] = None,
        breaker_counts_remote_errors: bool = False,
        start_timeout: Optional[float] = None,
        shutdown_grace: Optional[float] = None,
        cancel_grace: Optional[float] = None,
        private_link: bool = True,
        stream_credit: Optional[int] = None,
        workers: Optional[int] = None,
        max_calls_per_worker: Optional[int] = None,
    ) -> "ParentWorker":
        """A worker to be started from ``script_path`` (not started yet).

        A ``.py`` file or a file that is not executable is a script, run as
        ``executable script_path --worker``; anything else is a program, run
        directly (a program that does not exist fails to start with
        :class:`MultifrostIOError`, as in every binding).

        Args:
            script_path: The worker script or program.
            executable: The interpreter for scripts (default: this Python).
            auto_restart: Restart the worker when it exits.
            max_restart_attempts: How many restarts at most (with back-off).
            default_timeout: Seconds for calls that give no timeout (None: the
                library's default, 30 s).
            heartbeat_interval: Seconds between heartbeats (0: off).
            heartbeat_timeout: Seconds to wait for each heartbeat's echo.
            heartbeat_max_misses: Misses in a row that mark the worker unhealthy
                and count as one breaker failure.
            args: Extra arguments for the program (after ``--worker`` for a script).
            namespace: The namespace calls are sent in (default ``"default"``).
            name: The worker's name in logs (default: the file name).
            breaker_threshold: Consecutive failures that open the breaker (default 5).
            breaker_cooldown: Seconds before a half-open probe (default 5).
            breaker_counts_remote_errors: Count the function's own errors as failures.
            start_timeout: Seconds to wait for the worker's first answer (default 10).
            shutdown_grace: Seconds between SIGTERM and SIGKILL on close (default 2).
            cancel_grace: Seconds the handler of a cancelled or timed-out call
                may run on before the worker is stopped (and restarted with
                ``auto_restart``); its other calls then fail with
                :class:`WorkerExitedError`. Default 2; 0: never stop it.
            private_link: Offer the worker the private link (default on); off
                makes a worker of this library use the protocol's TCP
                connection like any other worker.
            stream_credit: How many items of a stream the worker may send
                ahead of those taken (default 16); its generator waits for the rest.
            workers: How many copies of the program to run (default 1, at
                most 256): a pool behind this one handle. ``start`` returns
                once every copy answered; each call goes to the copy with the
                fewest calls in flight; each copy is supervised on its own (a
                crash fails only the calls that were in it, ``auto_restart``
                restarts it); the breaker judges the pool as a whole.
                ``metrics["workers"]`` has one entry per copy.
            max_calls_per_worker: Replace a copy after this many calls
                (default 0 = never): it takes no new call, finishes the ones
                it has, and is stopped and started again; no call fails for it.

        Returns:
            The (not yet started) worker.
        """
        path = os.fspath(script_path)
        if _is_program(path):
            program = path if os.sep in path or not os.path.isfile(path) else os.path.join(os.curdir, path)
            argv = [str(a) for a in args]
        else:
            program = executable
            argv = [path, "--worker", *[str(a) for a in args]]
        plan = _Plan(
            program=program,
            args=argv,
            name=name or os.path.basename(path),
            namespace=namespace,
            default_timeout=default_timeout,
            heartbeat=(heartbeat_interval, heartbeat_timeout, heartbeat_max_misses),
            breaker=_breaker(breaker_threshold, breaker_cooldown),
            breaker_counts_remote_errors=breaker_counts_remote_errors,
            auto_restart=max_restart_attempts if auto_restart else 0,
            start_timeout=start_timeout,
            shutdown_grace=shutdown_grace,
            cancel_grace=cancel_grace,
            private_link=private_link,
            stream_credit=stream_credit,
            workers=workers,
            max_calls_per_worker=max_calls_per_worker,
        )
        return cls(plan)

    @classmethod
    def _connect_plan(
        cls,
        service_id: str,
        timeout: Optional[float],
        default_timeout: Optional[float],
        heartbeat_interval: float,
        heartbeat_timeout: float,
        heartbeat_max_misses: int,
        namespace: Optional[str],
        breaker_threshold: Optional[int],
        breaker_cooldown: Optional[float],
        breaker_counts_remote_errors: bool,
    ) -> _Plan:
        return _Plan(
            target=service_id,
            namespace=namespace,
            default_timeout=default_timeout,
            heartbeat=(heartbeat_interval, heartbeat_timeout, heartbeat_max_misses),
            breaker=_breaker(breaker_threshold, breaker_cooldown),
            breaker_counts_remote_errors=breaker_counts_remote_errors,
            connect_timeout=timeout,
        )

    @classmethod
    async def connect(
        cls,
        service_id: str,
        timeout: float = 5.0,
        *,
        default_timeout: Optional[float] = None,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 3.0,
        heartbeat_max_misses: int = 3,
        namespace: Optional[str] = None,
        breaker_threshold: Optional[int] = None,
        breaker_cooldown: Optional[float] = None,
        breaker_counts_remote_errors: bool = False,
    ) -> "ParentWorker":
        """Connects to a running worker, by service id or ``tcp://host:port``.

        The service is looked up in ``$HOME/.multifrost/services.json`` until
        ``timeout``; the returned worker is already started (``async with``
        on it just closes it at the end).

        Args:
            service_id: The service id, or an endpoint ``tcp://host:port``.
            timeout: Seconds to wait for the service and its first answer.
            default_timeout: As for :meth:`spawn`.
            heartbeat_interval: As for :meth:`spawn`.
            heartbeat_timeout: As for :meth:`spawn`.
            heartbeat_max_misses: As for :meth:`spawn`.
            namespace: As for :meth:`spawn`.
            breaker_threshold: As for :meth:`spawn`.
            breaker_cooldown: As for :meth:`spawn`.
            breaker_counts_remote_errors: As for :meth:`spawn`.

        Returns:
            The connected worker.

        Raises:
            ServiceNotFoundError: No live entry for the id within the timeout.
            CallTimeoutError: The service did not answer in time.
        """
        worker = cls(
            cls._connect_plan(
                service_id,
                timeout,
                default_timeout,
                heartbeat_interval,
                heartbeat_timeout,
                heartbeat_max_misses,
                namespace,
                breaker_threshold,
                breaker_cooldown,
                breaker_counts_remote_errors,
            )
        )
        await worker.start()
        return worker

    @classmethod
    def connect_sync(
        cls,
        service_id: str,
        timeout: float = 5.0,
        *,
        default_timeout: Optional[float] = None,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 3.0,
        heartbeat_max_misses: int = 3,
        namespace: Optional[str] = None,
        breaker_threshold: Optional[int] = None,
        breaker_cooldown: Optional[float] = None,
        breaker_counts_remote_errors: bool = False,
    ) -> "ParentWorker":
        """:meth:`connect` for code without an event loop (blocks; arguments alike)."""
        worker = cls(
            cls._connect_plan(
                service_id,
                timeout,
                default_timeout,
                heartbeat_interval,
                heartbeat_timeout,
                heartbeat_max_misses,
                namespace,
                breaker_threshold,
                breaker_cooldown,
                breaker_counts_remote_errors,
            )
        )
        worker.sync.start()
        return worker

    # -- life cycle -------------------------------------------------------

    async def start(self) -> "ParentWorker":
        """Spawns or connects without blocking the event loop (a no-op if started).

        Returns:
            The worker, for chaining.

        Raises:
            See :meth:`SyncHandle.start`.
        """
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._conn.open)
        return self

    async def close(self) -> None:
        """Stops the worker without blocking the event loop; idempotent.

        Calls in flight end with :class:`ClosedError`; a spawned worker is sent
        ``shutdown`` and SIGTERM, killed after the grace period, and reaped.
        """
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._close_now)

    def _close_now(self) -> None:
        self._finalizer.detach()
        self._conn.close()

    async def __aenter__(self) -> "ParentWorker":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __enter__(self) -> "ParentWorker":
        return self.sync.start()

    def __exit__(self, *exc: Any) -> None:
        self._close_now()

    # -- calls ------------------------------------------------------------

    @property
    def acall(self) -> AsyncCallProxy:
        """The async call proxy: ``await worker.acall.add(1, 2)``."""
        return self._acall

    @property
    def astream(self) -> AsyncStreamProxy:
        """The async stream proxy: ``async for x in worker.astream.count(5)``."""
        return AsyncStreamProxy(self)

    def stream_function(
        self, function: str, *args: Any, timeout: Optional[float] = None, namespace: Optional[str] = None
    ) -> AsyncStream:
        """Calls ``function(*args)`` as a stream, for ``async for`` (see :meth:`SyncHandle.stream_function`).

        The stream is opened at the first item asked for; errors (including
        :class:`ClosedError` for a worker not started) are raised there.

        Raises:
            TypeError: An argument has no msgpack form.
        """
        payload = _values.pack_args(args)
        return AsyncStream(self._conn, function, payload, _call_timeout_ms(timeout), namespace)

    @property
    def sync(self) -> SyncHandle:
        """The blocking face: ``worker.sync.start()``, ``worker.sync.call.add(1, 2)``, ``worker.sync.close()``."""
        return self._sync

    async def call_function(
        self, function: str, *args: Any, timeout: Optional[float] = None, namespace: Optional[str] = None
    ) -> Any:
        """Calls ``function(*args)`` in the worker; awaiting never blocks the loop.

        Cancelling the awaiting task (``task.cancel()``, ``asyncio.wait_for``
        running out) cancels the call in the worker too: a handler that
        watches for it stops (see :class:`ChildWorker`). The task gets
        ``asyncio.CancelledError`` as usual.

        Args:
            function: The remote function's name.
            *args: Positional arguments (msgpack-encodable values).
            timeout: Seconds (None: the worker's default; ``math.inf``: no limit).
            namespace: See :meth:`AsyncCallProxy.with_options`.

        Returns:
            The decoded result.

        Raises:
            RemoteCallError: The function raised; the message is the worker's text.
            NoSuchFunctionError: The worker has no such function (a RemoteCallError).
            CallTimeoutError: No result in time (a ``TimeoutError``).
            CircuitOpenError: The breaker is open; the call was not sent.
            WorkerExitedError: The worker exited during the call.
            ClosedError: The worker is not started or was closed.
            TypeError: An argument has no msgpack form.
        """
        payload = _values.pack_args(args)
        timeout_ms = _call_timeout_ms(timeout)
        loop = asyncio.get_running_loop()
        if not self._conn.has_namespace(namespace):
            assert namespace is not None
            await loop.run_in_executor(None, self._conn.ensure_namespace, namespace)
        fut = loop.create_future()
        self._conn.begin(function, payload, timeout_ms, namespace, (loop, fut))
        return await fut

    # -- state --------------------------------------------------------------

    @property
    def metrics(self) -> Dict[str, Any]:
        """A snapshot of the library's metrics (``mf_parent_stats_json``), or ``{}`` before start.

        Keys include ``requests_total``, ``requests_success``, ``requests_failed``,
        ``remote_errors``, ``timeouts``, ``in_flight``, ``latency_p50_ms`` /
        ``_p95_ms`` / ``_p99_ms``, ``heartbeat_rtt_last_ms``, ``healthy``,
        ``circuit_state``, ``circuit_trips``, ``restarts``, ``cancels`` (calls
        cancelled in flight), ``escalations`` (workers stopped for a handler
        that ran past the cancel grace), ``hangs`` (workers stopped for missed
        heartbeats), ``recycles`` (workers replaced after
        ``max_calls_per_worker`` calls), ``worker_pid`` (the first worker's)
        and ``transport`` (``"link"`` over the private link, else ``"zmq"``);
        of a pool (``workers=``) the counters are totals over its workers.
        ``workers`` is a list with one dict per worker: ``pid``,
        ``in_flight``, ``requests_total``, ``restarts``, ``recycles``,
        ``healthy`` and ``heartbeat_rtt_last_ms``.
        """
        return self._conn.stats() or {}

    @property
    def is_healthy(self) -> bool:
        """True while started, answering heartbeats and not known to have exited."""
        return bool(self.metrics.get("healthy", False))

    @property
    def circuit_state(self) -> Optional[str]:
        """``"closed"``, ``"open"`` or ``"half_open"`` (None before start)."""
        return self.metrics.get("circuit_state")

    @property
    def circuit_open(self) -> bool:
        """True while the breaker refuses calls (open, or half-open waiting for its probe)."""
        state = self.circuit_state
        return state is not None and state != "closed"

    @property
    def last_heartbeat_rtt_ms(self) -> Optional[float]:
        """The last heartbeat round trip in milliseconds (None before the first)."""
        value = self.metrics.get("heartbeat_rtt_last_ms")
        return float(value) if value else None

    @property
    def pid(self) -> Optional[int]:
        """The spawned worker's process id, of a pool the first one's (None in connect mode or before start)."""
        return self.metrics.get("worker_pid") or None

    @property
    def name(self) -> str:
        """The worker's name in logs (spawn mode) or its service id / endpoint (connect mode)."""
        return self._plan.name or self._plan.target or ""

    @property
    def is_started(self) -> bool:
        """True between a successful start and close."""
        return self._conn.handle is not None

    def __repr__(self) -> str:
        state = "closed" if self._conn.closed else "started" if self.is_started else "new"
        return f"<ParentWorker {self.name!r} {state}>"


def _close_forgotten(conn: _Connection) -> None:
    """Closes the handles of a ParentWorker that was collected (or alive at exit) unclosed."""
    if isinstance(threading.current_thread(), threading._DummyThread):
        # Collected inside a library callback (a foreign thread): closing from
        # there is forbidden by the C API, so do it on a thread of our own.
        threading.Thread(target=conn.close, name="multifrost-close", daemon=True).start()
    else:
        conn.close()


def _breaker(threshold: Optional[int], cooldown: Optional[float]) -> Optional[Tuple[int, float]]:
    if threshold is None and cooldown is None:
        return None
    return (5 if threshold is None else threshold, 5.0 if cooldown is None else cooldown)


def _is_program(path: str) -> bool:
    """True for a compiled program to run directly; False for a script to run with an interpreter."""
    if path.endswith(".py"):
        return False
    if os.path.isfile(path):
        return os.access(path, os.X_OK)
    # A script is a file. Nothing here and no .py: a program, found in PATH
    # or missing, and then the library says so (MultifrostIOError, as in
    # every binding) rather than an interpreter that exits at once.
    return os.sep in path or shutil.which(path) is not None or not os.path.exists(path)
