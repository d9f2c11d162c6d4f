"""Optional per-store time-to-live: the stored-value format and expiry rules.

With ``ttl_ms`` set, a store keeps every value as ``write_time_ms (8 bytes, big-endian unsigned)
+ user value``. This *stored* form is what RocksDB holds, what ``WriteBackCache.dirty()`` returns
and what the changelog carries, so a restore preserves the original write times. Readers see the
user value only, and ``None`` once ``now_ms >= write_time_ms + ttl_ms``. Without a TTL the stored
form is the user value itself (no prefix, no copy).

The current time comes from a clock callable returning seconds (``time.time`` by default), so the
in-process test driver can control it.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence

Clock = Callable[[], float]
"""Returns the current time in seconds since the epoch (like ``time.time``)."""

PREFIX_LEN = 8
_PREFIX = struct.Struct(">Q")


class TtlCodec:
    """Encodes user values to stored values and back, applying the store's TTL.

    Args:
        ttl_ms: time-to-live in milliseconds, or ``None`` for no expiry (identity codec).
        clock: source of "now" in seconds; ``time.time`` by default.
    """

    __slots__ = ("ttl_ms", "clock")

    def __init__(self, ttl_ms: int | None = None, clock: Clock | None = None) -> None:
        if ttl_ms is not None and ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        self.ttl_ms = ttl_ms
        self.clock: Clock = clock or time.time

    def now_ms(self) -> int:
        """The clock's current time in integer milliseconds (rounded)."""
        return round(self.clock() * 1000)

    def encode_many(
        self, values: Sequence[bytes | None], now_ms: int | None = None
    ) -> list[bytes | None]:
        """Stored form of ``values`` written at ``now_ms`` (default: the clock); ``None`` stays."""
        if self.ttl_ms is None:
            return list(values)
        prefix = _PREFIX.pack(self.now_ms() if now_ms is None else now_ms)
        return [None if v is None else prefix + v for v in values]

    def decode_many(
        self, stored: Sequence[bytes | None], now_ms: int | None = None
    ) -> list[bytes | None]:
        """User values of ``stored``; expired or missing values are ``None``.

        Raises:
            ValueError: a stored value is shorter than the 8-byte prefix (not from a TTL store).
        """
        if self.ttl_ms is None:
            return list(stored)
        cutoff = (self.now_ms() if now_ms is None else now_ms) - self.ttl_ms
        out: list[bytes | None] = []
        for s in stored:
            if s is None:
                out.append(None)
            elif _written_ms(s) <= cutoff:
                out.append(None)
            else:
                out.append(s[PREFIX_LEN:])
        return out

    def is_expired(self, stored: bytes, now_ms: int) -> bool:
        """Whether a stored value has expired at ``now_ms`` (always False without a TTL)."""
        return self.ttl_ms is not None and _written_ms(stored) + self.ttl_ms <= now_ms


def write_time_ms(stored: bytes) -> int:
    """The write time (epoch ms) in a TTL store's stored value."""
    return _written_ms(stored)


def _written_ms(stored: bytes) -> int:
    if len(stored) < PREFIX_LEN:
        raise ValueError(f"stored value of {len(stored)} bytes lacks the 8-byte TTL prefix")
    return _PREFIX.unpack_from(stored)[0]
