"""multifrost: call functions in worker processes as if they were local.

Python binding of libmultifrost (a Rust core with a C API), speaking the
``comlink_ipc_v4`` protocol, so Python parents and workers interoperate with
workers and parents written in C, C++, Go, Node or other implementations.

Example::

    from multifrost import ParentWorker

    async with ParentWorker.spawn("worker.py") as worker:
        print(await worker.acall.factorial(10))

See :class:`ParentWorker` (the calling side) and :class:`ChildWorker` (the
serving side). The shared library is found through ``MULTIFROST_LIB``, the
copy inside this package, or the repository build; see :mod:`multifrost._ffi`.
"""

from __future__ import annotations

from ._ffi import LibraryNotFoundError, Status
from .child import ChildWorker
from .errors import (
    AlreadyRunningError,
    CallTimeoutError,
    CancelledCallError,
    CircuitOpenError,
    ClosedError,
    InternalError,
    InvalidArgumentError,
    MultifrostError,
    MultifrostIOError,
    NoSuchFunctionError,
    ProtocolError,
    RemoteCallError,
    ServiceNotFoundError,
    WorkerExitedError,
)
from .parent import (
    AsyncCallProxy,
    AsyncStream,
    AsyncStreamProxy,
    ParentWorker,
    PendingCall,
    Stream,
    SyncCallProxy,
    SyncHandle,
    SyncStreamProxy,
)

__version__ = "0.1.0"

__all__ = [
    "ParentWorker",
    "ChildWorker",
    "AsyncCallProxy",
    "SyncCallProxy",
    "SyncHandle",
    "PendingCall",
    "AsyncStreamProxy",
    "SyncStreamProxy",
    "Stream",
    "AsyncStream",
    "Status",
    "MultifrostError",
    "RemoteCallError",
    "CircuitOpenError",
    "CallTimeoutError",
    "WorkerExitedError",
    "ServiceNotFoundError",
    "AlreadyRunningError",
    "InvalidArgumentError",
    "ProtocolError",
    "MultifrostIOError",
    "ClosedError",
    "InternalError",
    "CancelledCallError",
    "NoSuchFunctionError",
    "LibraryNotFoundError",
    "library_version",
    "library_path",
]


def library_version() -> str:
    """The loaded libmultifrost's version, e.g. ``"0.1.0"``.

    Raises:
        LibraryNotFoundError: The library could not be found (the message
            names ``MULTIFROST_LIB`` and every place looked in).
    """
    from . import _ffi

    return str(_ffi.load().mf_version().decode())


def library_path() -> str:
    """The path libmultifrost was loaded from (loading it if needed)."""
    from . import _ffi

    return str(_ffi.library_path())
