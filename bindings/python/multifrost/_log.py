"""Routes the library's structured log events into Python ``logging``.

The library calls the callback on its own threads (I/O and output readers),
possibly several at once. A ctypes ``CFUNCTYPE`` callback called from a
foreign thread takes the GIL itself, so the callback may use ``logging``. The
callback object is kept in a module global for the life of the process: the
library may call it at any moment, and a collected callback would crash it.

Every event goes to the logger ``"multifrost"`` at the event's level with the
event's ``message`` as the text (``[worker.py STDOUT]: hello`` for a line a
worker printed) and the whole decoded event as ``record.multifrost_event``.
While that logger has no handler anywhere (logging not configured), worker
output and warnings are written to ``sys.stderr`` instead, as the library does
by default, so nothing a worker prints is lost silently.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
from typing import Any, Dict, Optional

from . import _ffi

logger = logging.getLogger("multifrost")

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

_install_lock = threading.Lock()
_callback: Optional[Any] = None  # the CFUNCTYPE object, kept alive for ever
_installed = False


def _on_event(_user: Optional[int], raw: Optional[bytes]) -> None:
    # Runs on a library thread: never let an exception escape into C.
    try:
        text = raw.decode("utf-8", "replace") if raw else ""
        try:
            event: Dict[str, Any] = json.loads(text)
        except ValueError:
            event = {"event": "unknown", "level": "info", "message": text}
        level = _LEVELS.get(str(event.get("level", "info")).lower(), logging.INFO)
        message = str(event.get("message", ""))
        if logger.hasHandlers():
            if logger.isEnabledFor(level):
                logger.log(level, "%s", message, extra={"multifrost_event": event})
        elif event.get("event") == "worker_output" or level >= logging.WARNING:
            stream = sys.stderr
            if stream is not None:
                stream.write(message + "\n")
                stream.flush()
    except Exception:  # pragma: no cover - last resort inside a C callback
        pass


def install() -> None:
    """Installs the callback once per process (idempotent, thread-safe)."""
    global _callback, _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        lib = _ffi.load()
        _callback = _ffi.mf_log_fn(_on_event)
        lib.mf_set_log_callback(_callback, None)
        _installed = True
        atexit.register(_uninstall)


def _uninstall() -> None:
    # At interpreter exit, library threads must not call into a dying
    # interpreter: restore the library's default (stderr) sink. The callback
    # object itself stays referenced, in case a call is in progress.
    global _installed
    if _installed and _ffi._lib is not None:
        _ffi._lib.mf_set_log_callback(_ffi.mf_log_fn(), None)
        _installed = False
