"""The production store: one RocksDB directory (rocksdict) per (store name, input partition).

Column families: ``default`` holds the state (raw bytes keys and stored values),
``headwater-meta`` the applied changelog offset (8-byte big-endian signed), written in the same
``WriteBatch`` as the data it describes.
"""

from __future__ import annotations

import shutil
import struct
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import rocksdict

from headwater.state.errors import StoreLocked
from headwater.state.store import NO_OFFSET, _BaseStore, _not_bytes
from headwater.state.ttl import Clock

META_CF = "headwater-meta"
"""RocksDB column family holding the store's metadata (the applied changelog offset)."""
_OFFSET_KEY = b"changelog-offset"
_OFFSET = struct.Struct(">q")

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
        StoreLocked: the directory is locked by another open store (in this or another process:
            RocksDB's LOCK file; opening fails at once, it never waits).
        StateError: the store cannot be opened for another reason.
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
                raise StoreLocked(reason, store=name, partition=partition, path=self._path) from exc
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

    def _raw_range(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        assert self._db is not None
        opts = rocksdict.ReadOptions()
        if end is not None:
            opts.set_iterate_upper_bound(end)
        it = self._db.items(from_key=start, read_opt=opts)
        try:
            yield from it
        finally:
            del it  # a live iterator would keep the DB (and its lock) open

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
