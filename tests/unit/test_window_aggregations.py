"""Window aggregations beyond count/sum/mean: first/last, distinct counts (exact and HLL),
quantiles (KLL), collect and user-defined aggregates; against brute-force oracles, through the
operator (driver) and through the accumulator interface session windows use (fold, reduce)."""

from __future__ import annotations

import math
from collections import defaultdict

import datasketches as ds
import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.state.errors import StateError
from headwater.streams import InProcessTestDriver, Topology, TopologyError, agg
from headwater.streams.accumulators import Accumulators
from headwater.streams.aggregate import UdfStateError
from headwater.streams.records import OFFSET, TIMESTAMP
from headwater.streams.var_accumulators import fingerprints
from headwater.streams.windows import Window, hopping, tumbling


def _stats_add(acc: dict, rows: pl.DataFrame) -> dict:
    total = rows.get_column("x").cast(pl.Float64).sum() if "x" in rows.columns else 0.0
    return {"n": acc["n"] + rows.height, "sum": acc["sum"] + (total or 0.0)}


def _stats_merge(a: dict, b: dict) -> dict:
    return {"n": a["n"] + b["n"], "sum": a["sum"] + b["sum"]}


def all_kinds() -> dict[str, agg.Agg]:
    return dict(
        n=agg.count(), total=agg.sum("x"), avg=agg.mean("x"), lo=agg.min("x"), hi=agg.max("x"),
        first=agg.first("x"), last=agg.last("x"),
        distinct=agg.count_distinct("u"), xdistinct=agg.count_distinct("x"),
        approx=agg.approx_count_distinct("u"), q=agg.quantiles("x", [0.5, 0.9]),
        p99=agg.percentile("x", 0.99), firsts=agg.collect("u", limit=3),
        lasts=agg.collect("x", limit=2, keep="last"),
        stats=agg.udf(lambda: {"n": 0, "sum": 0.0}, _stats_add, _stats_merge),
    )


def nearest_rank(values: list[float], q: float) -> float:
    return float(np.quantile(np.array(values), q, method="inverted_cdf"))


def expected(records: list[tuple[int, int, float | None, str | None]]) -> dict:
    """The aggregates of ``records`` (event time, offset, x, u), computed directly."""
    xs = sorted((t, o, x) for t, o, x, _ in records if x is not None)
    us = sorted((t, o, u) for t, o, _, u in records if u is not None)
    vals = [x for _, _, x in xs]
    return {
        "n": len(records), "total": float(sum(vals)),
        "avg": sum(vals) / len(vals) if vals else None,
        "lo": min(vals) if vals else None, "hi": max(vals) if vals else None,
        "first": xs[0][2] if xs else None, "last": xs[-1][2] if xs else None,
        "distinct": len({u for _, _, u in us}), "xdistinct": len(set(vals)),
        "approx": len({u for _, _, u in us}),
        "q": {f"p{p}": nearest_rank(vals, p / 100) if vals else None for p in (50, 90)},
        "p99": nearest_rank(vals, 0.99) if vals else None,
        "firsts": [u for _, _, u in us[:3]], "lasts": [x for _, _, x in xs[-2:]],
        "stats": {"n": len(records), "sum": float(sum(vals))},
    }


def rounded(value):
    if isinstance(value, float) and not math.isnan(value):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


# --- through the operator: random keys, disorder, batch cuts, lateness ------------------------

def windowed(window: Window, emit: str = "final") -> Topology:
    topology = Topology("aggs")
    result = topology.source("in", value_format="json").window(window).aggregate(
        "w", emit=emit, **all_kinds())
    result.to_topic("out")
    result.late.to_topic("late")
    return topology


windows = st.one_of(
    st.builds(lambda s, g: tumbling(s, grace=g), st.integers(5, 40), st.integers(0, 20)),
    st.builds(lambda s, a, g: hopping(s * a, a, grace=g), st.integers(1, 3), st.integers(5, 15),
              st.integers(0, 20)),
)
records = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 200),
                             st.one_of(st.none(), st.integers(-5, 5).map(float)),
                             st.one_of(st.none(), st.sampled_from(["u1", "u2", "u3", "u4"]))),
                   min_size=1, max_size=40)


