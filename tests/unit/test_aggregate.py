"""The aggregate operator: null semantics, stored layout and its version checks."""

from __future__ import annotations

import math

import polars as pl
import pytest

from headwater.state import MemoryStore, StateError, WriteBackCache
from headwater.streams import InProcessTestDriver, Topology, agg
from headwater.streams.aggregate import Aggregate
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC


def stats_driver() -> InProcessTestDriver:
    topology = Topology("stats")
    topology.source("in", value_format="json").aggregate(
        "stats", n=agg.count(), total=agg.sum("x"), lo=agg.min("x"), hi=agg.max("x")
    ).to_topic("out")
    return InProcessTestDriver(topology)


def test_min_max_ignore_nulls_and_stay_null_until_a_value_arrives() -> None:
    driver = stats_driver()
    driver.pipe("in", [{"x": None}, {"x": None}], keys=["a", "a"])
    driver.pipe("in", [{"x": 3}, {"x": None}, {"x": 5}], keys=["a", "a", "a"])
    driver.pipe("in", [{"x": None}], keys=["a"])
    driver.pipe("in", [{"x": -1}, {"x": None}], keys=["a", "a"])
    assert driver.read_json("out") == [
        {"n": 2, "total": 0.0, "lo": None, "hi": None},  # never saw a value: null, not +-inf/NaN
        {"n": 5, "total": 8.0, "lo": 3.0, "hi": 5.0},
        {"n": 6, "total": 8.0, "lo": 3.0, "hi": 5.0},  # all-null batch: min/max unchanged
        {"n": 8, "total": 7.0, "lo": -1.0, "hi": 5.0},
    ]


def test_all_null_keys_mixed_with_valued_keys_in_one_batch() -> None:
    driver = stats_driver()
    driver.pipe("in", [{"x": None}, {"x": 2}, {"x": None}], keys=["empty", "full", "empty"])
    driver.pipe("in", [{"x": 4}, {"x": None}], keys=["empty", "full"])
    by_batch = driver.read_json("out")
    assert by_batch == [
        {"n": 2, "total": 0.0, "lo": None, "hi": None},
        {"n": 1, "total": 2.0, "lo": 2.0, "hi": 2.0},
        {"n": 3, "total": 4.0, "lo": 4.0, "hi": 4.0},
        {"n": 2, "total": 2.0, "lo": 2.0, "hi": 2.0},
    ]


class Ctx:
    """A minimal ProcessingContext: one memory store per partition behind a cache."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.stores: dict[int, WriteBackCache] = {}
        self.given = store

    def state(self, name: str, partition: int) -> WriteBackCache:
        if partition not in self.stores:
            self.stores[partition] = WriteBackCache(self.given or MemoryStore(name, partition))
        return self.stores[partition]

    def dead_letter(self, rows: pl.DataFrame, error: BaseException, operator: str) -> None:
        raise AssertionError(f"unexpected dead letter: {error}")


def frame(keys: list[str], xs: list[float | None], partition: int = 0) -> pl.DataFrame:
    n = len(keys)
    return pl.DataFrame({
        KEY: keys, TOPIC: ["in"] * n, PARTITION: [partition] * n, OFFSET: list(range(n)),
        TIMESTAMP: [0] * n, "x": pl.Series(xs, dtype=pl.Float64),
    })


def test_nan_is_ignored_by_min_max_like_null() -> None:
    op = Aggregate("s", {"lo": agg.min("x"), "hi": agg.max("x"), "total": agg.sum("x")})
    ctx = Ctx()
    out = op.apply(frame(["a", "a", "b"], [math.nan, 2.0, math.nan]), ctx)
    assert out.select("lo", "hi").rows() == [(2.0, 2.0), (None, None)]
    assert math.isnan(out["total"][0])  # IEEE: NaN in a sum stays NaN (documented)
    out = op.apply(frame(["b"], [-7.5]), ctx)
    assert out.select("lo", "hi").rows() == [(-7.5, -7.5)]


def test_store_of_another_aggregate_definition_fails_with_the_store_name() -> None:
    store = MemoryStore("per-user", 4)
    op = Aggregate("per-user", {"n": agg.count()})
    writer = Ctx(store)
    op.apply(frame(["a"], [1.0], 4), writer)
    writer.state("per-user", 4).flush(None)
    changed = Aggregate("per-user", {"n": agg.count(), "biggest": agg.max("x")})
    with pytest.raises(StateError, match="was written with layout") as info:
        changed.apply(frame(["b", "a"], [1.0, 2.0], 4), Ctx(store))
    assert (info.value.store, info.value.partition) == ("per-user", 4)
    assert "(key b'a')" in str(info.value) and "new store name" in str(info.value)
    # the same definition keeps reading it
    assert op.apply(frame(["a"], [1.0], 4), Ctx(store))["n"].to_list() == [2]


def test_keys_without_stored_rows_next_to_stored_ones() -> None:
    op = Aggregate("s", {"n": agg.count(), "hi": agg.max("x")})
    ctx = Ctx()
    op.apply(frame(["a", "c"], [1.0, 3.0]), ctx)
    out = op.apply(frame(["a", "b", "c", "d"], [10.0, None, 0.0, 4.0]), ctx)
    assert out.select(KEY, "n", "hi").rows() == [
        ("a", 2, 10.0), ("b", 1, None), ("c", 2, 3.0), ("d", 1, 4.0)
    ]
