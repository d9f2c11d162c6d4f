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

import shutil
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import rocksdict

from headwater.state.errors import StateError
from headwater.state.ttl import PREFIX_LEN, Clock, TtlCodec

NO_OFFSET = -1
"""``applied_changelog_offset()`` of a store that has applied nothing."""

META_CF = "headwater-meta"
"""RocksDB column family holding the store's metadata (the applied changelog offset)."""
_OFFSET_KEY = b"changelog-offset"
_OFFSET = struct.Struct(">q")


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

        For tests, queries and debugging: consume or close the iterator before ``close()``.
        """
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

    def _raw_items(self) -> Iterator[tuple[bytes, bytes]]:
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
        self._check_open()
        codec = self.codec
        if codec.ttl_ms is None:
            yield from self._raw_items()
            return
        now = codec.now_ms()
        for key, stored in self._raw_items():
            if not codec.is_expired(stored, now):
                yield key, stored[PREFIX_LEN:]

    def expired_keys(self, now_ms: int | None = None) -> list[bytes]:
        self._check_open()
        codec = self.codec
        if codec.ttl_ms is None:
            return []
        now = codec.now_ms() if now_ms is None else now_ms
        return [k for k, stored in self._raw_items() if codec.is_expired(stored, now)]

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
        if offset is not None:
            self.data.offset = offset

    def _raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        values = self.data.values
        for key in sorted(values):
            yield key, values[key]

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

    __slots__ = ("values", "offset")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.offset = NO_OFFSET


_block_cache_lock = threading.Lock()
_block_cache: rocksdict.Cache | None = None
BLOCK_CACHE_BYTES = 64 << 20
"""One LRU block cache shared by every RocksDB store of the process."""


def _shared_block_cache() -> rocksdict.Cache:
    global _block_cache
    with _block_cache_lock:
        if _block_cache is None:
            _block_cache = rocksdict.Cache(BLOCK_CACHE_BYTES)
        return _block_cache


def rocksdb_options() -> rocksdict.Options:
    """The RocksDB options of a headwater store (documented in docs/state.md).

    - raw bytes keys/values; a metadata column family, flushed atomically with the data
      (``atomic_flush``) so the applied offset never runs ahead of the data on disk;
    - 16 MiB write buffers x 3 (a worker hosts stores x partitions of them), LZ4 blocks,
      10-bit bloom filters for point lookups, a process-wide 64 MiB block cache;
    - WAL on, no fsync per write: a killed process loses nothing, a power loss may lose the last
      writes *together with* their offset, and the changelog restore fills the gap.
    """
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_atomic_flush(True)
    opts.set_write_buffer_size(16 << 20)
    opts.set_max_write_buffer_number(3)
    opts.set_max_background_jobs(2)
    opts.set_compression_type(rocksdict.DBCompressionType.lz4())
    opts.set_keep_log_file_num(2)
    opts.set_max_log_file_size(1 << 20)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(_shared_block_cache())
    opts.set_block_based_table_factory(table)
    return opts


class RocksDBStore(_BaseStore):
    """A store in its own RocksDB directory (rocksdict), the production implementation.

    Args:
        path: the store's directory (created if missing).
        name: store name.
        partition: input partition.
        ttl_ms: optional time-to-live in ms.
        clock: source of "now" in seconds (``time.time`` by default).

    Raises:
        StateError: the directory is locked by another open store (in this or another process:
            RocksDB's LOCK file; opening fails at once, it never waits) or cannot be opened.
    """

    def __init__(
        self,
        path: Path,
        name: str,
        partition: int,
        ttl_ms: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name, partition, ttl_ms, clock)
        self._path = Path(path)
        try:
            self._path.mkdir(parents=True, exist_ok=True)
            self._db: rocksdict.Rdict | None = rocksdict.Rdict(
                str(self._path),
                rocksdb_options(),
                column_families={META_CF: rocksdict.Options(raw_mode=True)},
            )
        except Exception as exc:  # rocksdict raises plain Exception
            msg = str(exc)
            if "lock" in msg.lower():
                reason = f"store directory is locked by another open store: {msg}"
                raise self._error(reason) from exc
            raise self._error(f"cannot open RocksDB store: {msg}") from exc
        self._meta_cf = self._db.get_column_family_handle(META_CF)
        meta = self._db.get_column_family(META_CF)
        try:
            raw = meta.get(_OFFSET_KEY)
        finally:
            del meta  # a live column-family Rdict would keep the DB (and its lock) open
        self._offset = _OFFSET.unpack(raw)[0] if raw is not None else NO_OFFSET

    @property
    def path(self) -> Path:
        return self._path

    def _raw_get(self, keys: list[bytes]) -> list[bytes | None]:
        assert self._db is not None
        return self._db.get(keys)

    def _raw_write(self, puts: Mapping[bytes, bytes | None], offset: int | None) -> None:
        assert self._db is not None
        batch = rocksdict.WriteBatch(raw_mode=True)
        try:
            for key, value in puts.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
        except (KeyError, ValueError) as exc:
            raise _not_bytes(self, puts) from exc
        if offset is not None:
            batch.put(_OFFSET_KEY, _OFFSET.pack(offset), self._meta_cf)
        try:
            self._db.write(batch)
        except Exception as exc:
            raise self._error(f"RocksDB write of {len(puts)} keys failed: {exc}") from exc

    def _raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        assert self._db is not None
        it = self._db.items()
        try:
            yield from it
        finally:
            del it

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        db, self._db = self._db, None
        self._meta_cf = None
        if db is not None:
            try:
                db.close()
            except Exception as exc:
                raise self._error(f"closing RocksDB failed: {exc}") from exc

    def destroy(self) -> None:
        """Close the store and delete its directory (the changelog can rebuild it)."""
        self.close()
        shutil.rmtree(self._path, ignore_errors=True)
