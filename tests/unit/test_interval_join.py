"""Interval joins (stream-stream, on a key, within a time bound) against a brute-force oracle.

The oracle knows nothing of buffers or expiry: it replays the arrival order to learn the stream
time each record arrives at (per partition: the max event time before its batch, then the
running maximum of its batch), calls a record late when no on-time record of the other side can
match it any more (left: ``t + after + grace < stream time``; right: ``t + before + grace <
stream time``), and then pairs every on-time left and right record of one key and partition
whose times are within ``[left - before, left + after]``. Outer sides add their on-time records
without a partner.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.streams import InProcessTestDriver, Topology
from headwater.streams.topology import TopologyError

HOWS = ("inner", "left", "right", "outer")


@dataclass(frozen=True)
class Event:
    side: str  # "L" or "R"
    key: str
    ts: int
    partition: int
    id: int


def join_topology(how: str, before: int, after: int, grace: int) -> Topology:
    """orders (left) joined with payments (right) by record key; late records to ``late``."""
    topology = Topology("interval-join-oracle", idle_timeout="1s")
    orders = topology.source("orders", value_format="json", event_time="ts")
    payments = topology.source("payments", value_format="json", event_time="ts")
    joined = orders.join(payments, store="op", before=before, after=after, grace=grace,
                         how=how, co_partitioned=True)
    joined.to_topic("out")
    joined.late.to_topic("late")
    return topology


def feed(driver: InProcessTestDriver, batches: list[list[Event]], crash_at: int | None = None
         ) -> None:
    for n, batch in enumerate(batches):
        first = batch[0]
        topic = "orders" if first.side == "L" else "payments"
        driver.pipe(topic, [{"id": e.id, "ts": e.ts, "side": e.side} for e in batch],
                    keys=[e.key for e in batch], partition=first.partition)
        if n == crash_at:
            driver.crash(after="pre_commit")
    driver.advance_time(10**9)  # every task idles: stream time passes every expiry


def oracle(batches: list[list[Event]], how: str, before: int, after: int, grace: int
           ) -> tuple[Counter, set[int]]:
    """(Counter of (left id | None, right id | None), ids of late records)."""
    stream_time: dict[int, int] = {}
    on_time, late = [], set()
    for batch in batches:
        p = batch[0].partition
        observed = stream_time.get(p)
        for e in batch:
            observed = e.ts if observed is None else max(observed, e.ts)
            reach = after if e.side == "L" else before
            (late.add(e.id) if e.ts + reach + grace < observed else on_time.append(e))
        stream_time[p] = observed
    lefts = [e for e in on_time if e.side == "L"]
    rights = [e for e in on_time if e.side == "R"]
    out: Counter = Counter()
    paired: set[int] = set()
    for a in lefts:
        for b in rights:
            if (a.key, a.partition) == (b.key, b.partition) and a.ts - before <= b.ts <= a.ts + after:
                out[(a.id, b.id)] += 1
                paired |= {a.id, b.id}
    if how in ("left", "outer"):
        out.update((a.id, None) for a in lefts if a.id not in paired)
    if how in ("right", "outer"):
        out.update((None, b.id) for b in rights if b.id not in paired)
    return out, late


def engine(driver: InProcessTestDriver) -> tuple[Counter, set[int]]:
    pairs = Counter()
    for record in driver.read("out"):
        row = orjson.loads(record.value)
        if row.get("side") == "R":  # the left side never had a record: no left columns known
            pairs[(None, row["id"])] += 1
        else:
            pairs[(row.get("id"), row.get("id_right"))] += 1
    late = {orjson.loads(r.value)["id"] for r in driver.read("late")}
    return pairs, late


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 40))
    events, batches = [], []
    for i in range(n):
        events.append(Event(draw(st.sampled_from("LR")), draw(st.sampled_from(["a", "b", "c"])),
                            draw(st.integers(0, 300)), draw(st.integers(0, 1)), i))
    i = 0
    while i < n:  # consecutive events of one side and partition form a batch of random size
        size = draw(st.integers(1, 4))
        batch = [events[i]]
        while len(batch) < size and i + len(batch) < n and \
                (events[i + len(batch)].side, events[i + len(batch)].partition) == \
                (batch[0].side, batch[0].partition):
            batch.append(events[i + len(batch)])
        batches.append(batch)
        i += len(batch)
    bounds = (draw(st.integers(0, 60)), draw(st.integers(0, 60)), draw(st.integers(0, 40)))
    return batches, bounds


@pytest.mark.parametrize("how", HOWS)
@settings(max_examples=int(os.environ.get("HEADWATER_JOIN_EXAMPLES", 50)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_interval_join_equals_the_brute_force_oracle(how, scenario) -> None:
    batches, (before, after, grace) = scenario
    driver = InProcessTestDriver(join_topology(how, before, after, grace), partitions=2)
    feed(driver, batches)
    assert engine(driver) == oracle(batches, how, before, after, grace)


@pytest.mark.parametrize("how", ["inner", "outer"])
@settings(max_examples=int(os.environ.get("HEADWATER_JOIN_EXAMPLES", 50)) // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), data=st.data())
def test_a_crash_between_staging_and_the_commit_changes_no_result(how, scenario, data) -> None:
    batches, (before, after, grace) = scenario
    crash_at = data.draw(st.integers(0, len(batches) - 1))
    driver = InProcessTestDriver(join_topology(how, before, after, grace), partitions=2)
    feed(driver, batches, crash_at=crash_at)
    assert engine(driver) == oracle(batches, how, before, after, grace)


def test_one_order_two_payment_attempts_gives_two_rows_and_a_late_payment_none() -> None:
    driver = InProcessTestDriver(join_topology("left", 0, 600_000, 0), partitions=1)
    driver.pipe("orders", [{"id": 1, "ts": 1_000}], keys=["corr-1"])
    driver.pipe("payments", [{"id": 2, "ts": 2_000}, {"id": 3, "ts": 9_000}], keys=["corr-1"] * 2)
    driver.pipe("orders", [{"id": 4, "ts": 700_000}], keys=["corr-2"])  # never paid
    driver.pipe("payments", [{"id": 5, "ts": 50_000}], keys=["corr-3"])  # late: 50s + 0 < 700s
    driver.advance_time(10**9)
    rows = [orjson.loads(r.value) for r in driver.read("out")]
    assert [(r["id"], r["id_right"]) for r in rows] == [(1, 2), (1, 3), (4, None)]
    assert [r.timestamp_ms for r in driver.read("out")] == [2_000, 9_000, 700_000]
    late = [orjson.loads(r.value) for r in driver.read("late")]
    assert [(r["id"], r["late_by_ms"]) for r in late] == [(5, 650_000)]


def test_unmatched_rows_carry_the_other_sides_columns_as_nulls_after_a_restart() -> None:
    topology = join_topology("outer", 0, 10, 0)
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("payments", [{"id": 1, "ts": 5, "amount": 2.5}], keys=["k"])
    driver.pipe("orders", [{"id": 2, "ts": 100}], keys=["other"])
    driver.crash(after="commit")  # a new "process": nothing in memory, state restored
    driver.advance_time(10**9)
    rows = {orjson.loads(r.value)["id" if r.key == b"other" else "id_right"]:
            orjson.loads(r.value) for r in driver.read("out")}
    assert rows[1] == {"id": None, "ts": None, "id_right": 1, "ts_right": 5, "amount": 2.5}
    assert rows[2] == {"id": 2, "ts": 100, "id_right": None, "ts_right": None, "amount": None}


def test_a_join_without_a_key_dead_letters_inner_rows_and_emits_outer_ones() -> None:
    driver = InProcessTestDriver(join_topology("left", 0, 10, 0), partitions=1)
    driver.pipe("orders", [{"id": 1, "ts": 5}], keys=[None])
    driver.pipe("payments", [{"id": 2, "ts": 5}], keys=[None])
    assert [orjson.loads(r.value)["id"] for r in driver.read("out")] == [1]
    assert [(d.error_class, d.source_topic) for d in driver.dead_letters] == [
        ("MissingKeyError", "payments")]


def test_join_declarations_are_checked_when_the_topology_is_built() -> None:
    topology = Topology("bad")
    a = topology.source("a", value_format="json")
    b = topology.source("b", value_format="json")
    with pytest.raises(TopologyError, match="how must be one of"):
        a.join(b, store="s1", how="cross")  # type: ignore[arg-type]
    with pytest.raises(TopologyError, match="after"):
        a.join(b, store="s2", after="-5s")
    with pytest.raises(TopologyError, match="one topology"):
        a.join(Topology("other").source("c"), store="s3")
    a.join(b, store="s4", after="1m")
    with pytest.raises(TopologyError, match="used by two operators"):
        a.join(b, store="s4")
    assert topology.copartition_groups() == [frozenset({"a", "b"})]


def test_key_by_sends_both_sides_through_their_own_repartition_topics() -> None:
    topology = Topology("keyed", idle_timeout=None)
    orders = topology.source("orders", value_format="json", event_time="ts")
    payments = topology.source("payments", value_format="json", event_time="ts")
    joined = orders.key_by("corr").join(payments.key_by("corr"), store="op", after=100)
    joined.select(pl.col("id"), pl.col("id_right")).to_topic("out")
    assert {"op-left-repartition", "op-right-repartition"} <= set(topology.sources)
    assert frozenset({"op-left-repartition", "op-right-repartition"}) in \
        topology.copartition_groups()
    driver = InProcessTestDriver(topology, partitions=3)
    driver.pipe("orders", [{"id": 1, "ts": 10, "corr": "x"}], keys=["u1"], partition=0)
    driver.pipe("payments", [{"id": 2, "ts": 20, "corr": "x"}], keys=["p9"], partition=2)
    assert [orjson.loads(r.value) for r in driver.read("out")] == [{"id": 1, "id_right": 2}]
