"""The C API of libmultifrost as ctypes declarations (the only module that has them).

The library is loaded on first use, not at import, so ``import multifrost``
works (and its docs can be read) on a machine without the library. It is
looked for in this order:

1. the path in the ``MULTIFROST_LIB`` environment variable (when set, only there);
2. the copy inside the package, ``multifrost/lib/libmultifrost.so``;
3. the repository build, ``<repo>/target/release/libmultifrost.so``, found
   relative to this file when the package is used from its source folder;
4. the installed library, ``libmultifrost.so.0``, wherever the dynamic loader
   finds it (``make install`` into ``/usr/local``, then ``ldconfig``).

Every function of ``include/multifrost.h`` that the binding uses is declared
here with its exact argument and result types; ctypes releases the GIL
during each foreign call, so a call that blocks (``mf_spawn``,
``mf_queue_next``, ``mf_worker_next``, ``mf_stream_next``, ``mf_reply_yield``,
``mf_parent_close``) never stalls other
Python threads.
"""

from __future__ import annotations

import ctypes
import enum
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, List, Optional

LIBRARY_FILE = "libmultifrost.so"
ENV_VAR = "MULTIFROST_LIB"
# The installed library's SONAME, looked up by the dynamic loader itself.
SYSTEM_LIBRARY = Path("libmultifrost.so.0")


class Status(enum.IntEnum):
    """``mf_status``: the result of every fallible C call (values never change)."""

    OK = 0
    ERR_INVALID_ARGUMENT = 1
    ERR_TIMEOUT = 2
    ERR_REMOTE = 3
    ERR_CIRCUIT_OPEN = 4
    ERR_WORKER_EXITED = 5
    ERR_NOT_FOUND = 6
    ERR_ALREADY_RUNNING = 7
    ERR_PROTOCOL = 8
    ERR_IO = 9
    ERR_CLOSED = 10
    ERR_PANIC = 11
    ERR_CANCELLED = 12
    ERR_NO_SUCH_FUNCTION = 13


# Opaque handles are plain void pointers on the Python side.
mf_parent_p = c_void_p
mf_worker_p = c_void_p
mf_options_p = c_void_p
mf_queue_p = c_void_p
mf_reply_p = c_void_p
mf_stream_p = c_void_p


class mf_buffer(Structure):
    """Bytes owned by the library; freed with ``mf_buffer_free``."""

    _fields_ = [("data", POINTER(c_uint8)), ("len", c_size_t)]


class mf_event(Structure):
    """One finished call taken from a completion queue.

    ``result`` and ``error_message`` stay valid until the next
    ``mf_queue_next`` on the same queue.
    """

    _fields_ = [
        ("token", c_uint64),
        ("status", c_int),
        ("result", c_void_p),
        ("result_len", c_size_t),
        ("error_message", c_char_p),
    ]


class mf_incoming(Structure):
    """A call taken with ``mf_worker_next``; its pointers belong to ``reply``."""

    _fields_ = [
        ("function", c_char_p),
        ("args", c_void_p),
        ("args_len", c_size_t),
        ("reply", mf_reply_p),
    ]


# void (*mf_log_fn)(void *user_data, const char *json)
mf_log_fn = CFUNCTYPE(None, c_void_p, c_char_p)
# mf_reply_on_cancel's callback is deliberately not declared: the binding
# hears of cancels through mf_reply_on_cancel_queue (see child.py).


class LibraryNotFoundError(ImportError):
    """libmultifrost could not be found or loaded.

    Attributes:
        searched: Every path that was tried, in order.
    """

    def __init__(self, message: str, searched: List[str]) -> None:
        super().__init__(message)
        self.searched = searched


