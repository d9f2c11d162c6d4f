"""Contract suite: every KeyValueStore implementation behaves the same."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.state import KeyValueStore, MemoryStore, RocksDBStore, StateError, TtlCodec
from headwater.state.store import MemoryData


class FakeClock:
    """A controllable clock in seconds."""

    def __init__(self, now_s: float = 1_700_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance_ms(self, ms: int) -> None:
        self.now_s += ms / 1000


StoreFactory = Callable[..., KeyValueStore]


@pytest.fixture(params=["rocksdb", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores of one implementation; ``reopen=True`` reopens the same backing storage."""
    opened: list[KeyValueStore] = []
    memory = MemoryData()

    def make(ttl_ms: int | None = None, clock: FakeClock | None = None) -> KeyValueStore:
        if request.param == "rocksdb":
            store: KeyValueStore = RocksDBStore(tmp_path / "s" / "0", "s", 0, ttl_ms, clock)
        else:
            store = MemoryStore("s", 0, ttl_ms, clock, memory)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_is_a_key_value_store(make_store: StoreFactory) -> None:
    store = make_store()
    assert isinstance(store, KeyValueStore)
    assert (store.name, store.partition, store.ttl_ms) == ("s", 0, None)


def test_get_many_put_delete(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.get_many([]) == []
    assert store.get_many([b"a", b"b"]) == [None, None]
    store.write_batch({b"a": b"1", b"b": b"2", b"c": b""}, None)
    assert store.get_many([b"b", b"x", b"a", b"c", b"a"]) == [b"2", None, b"1", b"", b"1"]
    store.write_batch({b"a": None, b"b": b"22", b"never": None}, None)
    assert store.get_many((b"a", b"b", b"never")) == [None, b"22", None]
    assert list(store.items()) == [(b"b", b"22"), (b"c", b"")]


def test_items_are_in_key_order(make_store: StoreFactory) -> None:
    store = make_store()
    keys = [bytes([i]) * 3 for i in (9, 1, 200, 0, 50)]
    store.write_batch({k: k[:1] for k in keys}, None)
    assert [k for k, _ in store.items()] == sorted(keys)


def test_applied_offset_written_with_batch(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.applied_changelog_offset() == -1
    store.write_batch({b"k": b"v"}, 41)
    assert store.applied_changelog_offset() == 41
    store.write_batch({b"k": b"w"}, None)  # offset untouched
    assert store.applied_changelog_offset() == 41
    store.write_batch({}, 57)  # offset-only batch (trailing transaction markers)
    assert store.applied_changelog_offset() == 57
    with pytest.raises(StateError, match="backwards") as info:
        store.write_batch({b"k": b"x"}, 10)
    assert (info.value.store, info.value.partition) == ("s", 0)
    assert store.get_many([b"k"]) == [b"w"]  # the rejected batch wrote nothing


def test_offset_and_data_persist_across_reopen(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch({b"a": b"1", b"b": b"2"}, 7)
    store.write_batch({b"a": None}, 9)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        store.get_many([b"a"])
    again = make_store()
    assert again.applied_changelog_offset() == 9
    assert list(again.items()) == [(b"b", b"2")]


def test_failed_batch_leaves_offset_and_data(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch({b"a": b"1"}, 3)
    with pytest.raises(TypeError, match="bytes"):
        store.write_batch({b"a": b"2", "not-bytes": b"x"}, 4)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="bytes"):
        store.write_batch({b"a": b"2", b"b": 5}, 4)  # type: ignore[dict-item]
    assert store.applied_changelog_offset() == 3
    assert store.get_many([b"a"]) == [b"1"]


def test_ttl_expiry_with_controllable_clock(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(ttl_ms=1000, clock=clock)
    store.write_batch(dict(zip([b"a", b"b"], store.encode_values([b"1", b"2"]))), 0)
    clock.advance_ms(600)
    store.write_batch(dict(zip([b"b"], store.encode_values([b"2b"]))), 1)
    assert store.get_many([b"a", b"b"]) == [b"1", b"2b"]
    clock.advance_ms(399)
    assert store.get_many([b"a"]) == [b"1"]
    clock.advance_ms(1)  # a: written 1000 ms ago -> expired
    assert store.get_many([b"a", b"b"]) == [None, b"2b"]
    assert list(store.items()) == [(b"b", b"2b")]
    assert store.expired_keys() == [b"a"]
    # the stored (changelog) form keeps the write time prefix
    stored_b = store.get_many_stored([b"b"])[0]
    assert stored_b is not None
    assert struct.unpack(">Q", stored_b[:8])[0] == 1_700_000_000_600
    assert stored_b[8:] == b"2b"


def test_purge_expired_returns_deleted_keys(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(ttl_ms=100, clock=clock)
    store.write_batch(dict(zip([b"x", b"y"], store.encode_values([b"1", b"2"]))), 5)
    clock.advance_ms(50)
    store.write_batch(dict(zip([b"z"], store.encode_values([b"3"]))), 6)
    clock.advance_ms(60)
    assert sorted(store.purge_expired()) == [b"x", b"y"]
    assert store.get_many_stored([b"x", b"y"]) == [None, None]  # really deleted
    assert store.applied_changelog_offset() == 6
    assert store.purge_expired() == []
    assert store.purge_expired(now_ms=clock.now_s * 1000 + 10_000) == [b"z"]


def test_restored_stored_values_keep_write_time(make_store: StoreFactory) -> None:
    """Writing changelog bytes back (a restore) preserves the original expiry."""
    clock = FakeClock()
    source = TtlCodec(1000, clock)
    changelog = {b"k": source.encode_many([b"v"])[0]}
    clock.advance_ms(900)
    store = make_store(ttl_ms=1000, clock=clock)
    store.write_batch(changelog, 0)
    assert store.get_many([b"k"]) == [b"v"]
    clock.advance_ms(100)
    assert store.get_many([b"k"]) == [None]


def test_ttl_none_stores_user_bytes_unchanged(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.encode_values([b"v", None]) == [b"v", None]
    assert store.purge_expired() == []


def test_ttl_store_rejects_unprefixed_value(make_store: StoreFactory) -> None:
    store = make_store(ttl_ms=10, clock=FakeClock())
    store.write_batch({b"k": b"abc"}, None)
    with pytest.raises(ValueError, match="prefix"):
        store.get_many([b"k"])


def test_rocksdb_open_failure_names_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(StateError) as info:
        RocksDBStore(blocker / "s" / "0", "s", 0)
    assert info.value.path == str(blocker / "s" / "0")


def test_rocksdb_same_dir_twice_in_process_is_refused(tmp_path: Path) -> None:
    first = RocksDBStore(tmp_path / "d", "s", 3)
    with pytest.raises(StateError, match="locked") as info:
        RocksDBStore(tmp_path / "d", "s", 3)
    assert (info.value.store, info.value.partition) == ("s", 3)
    first.close()
    RocksDBStore(tmp_path / "d", "s", 3).close()  # released by close


def test_rocksdb_abandoned_items_iterator_does_not_keep_lock(tmp_path: Path) -> None:
    store = RocksDBStore(tmp_path / "d", "s", 0)
    store.write_batch({b"a": b"1", b"b": b"2"}, 0)
    it = store.items()
    next(it)
    del it
    store.close()
    RocksDBStore(tmp_path / "d", "s", 0).close()


# --- ordered access: range and prefix ----------------------------------------------------------

ORDERED = [b"", b"\x00", b"a", b"a\x00", b"ab", b"abc", b"a\xff", b"b", b"\xff", b"\xff\xff"]


def test_range_is_start_inclusive_end_exclusive_in_key_order(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch({k: b"v" + k for k in reversed(ORDERED)}, None)
    keys = lambda it: [k for k, _ in it]  # noqa: E731
    assert keys(store.range(None, None)) == ORDERED == keys(store.items())
    assert keys(store.range(b"a", b"b")) == [b"a", b"a\x00", b"ab", b"abc", b"a\xff"]
    assert keys(store.range(b"a\x01", b"abc")) == [b"ab"]
    assert keys(store.range(b"abc", b"a\xff\x00")) == [b"abc", b"a\xff"]
    assert keys(store.range(b"ab", None)) == [b"ab", b"abc", b"a\xff", b"b", b"\xff", b"\xff\xff"]
    assert keys(store.range(None, b"a")) == [b"", b"\x00"]
    assert keys(store.range(b"b", b"b")) == [] == keys(store.range(b"c", b"a"))
    assert dict(store.range(b"ab", b"ac")) == {b"ab": b"vab", b"abc": b"vabc"}


def test_prefix_scans_carry_past_ff_bytes(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch(dict.fromkeys(ORDERED, b"x"), None)
    keys = lambda it: [k for k, _ in it]  # noqa: E731
    assert keys(store.prefix(b"a")) == [b"a", b"a\x00", b"ab", b"abc", b"a\xff"]
    assert keys(store.prefix(b"a\xff")) == [b"a\xff"]
    assert keys(store.prefix(b"ab")) == [b"ab", b"abc"]
    assert keys(store.prefix(b"\xff")) == [b"\xff", b"\xff\xff"]
    assert keys(store.prefix(b"")) == ORDERED
    assert keys(store.prefix(b"zz")) == []
    with pytest.raises(TypeError, match="bytes"):
        store.prefix("a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        store.range("a", None)  # type: ignore[arg-type]


def test_range_skips_expired_and_returns_user_values(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(ttl_ms=100, clock=clock)
    store.write_batch(dict(zip([b"k1", b"k2"], store.encode_values([b"1", b"2"]))), None)
    clock.advance_ms(60)
    store.write_batch(dict(zip([b"k3"], store.encode_values([b"3"]))), None)
    clock.advance_ms(40)
    assert list(store.range(b"k", None)) == [(b"k3", b"3")]
    assert list(store.prefix(b"k")) == [(b"k3", b"3")]


def test_range_on_a_closed_store_raises(make_store: StoreFactory) -> None:
    store = make_store()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.range(None, None)


def test_range_does_not_see_writes_made_after_it_started(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch({b"a": b"1", b"b": b"2", b"c": b"3"}, None)
    scan = store.range(None, None)
    assert next(scan) == (b"a", b"1")
    store.write_batch({b"b": None, b"bb": b"new"}, None)
    assert list(scan) == [(b"b", b"2"), (b"c", b"3")]
    assert list(store.range(None, None)) == [(b"a", b"1"), (b"bb", b"new"), (b"c", b"3")]


def test_rocksdb_abandoned_range_iterator_does_not_keep_lock(tmp_path: Path) -> None:
    store = RocksDBStore(tmp_path / "d", "s", 0)
    store.write_batch({b"a": b"1", b"b": b"2"}, 0)
    it = store.range(b"a", b"z")
    next(it)
    del it
    store.close()
    RocksDBStore(tmp_path / "d", "s", 0).close()


# --- property: the store behaves like a sorted dict ---------------------------------------------

# a small alphabet with the edge bytes makes shared prefixes and 0xff carries common
small_keys = st.lists(st.sampled_from([0x00, 0x01, 0x61, 0xFE, 0xFF]), max_size=3).map(bytes)
batches = st.lists(
    st.dictionaries(small_keys, st.one_of(st.none(), st.binary(max_size=4)), max_size=12),
    min_size=1, max_size=6,
)
bounds = st.one_of(st.none(), small_keys)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=batches, start=bounds, end=bounds, prefix=small_keys)
def test_scans_match_a_dict_model(
    make_store: StoreFactory,
    batches: list[dict[bytes, bytes | None]],
    start: bytes | None,
    end: bytes | None,
    prefix: bytes,
) -> None:
    store = make_store()
    model = {k: v for k, v in store.items()}  # the store may hold earlier examples' data
    for batch in batches:
        store.write_batch(batch, None)
        for key, value in batch.items():
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
    in_range = sorted(
        (k, v) for k, v in model.items()
        if (start is None or k >= start) and (end is None or k < end)
    )
    assert list(store.range(start, end)) == in_range
    assert list(store.prefix(prefix)) == sorted(
        (k, v) for k, v in model.items() if k.startswith(prefix)
    )
    assert list(store.items()) == sorted(model.items())
    store.close()