def oracle(window: Window, batches: list[list[tuple]]) -> dict:
    """Records per (key, window) that were not late (see test_windows.oracle), with offsets."""
    stream_time, state, offset = None, defaultdict(list), 0
    for batch in batches:
        for key, ts, x, u in batch:
            stream_time = ts if stream_time is None else max(stream_time, ts)
            first = (ts // window.advance_ms) * window.advance_ms
            for start in range(first, ts - window.size_ms, -window.advance_ms):
                end = start + window.size_ms
                if end + window.grace_ms > stream_time:
                    state[(key, start, end)].append((ts, offset, x, u))
            offset += 1
    return state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=windows, batches=st.lists(records, min_size=1, max_size=4),
       emit=st.sampled_from(["final", "update"]))
def test_every_kind_equals_a_brute_force_oracle_whatever_the_batch_cuts(window, batches,
                                                                         emit) -> None:
    driver = InProcessTestDriver(windowed(window, emit), partitions=1)
    for batch in batches:
        driver.pipe("in", [{"x": x, "u": u} for _, _, x, u in batch],
                    keys=[k for k, *_ in batch], timestamps_ms=[t for _, t, _, _ in batch])
    stream_time = max(t for batch in batches for _, t, _, _ in batch)
    flush = stream_time + window.size_ms + window.grace_ms + 1_000
    driver.pipe("in", [{"x": None, "u": None}], keys=["~flush"], timestamps_ms=[flush])
    assert not driver.dead_letters
    results = defaultdict(list)
    for record in driver.read("out"):
        row = orjson.loads(record.value)
        if record.key != b"~flush":
            window_id = (record.key.decode(), row.pop("window_start"), row.pop("window_end"))
            results[window_id].append(rounded(row))
    want = {w: rounded(expected(recs)) for w, recs in oracle(window, batches).items()}
    assert {w: rows[-1] for w, rows in results.items()} == want
    if emit == "final":
        assert all(len(rows) == 1 for rows in results.values())


def test_a_windowed_aggregate_of_every_kind_emits_final_results() -> None:
    driver = InProcessTestDriver(windowed(tumbling("1m")), partitions=1)
    driver.pipe("in", [{"x": 1.0, "u": "a"}, {"x": 2.0, "u": "b"}, {"x": None, "u": "a"}],
                keys=["k"] * 3, timestamps_ms=[5, 3, 4])
    driver.pipe("in", [{"x": 7.0, "u": "c"}], keys=["k"], timestamps_ms=[1])
    assert driver.read_json("out") == []
    driver.pipe("in", [{"x": 0.0, "u": "z"}], keys=["other"], timestamps_ms=[120_000])
    assert driver.read_json("out") == [{
        "window_start": 0, "window_end": 60_000, "n": 4, "total": 10.0, "avg": 10 / 3,
        "lo": 1.0, "hi": 7.0, "first": 7.0, "last": 1.0, "distinct": 3, "xdistinct": 3,
        "approx": 3, "q": {"p50": 2.0, "p90": 7.0}, "p99": 7.0, "firsts": ["c", "b", "a"],
        "lasts": [2.0, 1.0], "stats": {"n": 4, "sum": 10.0}}]
    assert driver.store("w")  # the other key's window is still open, stored as window rows v2
    assert all(v[0] == 5 for v in driver.store("w").values())


def test_fixed_width_aggregates_alone_keep_the_v1_format() -> None:
    topology = Topology("fixed")
    topology.source("in", value_format="json").window(tumbling("1m")).aggregate(
        "w", n=agg.count(), first=agg.first("x"), last=agg.last("x")).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"x": 3.0}, {"x": 4.0}], keys=["k", "k"], timestamps_ms=[2, 2])
    assert [v[0] for v in driver.store("w").values()] == [3]  # window rows v1
    driver.pipe("in", [{"x": 0.0}], keys=["k"], timestamps_ms=[60_000])
    assert driver.read_json("out") == [{"window_start": 0, "window_end": 60_000, "n": 2,
                                        "first": 3.0, "last": 4.0}]  # tie on time: by offset


