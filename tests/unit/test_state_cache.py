"""WriteBackCache over both store implementations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.state import KeyValueStore, MemoryStore, RocksDBStore, WriteBackCache


class CountingStore:
    """Wraps a store and records the keys of each get_many_stored / write_batch call."""

    def __init__(self, inner: KeyValueStore) -> None:
        self.inner = inner
        self.gets: list[list[bytes]] = []
        self.writes: list[tuple[dict[bytes, bytes | None], int | None]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def get_many_stored(self, keys: list[bytes]) -> list[bytes | None]:
        self.gets.append(list(keys))
        return self.inner.get_many_stored(keys)

    def write_batch(self, puts: dict[bytes, bytes | None], changelog_offset: int | None) -> None:
        self.writes.append((dict(puts), changelog_offset))
        self.inner.write_batch(puts, changelog_offset)


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture(params=["rocksdb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CountingStore]:
    inner: KeyValueStore = (
        RocksDBStore(tmp_path / "c", "c", 1) if request.param == "rocksdb" else MemoryStore("c", 1)
    )
    inner.write_batch({b"old": b"o", b"gone": b"g"}, 4)
    yield CountingStore(inner)
    inner.close()


def test_reads_see_own_writes_and_misses_go_in_one_call(store: CountingStore) -> None:
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    cache.put_many([b"new", b"gone"], [b"n", None])
    assert cache.get_many([b"old", b"new", b"gone", b"nope", b"old"]) == [
        b"o", b"n", None, None, b"o"
    ]
    assert store.gets == [[b"old", b"nope", b"old"]]
    assert cache.get_many([b"old", b"nope"]) == [b"o", None]  # cached, incl. the miss
    assert len(store.gets) == 1
    assert store.writes == []  # nothing reaches the store before flush
    assert store.inner.get_many([b"gone", b"new"]) == [b"g", None]


def test_dirty_holds_latest_value_per_key(store: CountingStore) -> None:
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    cache.put_many([b"a", b"b", b"a"], [b"1", b"2", b"3"])
    cache.put_many([b"b", b"old"], [None, b"o2"])
    assert cache.dirty() == {b"a": b"3", b"b": None, b"old": b"o2"}
    assert len(cache) == 3
    with pytest.raises(ValueError):
        cache.put_many([b"a"], [])


def test_flush_writes_one_batch_and_clears(store: CountingStore) -> None:
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    cache.put_many([b"a", b"old", b"a"], [b"1", None, b"2"])
    cache.flush(9)
    assert store.writes == [({b"a": b"2", b"old": None}, 9)]
    assert cache.dirty() == {}
    assert store.inner.applied_changelog_offset() == 9
    assert store.inner.get_many([b"a", b"old"]) == [b"2", None]
    assert cache.get_many([b"a"]) == [b"2"]  # read cache was dropped: fetched again
    assert store.gets[-1] == [b"a"]


def test_discard_drops_uncommitted_changes(store: CountingStore) -> None:
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    cache.put_many([b"old", b"x"], [b"changed", b"x"])
    cache.discard()
    assert cache.dirty() == {}
    assert cache.get_many([b"old", b"x"]) == [b"o", None]
    cache.flush(5)
    assert store.writes == [({}, 5)]
    assert store.inner.get_many([b"old"]) == [b"o"]


def test_ttl_through_cache() -> None:
    clock = Clock()
    store = MemoryStore("t", 0, ttl_ms=1000, clock=clock)
    cache = WriteBackCache(store)
    cache.put_many([b"a", b"b"], [b"1", b"2"])
    stored = cache.dirty()
    assert stored[b"a"] == (1_000_000).to_bytes(8, "big") + b"1"  # changelog gets the prefix
    assert cache.get_many([b"a"]) == [b"1"]  # callers never see it
    cache.flush(0)
    clock.now_s += 0.5
    cache.put_many([b"b"], [b"2b"])  # refreshed
    clock.now_s += 0.5
    assert cache.get_many([b"a", b"b"]) == [None, b"2b"]
    assert cache.purge_expired() == [b"a"]
    assert cache.dirty() == {b"a": None, b"b": (1_000_500).to_bytes(8, "big") + b"2b"}
    cache.flush(1)
    assert store.get_many_stored([b"a"]) == [None]
    clock.now_s += 1.0
    assert cache.purge_expired() == [b"b"]
    cache.put_many([b"c"], [b"3"])
    clock.now_s += 2.0
    assert cache.purge_expired() == [b"c"]  # dirty-but-expired; b already purged, not twice
    assert cache.dirty() == {b"b": None, b"c": None}
