"""Key-value stores: one store per (store name, input partition), bytes in, bytes out.

Two values of one key exist side by side:
- the *user value*: what operators read with ``get_many`` and write through ``WriteBackCache``;
- the *stored value*: what RocksDB holds, what ``write_batch`` takes and what the changelog carries.
  Without a TTL both are the same bytes; with ``ttl_ms`` the stored value is an 8-byte write-time
  prefix + the user value (see ``headwater.state.ttl``). ``encode_values`` turns user values into
  stored values; restoring from the changelog writes the changelog's bytes back unchanged.

Every store also keeps its *applied changelog offset*: the offset of the last changelog record
whose effect is in the store, written in the same atomic batch as the data it describes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from headwater.state.errors import StateError
from headwater.state.ttl import PREFIX_LEN, Clock, TtlCodec

NO_OFFSET = -1
"""``applied_changelog_offset()`` of a store that has applied nothing."""


@runtime_checkable
class KeyValueStore(Protocol):
    """One store for one (store name, input partition). Keys and values are bytes.

    Not thread-safe: one worker thread owns a store between ``open`` and ``close``.
    """

    name: str
    partition: int
    codec: TtlCodec

    @property
    def path(self) -> Path | None:
        """The store's directory, or ``None`` for in-memory stores."""
        ...

    @property
    def ttl_ms(self) -> int | None:
        """The store's time-to-live in ms, ``None`` when values never expire."""
        ...

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """User values of ``keys`` in order, ``None`` when missing or expired (one multi-get)."""
        ...

    def get_many_stored(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Stored values of ``keys`` (TTL prefix kept, expiry not applied); ``None``: missing."""
        ...

    def encode_values(self, values: Sequence[bytes | None]) -> list[bytes | None]:
        """Stored form of user ``values`` written now (TTL prefix added if any); ``None`` stays."""
        ...

    def write_batch(
        self, puts: Mapping[bytes, bytes | None], changelog_offset: int | None
    ) -> None:
        """Apply ``puts`` (stored values; ``None`` deletes) and the changelog offset atomically.

        Either every put and the offset become visible and durable together, or none does. With
        ``changelog_offset=None`` the recorded offset is left unchanged.

        Raises:
            TypeError: a key or value is not ``bytes`` (nothing is written).
            StateError: the store is closed, the write fails, or ``changelog_offset`` is lower than
                the offset already applied (the changelog must only move forward).
        """
        ...

    def applied_changelog_offset(self) -> int:
        """Offset of the last changelog record applied, ``-1`` when nothing was applied."""
        ...

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every live (key, user value) pair in key order, expired values skipped.

        Same as ``range(None, None)``: consume or close the iterator before ``close()``.
        """
        ...

    def range(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, user value) pairs with ``start <= key < end`` in key order (bytewise).

        ``None`` leaves that side open; expired values are skipped. The scan seeks to ``start``
        and reads lazily (nothing is loaded up front). It sees the store as of its first ``next``:
        writes made while it runs may or may not be seen (RocksDB: never). Consume or close the
        iterator before ``close()``.
        """
        ...

    def prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, user value) pairs whose key starts with ``prefix``, in key order."""
        ...

    def expired_keys(self, now_ms: int | None = None) -> list[bytes]:
        """Keys whose values have expired at ``now_ms`` (default: the store's clock)."""
        ...

    def purge_expired(self, now_ms: int | None = None) -> list[bytes]:
        """Delete the expired keys (one batch, offset unchanged) and return them.

        The caller writes a tombstone to the changelog for each returned key. To keep the cache and
        the changelog in order, prefer ``WriteBackCache.purge_expired`` while a cache is in use.
        """
        ...

    def close(self) -> None:
        """Flush and release the store (for RocksDB: its directory lock). Idempotent."""
        ...


class _BaseStore:
    """Shared TTL and offset logic; subclasses implement the raw operations."""

    def __init__(self, name: str, partition: int, ttl_ms: int | None, clock: Clock | None) -> None:
        self.name = name
        self.partition = partition
        self.codec = TtlCodec(ttl_ms, clock)
        self._offset = NO_OFFSET
        self._closed = False

    # raw operations -----------------------------------------------------------------------------
    def _raw_get(self, keys: list[bytes]) -> list[bytes | None]:
        raise NotImplementedError

    def _raw_write(self, puts: Mapping[bytes, bytes | None], offset: int | None) -> None:
        raise NotImplementedError

    def _raw_range(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Stored (key, value) pairs with ``start <= key < end`` in key order."""
        raise NotImplementedError

    # public API -----------------------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return None

    @property
    def ttl_ms(self) -> int | None:
        return self.codec.ttl_ms

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.codec.decode_many(self.get_many_stored(keys))

    def get_many_stored(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._check_open()
        if not keys:
            return []
        return self._raw_get(keys if isinstance(keys, list) else list(keys))

    def encode_values(self, values: Sequence[bytes | None]) -> list[bytes | None]:
        return self.codec.encode_many(values)

    def write_batch(
        self, puts: Mapping[bytes, bytes | None], changelog_offset: int | None
    ) -> None:
        self._check_open()
        if changelog_offset is not None and changelog_offset < self._offset:
            raise self._error(
                f"changelog offset would move backwards from {self._offset} to {changelog_offset}"
            )
        if not puts and (changelog_offset is None or changelog_offset == self._offset):
            return
        self._raw_write(puts, changelog_offset)
        if changelog_offset is not None:
            self._offset = changelog_offset

    def applied_changelog_offset(self) -> int:
        return self._offset

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return self.range(None, None)

    def range(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()
        for bound in (start, end):
            if bound is not None and type(bound) is not bytes:
                raise TypeError(f"{self!r}: range bounds must be bytes or None, got {bound!r}")
        return self._live(start, end)

    def prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        if type(prefix) is not bytes:
            raise TypeError(f"{self!r}: prefix must be bytes, got {prefix!r}")
        return self.range(prefix or None, prefix_end(prefix))

    def _live(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        if start is not None and end is not None and start >= end:
            return
        codec = self.codec
        if codec.ttl_ms is None:
            yield from self._raw_range(start, end)
            return
        now = codec.now_ms()
        for key, stored in self._raw_range(start, end):
            if not codec.is_expired(stored, now):
                yield key, stored[PREFIX_LEN:]

    def expired_keys(self, now_ms: int | None = None) -> list[bytes]:
        self._check_open()
        codec = self.codec
        if codec.ttl_ms is None:
            return []
        now = codec.now_ms() if now_ms is None else now_ms
        return [k for k, stored in self._raw_range(None, None) if codec.is_expired(stored, now)]

    def purge_expired(self, now_ms: int | None = None) -> list[bytes]:
        keys = self.expired_keys(now_ms)
        if keys:
            self._raw_write(dict.fromkeys(keys), None)
        return keys

    def _check_open(self) -> None:
        if self._closed:
            raise self._error("store is closed")

    def _error(self, reason: str) -> StateError:
        return StateError(reason, store=self.name, partition=self.partition, path=self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, partition={self.partition})"


class MemoryStore(_BaseStore):
    """A dict-backed store with the same semantics as ``RocksDBStore``, for tests and the driver.

    Args:
        name: store name.
        partition: input partition.
        ttl_ms: optional time-to-live in ms.
        clock: source of "now" in seconds (``time.time`` by default).
        data: the backing (data dict, offset holder) to reuse, so that a store closed and opened
            again by ``StateManager(in_memory=True)`` keeps its contents like a local disk would.
    """

    def __init__(
        self,
        name: str,
        partition: int,
        ttl_ms: int | None = None,
        clock: Clock | None = None,
        data: MemoryData | None = None,
    ) -> None:
        super().__init__(name, partition, ttl_ms, clock)
        self.data = data if data is not None else MemoryData()
        self._offset = self.data.offset

    def _raw_get(self, keys: list[bytes]) -> list[bytes | None]:
        get = self.data.values.get
        return [get(k) for k in keys]

    def _raw_write(self, puts: Mapping[bytes, bytes | None], offset: int | None) -> None:
        if not all(type(k) is bytes and (v is None or type(v) is bytes) for k, v in puts.items()):
            raise _not_bytes(self, puts)
        values = self.data.values
        for key, value in puts.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        self.data.sorted_keys = None
        if offset is not None:
            self.data.offset = offset

    def _raw_range(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        data = self.data
        keys = data.sorted_keys
        if keys is None:
            keys = data.sorted_keys = sorted(data.values)
        lo = 0 if start is None else bisect_left(keys, start)
        hi = len(keys) if end is None else bisect_left(keys, end)
        values = data.values
        # A snapshot of the range, like a RocksDB iterator: later writes are not seen.
        return iter([(k, values[k]) for k in keys[lo:hi]])

    def close(self) -> None:
        self._closed = True


def _not_bytes(store: _BaseStore, puts: Mapping[object, object]) -> TypeError:
    bad = next(
        (k, v) for k, v in puts.items()
        if type(k) is not bytes or (v is not None and type(v) is not bytes)
    )
    return TypeError(f"{store!r}: keys and values must be bytes, got {type(bad[0]).__name__} key "
                     f"{bad[0]!r} -> {type(bad[1]).__name__}")


class MemoryData:
    """The contents of one in-memory store: values and the applied changelog offset."""

    __slots__ = ("values", "offset", "sorted_keys")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.offset = NO_OFFSET
        self.sorted_keys: list[bytes] | None = None  # built on the first scan after a write


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (``None``: no bound).

    ``b"ab"`` -> ``b"ac"``; trailing ``0xff`` bytes carry: ``b"a\\xff"`` -> ``b"b"``;
    ``b""`` and all-``0xff`` prefixes have no upper bound.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def __getattr__(name: str) -> object:
    # RocksDBStore moved to headwater.state.rocksdb; keep the old import path working.
    if name in ("RocksDBStore", "rocksdb_options", "META_CF"):
        from headwater.state import rocksdb

        return getattr(rocksdb, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