def test_running_aggregates_reject_window_only_kinds_when_the_topology_is_built() -> None:
    stream = Topology("t").source("in", value_format="json")
    with pytest.raises(TopologyError, match="quantiles is for window aggregates"):
        stream.aggregate("running", p=agg.quantiles("x"))
    with pytest.raises(TopologyError, match="count_distinct, last is for window aggregates"):
        stream.aggregate("running2", d=agg.count_distinct("x"), l=agg.last("x"))


def test_a_udf_whose_accumulator_is_not_json_fails_clearly() -> None:
    with pytest.raises(UdfStateError, match="JSON-serializable"):
        agg.udf(lambda: {1, 2}, lambda a, r: a, lambda a, b: a)
    topology = Topology("udf")
    topology.source("in", value_format="json").window(tumbling("1m")).aggregate(
        "w", s=agg.udf(lambda: [], lambda acc, rows: {"rows": {1, 2}}, lambda a, b: a),
    ).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"x": 1}], keys=["k"], timestamps_ms=[1])
    [letter] = driver.dead_letters
    assert letter.error_class == "UdfStateError"
    assert "udf 's': its accumulator (dict) cannot be stored as JSON" in letter.error_message


def test_sketch_settings_are_checked_when_defined() -> None:
    with pytest.raises(ValueError, match="lg_k"):
        agg.approx_count_distinct("x", lg_k=30)
    with pytest.raises(ValueError, match="qs"):
        agg.quantiles("x", [1.5])
    with pytest.raises(ValueError, match="limit"):
        agg.collect("x", limit=0)


# --- the accumulator interface: fold per batch, reduce (session merges), state -------------------

def frame_of(recs: list[tuple[int, int, float | None, str | None, int]]) -> pl.DataFrame:
    return pl.DataFrame(recs, schema={TIMESTAMP: pl.Int64, OFFSET: pl.Int64, "x": pl.Float64,
                                      "u": pl.String, "row": pl.Int64}, orient="row")


def fold_batches(acc: Accumulators, batches: list[pl.DataFrame], n_rows: int) -> list[bytes | None]:
    """What a window operator does: per batch, partials per row id, load, fold, encode."""
    stored: list[bytes | None] = [None] * n_rows
    for batch in batches:
        partials = batch.group_by("row", maintain_order=True).agg(
            pl.col(OFFSET).max(), *acc.partials)
        ids = partials.get_column("row").to_list()
        keys = [b"row%d" % i for i in ids]
        rows = acc.load([stored[i] for i in ids], store="s", partition=0, keys=keys)
        for i, value in zip(ids, acc.encode(acc.fold(rows, partials)), strict=True):
            stored[i] = value
    return stored


def outputs(acc: Accumulators, rows) -> list[dict]:
    return [rounded(r) for r in pl.DataFrame(acc.columns(rows)).to_dicts()]


reduce_records = st.lists(
    st.tuples(st.integers(0, 50), st.one_of(st.none(), st.integers(-5, 5).map(float)),
              st.one_of(st.none(), st.sampled_from(["u1", "u2", "u3", "u4", "u5"])),
              st.integers(0, 5)),
    min_size=0, max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=reduce_records, cuts=st.lists(st.integers(0, 60), max_size=4),
       groups=st.lists(st.integers(0, 2), min_size=6, max_size=6))
