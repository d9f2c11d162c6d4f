"""Opens and closes the stores of one worker process.

Layout: ``<state_dir>/<application_id>/<store name>/<partition>/`` is one RocksDB directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from headwater.state.errors import StateError
from headwater.state.rocksdb import RocksDBStore
from headwater.state.store import KeyValueStore, MemoryData, MemoryStore
from headwater.state.ttl import Clock


class StateManager:
    """Opens/closes stores per (store name, partition) under ``state_dir/<application_id>/``.

    One manager per worker process. RocksDB locks each store directory, so a partition's stores are
    owned by one process at a time: close them (``close_partition``) on revocation so another worker
    on the same host can open them after the rebalance.

    Args:
        state_dir: root of all local state.
        application_id: the application (consumer group) the state belongs to.
        in_memory: use ``MemoryStore`` instead of RocksDB (the test driver). Contents survive
            ``close_partition`` + ``open`` within this manager, like a local disk would.
        clock: source of "now" in seconds for TTL stores (``time.time`` by default).
    """

    def __init__(
        self,
        state_dir: Path,
        application_id: str,
        in_memory: bool = False,
        clock: Clock | None = None,
    ) -> None:
        if not application_id or "/" in application_id or application_id in (".", ".."):
            raise StateError(f"invalid application id {application_id!r} for a state directory")
        self.state_dir = Path(state_dir)
        self.application_id = application_id
        self.in_memory = in_memory
        self.clock = clock
        self._open: dict[tuple[str, int], KeyValueStore] = {}
        self._memory: dict[tuple[str, int], MemoryData] = {}

    @property
    def app_dir(self) -> Path:
        """``state_dir/application_id``: everything this application keeps locally."""
        return self.state_dir / self.application_id

    def store_path(self, store_name: str, partition: int) -> Path:
        """The directory of one store partition."""
        return self.app_dir / store_name / str(partition)

    def open(self, store_name: str, partition: int, ttl_ms: int | None = None) -> KeyValueStore:
        """Open (creating if needed) the store ``store_name`` for ``partition``.

        Opening a store this manager already holds open returns the same instance.

        Raises:
            StateError: the name is not a valid directory name, the store is already open with
                another TTL, or (RocksDB) its directory is locked by another process.
        """
        if not store_name or "/" in store_name or store_name in (".", ".."):
            raise StateError(f"invalid store name {store_name!r}", partition=partition)
        key = (store_name, partition)
        store = self._open.get(key)
        if store is not None:
            if store.ttl_ms != ttl_ms:
                raise StateError(
                    f"store already open with ttl_ms={store.ttl_ms}, requested {ttl_ms}",
                    store=store_name, partition=partition, path=store.path,
                )
            return store
        if self.in_memory:
            data = self._memory.setdefault(key, MemoryData())
            store = MemoryStore(store_name, partition, ttl_ms, self.clock, data)
        else:
            store = RocksDBStore(
                self.store_path(store_name, partition), store_name, partition, ttl_ms, self.clock
            )
        self._open[key] = store
        return store

    def open_stores(self) -> list[KeyValueStore]:
        """The stores currently open, in opening order."""
        return list(self._open.values())

    def close(self, store_name: str, partition: int) -> None:
        """Close one store partition if it is open (releasing its RocksDB lock)."""
        store = self._open.pop((store_name, partition), None)
        if store is not None:
            store.close()

    def close_partition(self, partition: int) -> None:
        """Close every open store of ``partition`` (releasing the RocksDB locks)."""
        for key in [k for k in self._open if k[1] == partition]:
            self._open.pop(key).close()

    def close_all(self) -> None:
        """Close every open store."""
        while self._open:
            _, store = self._open.popitem()
            store.close()

    def drop(self, store_name: str, partition: int) -> None:
        """Close and delete one store partition (e.g. it is ahead of its changelog); a later
        ``open`` starts empty and a restore rebuilds it from the changelog."""
        key = (store_name, partition)
        store = self._open.pop(key, None)
        if store is not None:
            store.close()
        self._memory.pop(key, None)
        if not self.in_memory:
            shutil.rmtree(self.store_path(store_name, partition), ignore_errors=True)

    def wipe(self) -> None:
        """Close every store and delete the application's local state (``app_dir``)."""
        self.close_all()
        self._memory.clear()
        if not self.in_memory:
            shutil.rmtree(self.app_dir, ignore_errors=True)
