"""WriteBackCache over both store implementations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.state import KeyValueStore, MemoryStore, RocksDBStore, StateError, WriteBackCache


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


# --- scans through the cache ------------------------------------------------------------------


def test_range_merges_dirty_writes_and_deletes_over_the_store(store: CountingStore) -> None:
    store.inner.write_batch({b"k1": b"s1", b"k3": b"s3", b"k5": b"s5"}, 5)
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    cache.put_many([b"k2", b"k3", b"k5", b"k0", b"l"], [b"d2", b"d3", None, b"d0", b"dl"])
    assert list(cache.range(b"k", b"l")) == [
        (b"k0", b"d0"), (b"k1", b"s1"), (b"k2", b"d2"), (b"k3", b"d3")
    ]
    assert list(cache.prefix(b"k")) == list(cache.range(b"k", b"l"))
    assert [k for k, _ in cache.range(None, None)] == [
        b"gone", b"k0", b"k1", b"k2", b"k3", b"l", b"old"
    ]
    assert list(cache.range(b"k3", b"k3")) == [] == list(cache.range(b"z", b"a"))
    assert store.writes == []  # scans never write


def test_delete_range_tombstones_every_live_key_once(store: CountingStore) -> None:
    store.inner.write_batch({b"w|1": b"a", b"w|2": b"b", b"w|4": b"d", b"x": b"x"}, 5)
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    cache.put_many([b"w|3", b"w|2", b"w|4"], [b"c", b"b2", None])
    assert cache.delete_range(b"w|", b"w|9") == [b"w|1", b"w|2", b"w|3"]  # w|4: already gone
    assert cache.dirty() == {b"w|1": None, b"w|2": None, b"w|3": None, b"w|4": None}
    assert list(cache.prefix(b"w|")) == []
    assert cache.delete_range(b"w|", b"w|9") == []
    cache.flush(6)
    assert list(store.inner.items()) == [(b"gone", b"g"), (b"old", b"o"), (b"x", b"x")]


def test_a_key_created_and_deleted_between_flushes_leaves_no_tombstone(
    store: CountingStore,
) -> None:
    store.inner.write_batch({b"kept": b"k"}, 5)
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    assert cache.get_many([b"new", b"kept"]) == [None, b"k"]  # the store holds no "new"
    cache.put_many([b"new", b"kept", b"unread"], [b"n", b"k2", b"u"])
    cache.delete_many([b"new", b"kept", b"unread"])
    assert cache.dirty() == {b"kept": None, b"unread": None}  # "unread": never read, so unknown
    cache.flush(6)
    assert list(store.inner.items()) == [(b"gone", b"g"), (b"old", b"o")]


def test_scans_through_a_ttl_cache_skip_expired_values() -> None:
    clock = Clock()
    store = MemoryStore("t", 0, ttl_ms=1000, clock=clock)
    cache = WriteBackCache(store)
    cache.put_many([b"a", b"b"], [b"1", b"2"])
    cache.flush(0)
    clock.now_s += 0.6
    cache.put_many([b"c"], [b"3"])
    assert list(cache.range(None, None)) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    clock.now_s += 0.5  # a, b expired (store); c is dirty and still live
    assert list(cache.range(None, None)) == [(b"c", b"3")]
    assert cache.delete_range(None, None) == [b"c"]
    clock.now_s += 1.0  # a dirty value can expire too
    cache.put_many([b"d"], [b"4"])
    cache.flush(1)
    clock.now_s += 2.0
    assert list(cache.range(None, None)) == []


small_keys = st.lists(st.sampled_from([0x00, 0x61, 0x62, 0xFF]), max_size=2).map(bytes)
bound = st.one_of(st.none(), small_keys)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"),
                  st.dictionaries(small_keys, st.one_of(st.none(), st.binary(max_size=2)))),
        st.tuples(st.just("delete_range"), st.tuples(bound, bound)),
        st.tuples(st.just("flush"), st.none()),
    ),
    max_size=12,
)


@settings(max_examples=80, deadline=None)
@given(ops=ops, start=bound, end=bound)
def test_cache_scans_match_a_dict_model(
    ops: list[tuple[str, object]], start: bytes | None, end: bytes | None
) -> None:
    store = MemoryStore("m", 0)
    store.write_batch({b"a": b"s", b"ab": b"s", b"\xff": b"s"}, None)
    cache = WriteBackCache(store)
    model = dict(store.items())
    inside = lambda k, lo, hi: (lo is None or k >= lo) and (hi is None or k < hi)  # noqa: E731
    for op, arg in ops:
        if op == "put":
            assert isinstance(arg, dict)
            cache.put_many(list(arg), list(arg.values()))
            for k, v in arg.items():
                if v is None:
                    model.pop(k, None)
                else:
                    model[k] = v
        elif op == "delete_range":
            lo, hi = arg  # type: ignore[misc]
            doomed = sorted(k for k in model if inside(k, lo, hi))
            assert cache.delete_range(lo, hi) == doomed
            for k in doomed:
                del model[k]
        else:
            cache.flush(None)
        assert list(cache.range(start, end)) == sorted(
            (k, v) for k, v in model.items() if inside(k, start, end)
        )
    cache.flush(None)
    assert dict(store.items()) == model


# --- savepoints ---------------------------------------------------------------------------------


def test_rollback_restores_dirty_state_of_the_savepoint(store: CountingStore) -> None:
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    cache.put_many([b"a", b"old"], [b"1", None])
    before = cache.dirty()
    cache.savepoint()
    assert cache.in_savepoint
    cache.put_many([b"a", b"b", b"a"], [b"2", b"new", b"3"])  # rewrite, new key, twice
    cache.put_many([b"old"], [b"back"])  # un-delete
    cache.delete_range(b"gone", b"gone\x00")  # a store key
    assert cache.get_many([b"a", b"b", b"old", b"gone"]) == [b"3", b"new", b"back", None]
    cache.rollback()
    assert not cache.in_savepoint
    assert cache.dirty() == before
    assert cache.get_many([b"a", b"b", b"old", b"gone"]) == [b"1", None, None, b"g"]
    cache.flush(7)
    assert store.writes == [(before, 7)]


def test_release_keeps_the_writes(store: CountingStore) -> None:
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    cache.savepoint()
    cache.put_many([b"a"], [b"1"])
    cache.release()
    assert cache.dirty() == {b"a": b"1"}
    cache.savepoint()  # a new one may start after release
    cache.put_many([b"a"], [b"2"])
    cache.rollback()
    assert cache.dirty() == {b"a": b"1"}


def test_savepoint_misuse_is_refused(store: CountingStore) -> None:
    cache = WriteBackCache(store)  # type: ignore[arg-type]
    for call in (cache.rollback, cache.release):
        with pytest.raises(StateError, match="savepoint") as info:
            call()
        assert (info.value.store, info.value.partition) == ("c", 1)
    cache.savepoint()
    with pytest.raises(StateError, match="already active"):
        cache.savepoint()
    cache.put_many([b"a"], [b"1"])
    with pytest.raises(StateError, match="savepoint"):
        cache.flush(5)
    assert store.writes == [] and cache.dirty() == {b"a": b"1"}
    cache.discard()  # an aborted transaction ends the savepoint too
    assert not cache.in_savepoint and cache.dirty() == {}
    cache.flush(5)
    assert store.writes == [({}, 5)]


def test_rollback_undoes_purged_expiries() -> None:
    clock = Clock()
    store = MemoryStore("t", 0, ttl_ms=1000, clock=clock)
    store.write_batch(dict(zip([b"a"], store.encode_values([b"1"]))), 0)
    cache = WriteBackCache(store)
    clock.now_s += 2
    cache.savepoint()
    assert cache.purge_expired() == [b"a"]
    cache.rollback()
    assert cache.dirty() == {}


@settings(max_examples=80, deadline=None)
@given(before=ops, during=ops)
def test_rollback_after_any_writes_restores_dirty_exactly(
    before: list[tuple[str, object]], during: list[tuple[str, object]]
) -> None:
    store = MemoryStore("m", 0)
    store.write_batch({b"a": b"s", b"b": b"s"}, None)
    cache = WriteBackCache(store)

    def run(sequence: list[tuple[str, object]]) -> None:
        for op, arg in sequence:
            if op == "put":
                assert isinstance(arg, dict)
                cache.put_many(list(arg), list(arg.values()))
            elif op == "delete_range":
                cache.delete_range(*arg)  # type: ignore[misc]

    run(before)
    snapshot = cache.dirty()
    cache.savepoint()
    run(during)
    cache.rollback()
    assert cache.dirty() == snapshot