def test_reduce_merges_rows_into_the_aggregates_of_the_union_of_their_records(
        recs, cuts, groups) -> None:
    acc = Accumulators(all_kinds(), "test")
    full = [(t, off, x, u, row) for off, (t, x, u, row) in enumerate(recs)]
    bounds = sorted({0, len(full), *(c for c in cuts if c <= len(full))})
    batches = [frame_of(full[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    stored = fold_batches(acc, batches, 6)
    rows = acc.load(stored, store="s", partition=0, keys=[b"row%d" % i for i in range(6)])
    merged = acc.reduce(rows, np.array(groups), 3)
    want = [rounded(expected([(t, o, x, u) for t, o, x, u, row in full if groups[row] == g]))
            for g in range(3)]
    assert outputs(acc, merged) == want
    offsets = [max((off for _, off, _, _, row in full if groups[row] == g), default=-1)
               for g in range(3)]
    assert acc.offsets(merged).tolist() == offsets
    # round trip: what reduce gives encodes and loads back to the same outputs
    again = acc.load(acc.encode(merged), store="s", partition=0, keys=[b"a", b"b", b"c"])
    assert outputs(acc, again) == want
    assert outputs(acc, acc.take(merged, [2, 0])) == [want[2], want[0]]


def test_identities_show_what_an_empty_window_holds() -> None:
    acc = Accumulators(all_kinds(), "test")
    assert outputs(acc, acc.identities(1)) == [rounded(expected([]))]
    assert len(acc.identities(3)) == 3


def test_a_store_written_by_another_layout_or_corrupt_fails_naming_store_partition_key() -> None:
    fixed = Accumulators({"n": agg.count()}, "tumbling(60000)")
    sketchy = Accumulators({"n": agg.count(), "d": agg.approx_count_distinct("u")},
                           "tumbling(60000)")
    other_k = Accumulators({"n": agg.count(), "d": agg.approx_count_distinct("u", lg_k=14)},
                           "tumbling(60000)")
    value = sketchy.encode(sketchy.identities(1))[0]
    with pytest.raises(StateError, match=r"'w' was written as window rows v1 \(key b'k1'\)"):
        sketchy.load([None, fixed.encode(fixed.identities(1))[0]], store="w", partition=3,
                     keys=[b"k0", b"k1"])
    with pytest.raises(StateError, match=r"'w' was written as window rows v2 \(key b'k'\)"):
        fixed.load([value], store="w", partition=3, keys=[b"k"])
    with pytest.raises(StateError, match="written with layout window rows v2/") as err:
        other_k.load([value], store="w", partition=3, keys=[b"k"])
    assert err.value.partition == 3
    for broken in (value[:-1], value + b"\x00", value[:sketchy._codec.width + 2]):
        with pytest.raises(StateError, match=r"key b'k2'\) whose .* corrupt"):
            sketchy.load([None, broken], store="w", partition=1, keys=[b"k1", b"k2"])


def test_collect_strings_and_numbers_keep_their_order_and_type() -> None:
    acc = Accumulators({"s": agg.collect("u", limit=2, keep="last"), "v": agg.collect("x")},
                       "t")
    stored = fold_batches(acc, [frame_of([(5, 0, 1.5, "a", 0), (1, 1, None, "b", 0)]),
                                frame_of([(5, 2, 2.5, "c", 0)])], 1)
    rows = acc.load(stored, store="s", partition=0, keys=[b"k"])
    assert pl.DataFrame(acc.columns(rows)).to_dicts() == [{"s": ["a", "c"], "v": [1.5, 2.5]}]
    empty = acc.columns(acc.identities(1))[1]
    assert empty.dtype == pl.List(pl.Null)  # no value seen: fits beside any list type
    both = pl.concat([empty.to_frame(), pl.DataFrame({"v": [["x"]]})], how="vertical_relaxed")
    assert both.schema["v"] == pl.List(pl.String)


def test_fingerprints_are_stable_and_integers_equal_whole_floats() -> None:
    ints = fingerprints(pl.Series([1, -1, 2**62]))
    assert (ints == fingerprints(pl.Series([1.0, -1.0, float(2**62)]))).all()
    assert len(set(fingerprints(pl.Series([0.5, 1.5, 0.0, -0.0])).tolist())) == 3
    # fixed values, so a change of the hash (which would misread every stored set) fails here
    assert fingerprints(pl.Series(["user-1"])).tolist() == [
        int.from_bytes(__import__("hashlib").blake2b(b"user-1", digest_size=8).digest(),
                       "little")]
    assert fingerprints(pl.Series([0])).tolist() == [0xE220A8397B1DCDAF]
    with pytest.raises(TypeError, match="not List"):
        fingerprints(pl.Series([[1]]))


# --- sketch accuracy at high cardinality -------------------------------------------------------

def test_hll_stays_within_its_documented_error_and_exact_below_warmup() -> None:
    acc = Accumulators({"exact": agg.count_distinct("u"),
                        "approx": agg.approx_count_distinct("u")}, "t")
    rng = np.random.default_rng(12)
    users = [f"user-{i}" for i in rng.integers(0, 60_000, 150_000)]
    recs = [(i, i, None, u, i % 2) for i, u in enumerate(users)]  # two rows (sessions)
    batches = [frame_of(recs[i:i + 30_000]) for i in range(0, len(recs), 30_000)]
    rows = acc.load(fold_batches(acc, batches, 2), store="s", partition=0, keys=[b"a", b"b"])
    one = acc.reduce(rows, np.array([0, 0]), 1)
    rse = ds.hll_sketch.get_rel_err(False, True, 12, 1)  # unioned, one standard deviation
    assert rse == pytest.approx(0.0162, abs=2e-4)
    for r in pl.DataFrame(acc.columns(rows)).to_dicts() + \
            pl.DataFrame(acc.columns(one)).to_dicts():
        assert abs(r["approx"] - r["exact"]) <= 3 * rse * r["exact"], r
    small = [(i, i, None, f"v{i % 150}", 0) for i in range(400)]
    rows = acc.load(fold_batches(acc, [frame_of(small)], 1), store="s", partition=0, keys=[b"k"])
    assert pl.DataFrame(acc.columns(rows)).to_dicts() == [{"exact": 150, "approx": 150}]


def test_kll_quantiles_stay_within_the_normalized_rank_error() -> None:
    acc = Accumulators({"q": agg.quantiles("x", [0.5, 0.95, 0.99])}, "t")
    rng = np.random.default_rng(5)
    values = rng.lognormal(3.0, 1.0, 50_000)
    recs = [(i, i, float(v), None, i % 3) for i, v in enumerate(values)]
    batches = [frame_of(recs[i:i + 7_000]) for i in range(0, len(recs), 7_000)]
    rows = acc.load(fold_batches(acc, batches, 3), store="s", partition=0,
                    keys=[b"a", b"b", b"c"])
    merged = acc.reduce(rows, np.array([0, 0, 0]), 1)
    eps = ds.kll_doubles_sketch.get_normalized_rank_error(200, True)
    assert eps == pytest.approx(0.0165, abs=1e-4)
    got = pl.DataFrame(acc.columns(merged)).to_dicts()[0]["q"]
    ordered = np.sort(values)
    for field, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        rank = np.searchsorted(ordered, got[field], side="right") / len(ordered)
        assert abs(rank - q) <= eps, (field, rank)


def test_a_udf_sees_the_chosen_columns_ordered_by_event_time_and_merges() -> None:
    seen: list[list[str]] = []

    def accumulate(acc: list, rows: pl.DataFrame) -> list:
        seen.append(rows.columns)
        return acc + rows.get_column("u").to_list()

    acc = Accumulators({"us": agg.udf(list, accumulate, lambda a, b: a + b, lambda a: ",".join(a),
                                      columns=["u", TIMESTAMP])}, "t")
    stored = fold_batches(acc, [frame_of([(5, 0, None, "late", 0), (1, 1, None, "early", 0)]),
                                frame_of([(3, 2, None, "other", 1)])], 2)
    rows = acc.load(stored, store="s", partition=0, keys=[b"a", b"b"])
    assert seen[0] == ["u", TIMESTAMP]
    assert acc.columns(rows)[0].to_list() == ["early,late", "other"]
    assert acc.columns(acc.reduce(rows, np.array([0, 0]), 1))[0].to_list() == ["early,late,other"]
