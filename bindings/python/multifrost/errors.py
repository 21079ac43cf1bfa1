"""Exceptions raised by the binding, one per library status.

Every exception the library causes derives from :class:`MultifrostError`, which
carries the C status as ``.status``. Where a builtin exception fits, the class
derives from it too, so ordinary ``except`` clauses work: a call that runs out
of time raises :class:`CallTimeoutError`, which *is* a builtin ``TimeoutError``.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

from ._ffi import LibraryNotFoundError, Status

__all__ = [
    "MultifrostError",
    "InvalidArgumentError",
    "CallTimeoutError",
    "RemoteCallError",
    "CircuitOpenError",
    "WorkerExitedError",
    "ServiceNotFoundError",
    "AlreadyRunningError",
    "ProtocolError",
    "MultifrostIOError",
    "ClosedError",
    "InternalError",
    "CancelledCallError",
    "NoSuchFunctionError",
    "LibraryNotFoundError",
    "error_for",
]


class MultifrostError(Exception):
    """Base of every error reported by libmultifrost.

    Attributes:
        status: The library status (a :class:`multifrost.Status`).
        message: The library's text for the failure.
    """

    status: Status = Status.ERR_PANIC

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(MultifrostError, ValueError):
    """A bad argument: bad option value, bad UTF-8, invalid msgpack, and so on."""

    status = Status.ERR_INVALID_ARGUMENT


class CallTimeoutError(MultifrostError, TimeoutError):
    """A call (or the start-up / connect wait) ran out of time.

    It is a builtin ``TimeoutError``, so ``except TimeoutError`` catches it.
    """

    status = Status.ERR_TIMEOUT


class RemoteCallError(MultifrostError):
    """The worker's function failed; the message is the worker's text.

    Python workers (and the C example worker) send ``"<ExceptionType>: <message>"``.

    Attributes:
        remote_type: The part before the first ``": "`` when it looks like an
            exception name (e.g. ``"ValueError"``), else None.
        remote_message: The rest of the text.
    """

    status = Status.ERR_REMOTE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        first_line = message.split("\n", 1)[0]
        kind, sep, rest = first_line.partition(": ")
        if sep and kind and kind.replace(".", "").replace("_", "").isalnum() and " " not in kind:
            self.remote_type: Optional[str] = kind
            self.remote_message = message[len(kind) + 2 :]
        else:
            self.remote_type = None
            self.remote_message = message


class NoSuchFunctionError(RemoteCallError):
    """The worker has no function of that name (``"Function 'name' not found"``).

    A :class:`RemoteCallError`: the worker answered the call with a failure,
    so ``except RemoteCallError`` still catches it, as it did before this
    status had a class of its own.
    """

    status = Status.ERR_NO_SUCH_FUNCTION


class CircuitOpenError(MultifrostError):
    """The circuit breaker is open: the call was refused without being sent."""

    status = Status.ERR_CIRCUIT_OPEN


class WorkerExitedError(MultifrostError):
    """The spawned worker exited; the message has its exit code or signal."""

    status = Status.ERR_WORKER_EXITED


class ServiceNotFoundError(MultifrostError, LookupError):
    """No live service with that id is in the registry."""

    status = Status.ERR_NOT_FOUND


class AlreadyRunningError(MultifrostError):
    """A worker with this service id is already running."""

    status = Status.ERR_ALREADY_RUNNING


class ProtocolError(MultifrostError):
    """The peer sent something that is not valid protocol (or undecodable msgpack)."""

    status = Status.ERR_PROTOCOL


class MultifrostIOError(MultifrostError, OSError):
    """An operating-system or socket failure, e.g. a program that cannot be started."""

    status = Status.ERR_IO


class ClosedError(MultifrostError):
    """The worker handle was closed (or was never started)."""

    status = Status.ERR_CLOSED


class InternalError(MultifrostError):
    """An internal library error was caught at the C boundary."""

    status = Status.ERR_PANIC


class CancelledCallError(MultifrostError):
    """The call was cancelled before it ended (``mf_cancel``).

    Seen by whoever waits for a call that something else cancelled: e.g.
    :meth:`PendingCall.result` after another thread's
    :meth:`PendingCall.cancel`. A coroutine whose own task is cancelled
    (``task.cancel()``, ``asyncio.wait_for`` running out) gets asyncio's
    ``CancelledError`` as usual, never this: the remote call is cancelled
    for it behind the scenes. Deliberately *not* an
    ``asyncio.CancelledError``, which asyncio reserves for the cancellation
    of the task that catches it.
    """

    status = Status.ERR_CANCELLED


_BY_STATUS: Dict[int, Type[MultifrostError]] = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        CallTimeoutError,
        RemoteCallError,
        CircuitOpenError,
        WorkerExitedError,
        ServiceNotFoundError,
        AlreadyRunningError,
        ProtocolError,
        MultifrostIOError,
        ClosedError,
        InternalError,
        CancelledCallError,
        NoSuchFunctionError,
    )
}


def error_for(status: int, message: str) -> MultifrostError:
    """The exception for a failed status.

    Args:
        status: A non-OK ``mf_status`` value.
        message: The library's text for it.

    Returns:
        An instance of the matching subclass (``MultifrostError`` for a status
        this binding does not know), with ``.status`` set.
    """
    cls = _BY_STATUS.get(status, MultifrostError)
    err = cls(message or f"libmultifrost status {status}")
    try:
        err.status = Status(status)
    except ValueError:
        err.status = status  # type: ignore[assignment]
    return err
