"""MessagePack for values that cross the process boundary (PROTOCOL.md §7).

Strings are msgpack ``str`` and ``bytes`` are ``bin`` (``use_bin_type=True``);
decoding gives ``str`` for str (``raw=False``) and accepts maps with non-string
keys from other peers (``strict_map_key=False``). Tuples are sent as arrays.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import msgpack  # type: ignore[import-untyped]

_packer_options = {"use_bin_type": True, "datetime": False}
# One Packer per thread (a Packer keeps a buffer): cheaper than packb's new one per call.
_local = threading.local()


def _packer() -> "msgpack.Packer":
    try:
        return _local.packer
    except AttributeError:
        _local.packer = msgpack.Packer(**_packer_options)
        return _local.packer


def pack(value: Any) -> bytes:
    """Encodes one value.

    Raises:
        TypeError: The value (or something inside it) has no msgpack form.
        OverflowError: An integer does not fit in 64 bits.
    """
    try:
        data: bytes = _packer().pack(value)
    except BaseException:
        _local.packer = msgpack.Packer(**_packer_options)  # a failed pack leaves partial output
        raise
    return data


def pack_args(args: Sequence[Any]) -> bytes:
    """Encodes positional arguments as one msgpack array."""
    return pack(list(args))


def unpack(data: bytes) -> Any:
    """Decodes exactly one value.

    Raises:
        ValueError: The bytes are not exactly one valid msgpack value
            (``msgpack`` raises subclasses of ``ValueError``).
    """
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