def candidate_paths() -> List[Path]:
    """The places the library is looked for, in order (see the module docs).

    Returns:
        Only the ``MULTIFROST_LIB`` path when that variable is set; otherwise
        the package copy and then the repository build.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env)]
    here = Path(__file__).resolve().parent
    paths = [here / "lib" / LIBRARY_FILE]
    # <repo>/bindings/python/multifrost/_ffi.py -> <repo>
    if len(here.parents) >= 3:
        paths.append(here.parents[2] / "target" / "release" / LIBRARY_FILE)
    paths.append(SYSTEM_LIBRARY)
    return paths


def _not_found(paths: List[Path], failures: List[str]) -> LibraryNotFoundError:
    env = os.environ.get(ENV_VAR)
    lines = ["libmultifrost could not be loaded. Looked in:"]
    for path, why in zip(paths, failures):
        lines.append(f"  - {path} ({why})")
    if env:
        lines.append(f"{ENV_VAR} is set, so only that path was tried; point it at a built {LIBRARY_FILE} or unset it.")
    else:
        lines.append(
            f"Set {ENV_VAR} to the path of {LIBRARY_FILE} (built by `cargo build --release` "
            "in the repository), install the library (`make install`, then ldconfig), "
            "or install a wheel that carries it (`make wheel`)."
        )
    return LibraryNotFoundError("\n".join(lines), [str(p) for p in paths])


def _declare(lib: ctypes.CDLL) -> None:
    def fn(name: str, restype: Any, *argtypes: Any) -> None:
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = list(argtypes)

    # Library-wide.
    fn("mf_version", c_char_p)
    fn("mf_buffer_free", None, mf_buffer)
    fn("mf_string_free", None, c_void_p)
    fn("mf_last_error", c_char_p)
    fn("mf_status_name", c_char_p, c_int)
    fn("mf_set_log_callback", None, mf_log_fn, c_void_p)

    # Options.
    fn("mf_options_new", mf_options_p)
    fn("mf_options_free", None, mf_options_p)
    fn("mf_options_set_default_timeout", c_int, mf_options_p, c_int64)
    fn("mf_options_set_namespace", c_int, mf_options_p, c_char_p)
    fn("mf_options_set_heartbeat", c_int, mf_options_p, c_uint32, c_uint32, c_uint32)
    fn("mf_options_set_breaker", c_int, mf_options_p, c_uint32, c_uint32)
    fn("mf_options_set_breaker_counts_remote_errors", c_int, mf_options_p, c_bool)
    fn("mf_options_set_auto_restart", c_int, mf_options_p, c_uint32)
    fn("mf_options_set_start_timeout", c_int, mf_options_p, c_int64)
    fn("mf_options_set_connect_timeout", c_int, mf_options_p, c_int64)
    fn("mf_options_set_shutdown_grace", c_int, mf_options_p, c_int64)
    fn("mf_options_set_name", c_int, mf_options_p, c_char_p)
    fn("mf_options_set_bind_host", c_int, mf_options_p, c_char_p)
    fn("mf_options_set_max_message_size", c_int, mf_options_p, c_int64)
    fn("mf_options_set_private_link", c_int, mf_options_p, c_bool)
    fn("mf_options_set_cancel_grace", c_int, mf_options_p, c_int64)
    fn("mf_options_set_stream_credit", c_int, mf_options_p, c_uint32)
    fn("mf_options_set_workers", c_int, mf_options_p, c_uint32)
    fn("mf_options_set_max_calls_per_worker", c_int, mf_options_p, c_uint64)

    # Parent.
    fn("mf_spawn", c_int, c_char_p, POINTER(c_char_p), mf_options_p, POINTER(mf_parent_p))
    fn("mf_connect", c_int, c_char_p, mf_options_p, POINTER(mf_parent_p))
    fn(
        "mf_call",
        c_int,
        mf_parent_p,
        c_char_p,
        c_char_p,
        c_size_t,
        c_int64,
        POINTER(mf_buffer),
    )
    # Returns char* owned by the caller: declared as void* so ctypes keeps the pointer.
    fn("mf_parent_stats_json", c_void_p, mf_parent_p)
    fn("mf_parent_close", None, mf_parent_p)
    fn("mf_parent_retain", mf_parent_p, mf_parent_p)
    fn("mf_parent_release", None, mf_parent_p)

    # Completion queue.
    fn("mf_queue_new", mf_queue_p)
    fn("mf_queue_close", None, mf_queue_p)
    fn("mf_queue_free", None, mf_queue_p)
    fn(
        "mf_call_queued",
        c_int,
        mf_parent_p,
        c_char_p,
        c_char_p,
        c_size_t,
        c_int64,
        mf_queue_p,
        c_uint64,
    )
    fn(
        "mf_call_queued_start",
        c_int,
        mf_parent_p,
        c_char_p,
        c_char_p,
        c_size_t,
        c_int64,
        mf_queue_p,
        c_uint64,
        POINTER(c_uint64),
    )
    fn("mf_cancel", c_int, mf_parent_p, c_uint64)
    fn("mf_queue_next", c_int, mf_queue_p, c_int64, POINTER(mf_event), c_size_t, POINTER(c_size_t))
    fn("mf_queue_fd", c_int, mf_queue_p, POINTER(c_int))

    # Streams.
    fn("mf_stream_open", c_int, mf_parent_p, c_char_p, c_char_p, c_size_t, c_int64, POINTER(mf_stream_p))
    fn("mf_stream_next", c_int, mf_stream_p, c_int64, POINTER(mf_buffer), POINTER(c_bool))
    fn("mf_stream_cancel", c_int, mf_stream_p)
    fn("mf_stream_close", None, mf_stream_p)

    # Replies.
    fn("mf_reply_ok", c_int, mf_reply_p, c_char_p, c_size_t)
    fn("mf_reply_error", c_int, mf_reply_p, c_char_p)
    fn("mf_reply_cancelled", c_bool, mf_reply_p)
    fn("mf_reply_on_cancel_queue", c_int, mf_reply_p, mf_queue_p, c_uint64)
    fn("mf_reply_yield", c_int, mf_reply_p, c_char_p, c_size_t)

    # Worker.
    fn("mf_worker_new", c_int, c_char_p, POINTER(mf_worker_p))
    fn("mf_worker_register_pull", c_int, mf_worker_p, c_char_p)
    fn("mf_worker_set_namespace", c_int, mf_worker_p, c_char_p)
    fn("mf_worker_set_handle_signals", c_int, mf_worker_p, c_bool)
    fn("mf_worker_start", c_int, mf_worker_p)
    fn("mf_worker_next", c_int, mf_worker_p, c_int64, POINTER(mf_incoming))
    fn("mf_worker_stop", c_int, mf_worker_p)
    fn("mf_worker_free", None, mf_worker_p)


_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[Path] = None


def load() -> ctypes.CDLL:
    """The loaded library with every prototype declared (loaded once per process).

    Returns:
        The ``ctypes.CDLL`` of libmultifrost.

    Raises:
        LibraryNotFoundError: No candidate path held a loadable library; the
            message names ``MULTIFROST_LIB`` and every path that was tried.
    """
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        paths = candidate_paths()
        failures: List[str] = []
        for path in paths:
            system = path == SYSTEM_LIBRARY
            if not system and not path.is_file():
                failures.append("no such file")
                continue
            try:
                lib = ctypes.CDLL(str(path))
                _declare(lib)
            except (OSError, AttributeError) as e:
                failures.append(f"cannot load: {e}")
                continue
            _lib, _lib_path = lib, path
            return lib
        raise _not_found(paths, failures)


def library_path() -> Path:
    """The path the library was loaded from (loading it if needed)."""
    load()
    assert _lib_path is not None
    return _lib_path


def last_error() -> str:
    """``mf_last_error()`` of the calling thread, decoded."""
    raw = load().mf_last_error()
    return raw.decode("utf-8", "replace") if raw else ""


def take_string(ptr: Optional[int]) -> Optional[str]:
    """Copies a library-owned ``char*`` into a str and frees it with ``mf_string_free``."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        load().mf_string_free(ptr)


def encode(text: str, errors: str = "strict") -> bytes:
    """A Python str as NUL-free UTF-8 for a ``const char*`` argument.

    Args:
        text: The text.
        errors: How to encode lone surrogates (``str.encode`` semantics).

    Raises:
        ValueError: The text contains a NUL character (C would cut it there)
            or cannot be encoded as UTF-8.
    """
    if "\0" in text:
        raise ValueError(f"text must not contain NUL characters: {text!r}")
    return text.encode("utf-8", errors)
