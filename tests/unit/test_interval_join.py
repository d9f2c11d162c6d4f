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
import random
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


def feed(driver: InProcessTestDriver, batches: list[list[Event]]) -> None:
    for batch in batches:
        first = batch[0]
        topic = "orders" if first.side == "L" else "payments"
        driver.pipe(topic, [{"id": e.id, "ts": e.ts, "side": e.side} for e in batch],
                    keys=[e.key for e in batch], partition=first.partition)
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


@pytest.mark.parametrize("seed", range(int(os.environ.get("HEADWATER_JOIN_EXAMPLES", 50)) * 2))
def test_a_crash_replays_uncommitted_batches_and_changes_no_result(seed) -> None:
    """Checkpoints at random, then one crash of a random kind: the uncommitted batches are
    replayed (the driver reads each topic's unread records of all partitions as one batch), and
    the result equals the oracle over the batches as they were finally processed."""
    rnd = random.Random(seed)
    how = rnd.choice(HOWS)
    before, after, grace = rnd.randint(0, 60), rnd.randint(0, 60), rnd.randint(0, 40)
    driver = InProcessTestDriver(join_topology(how, before, after, grace), partitions=2,
                                 auto_checkpoint=False)
    processed: list[list[Event]] = []
    pending: list[list[Event]] = []
    crash_at, n_batches, next_id = rnd.randint(0, 12), rnd.randint(1, 14), 0
    for n in range(n_batches):
        side, part = rnd.choice("LR"), rnd.randint(0, 1)
        batch = []
        for _ in range(rnd.randint(1, 4)):
            batch.append(Event(side, rnd.choice("abc"), rnd.randint(0, 300), part, next_id))
            next_id += 1
        driver.pipe("orders" if side == "L" else "payments",
                    [{"id": e.id, "ts": e.ts, "side": side} for e in batch],
                    keys=[e.key for e in batch], partition=part)
        pending.append(batch)
        if rnd.random() < 0.3:
            driver.checkpoint()
            processed, pending = processed + pending, []
        if n == crash_at:
            step = rnd.choice(["processing", "pre_commit", "commit"])
            driver.crash(after=step)  # type: ignore[arg-type]
            if step == "commit":
                processed += pending
            else:  # replayed: per topic in declaration order, one batch of every partition
                for side in "LR":
                    replay = sorted((e for b in pending for e in b if e.side == side),
                                    key=lambda e: (e.partition, e.id))
                    processed += [[e for e in replay if e.partition == p] for p in (0, 1)
                                  if any(e.partition == p for e in replay)]
            pending = []
    driver.advance_time(10**9)
    assert engine(driver) == oracle(processed + pending, how, before, after, grace)


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


def test_a_join_of_a_joins_output_expires_every_record_it_buffered() -> None:
    """order -> payment -> shipment: the second join's left input carries offsets of two
    repartition topics (whichever record completed the pair), so offsets are no identity; every
    paid order still comes out as not shipped, and nothing stays buffered."""
    topology = Topology("flow", idle_timeout=None)
    orders = topology.source("orders", value_format="json", event_time="ts")
    payments = topology.source("payments", value_format="json", event_time="ts")
    shipments = topology.source("shipments", value_format="json", event_time="ts")
    paid = orders.key_by("corr").join(payments.key_by("corr"), store="op", after=60_000,
                                      grace=60_000)
    paid.join(shipments.key_by("corr"), store="ops", after=60_000, grace=60_000,
              how="left").to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("payments", [{"corr": "c1", "ts": 1000, "id": "pay1"}])  # offset 0 of its topic
    driver.pipe("orders", [{"corr": "c2", "ts": 1000, "id": "ord2"}])    # offset 0 of its topic
    driver.pipe("orders", [{"corr": "c1", "ts": 1000, "id": "ord1"}])    # completes c1: offset 1
    driver.pipe("payments", [{"corr": "c2", "ts": 1000, "id": "pay2"}])  # completes c2: offset 1
    driver.pipe("orders", [{"corr": "zz", "ts": 10**7, "id": "flush"}])  # stream time far ahead
    assert sorted(r["id"] for r in driver.read_json("out")) == ["ord1", "ord2"]
    assert not [k for k in driver.store("ops") if k[:1] in (b"L", b"R")]


def test_a_field_null_in_every_row_of_a_batch_is_buffered_as_text() -> None:
    driver = InProcessTestDriver(join_topology("inner", 0, 100, 0), partitions=1)
    driver.pipe("orders", [{"id": 1, "ts": 10, "coupon": None}, {"id": 2, "ts": 11,
                                                                  "coupon": None}], keys=["k"] * 2)
    driver.pipe("payments", [{"id": 9, "ts": 20}], keys=["k"])
    rows = [orjson.loads(r.value) for r in driver.read("out")]
    assert [(r["id"], r["coupon"], r["id_right"]) for r in rows] == [(1, None, 9), (2, None, 9)]
    assert driver.dead_letters == []


def test_what_follows_a_join_sees_both_sides_columns_in_a_batch_without_pairs() -> None:
    topology = Topology("follow", idle_timeout=None, on_error="fail")
    orders = topology.source("orders", value_format="json", event_time="ts")
    payments = topology.source("payments", value_format="json", event_time="ts")
    joined = orders.join(payments, store="op", after=100, co_partitioned=True)
    joined.select(order=pl.col("id"), payment=pl.col("id_right")).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("payments", [{"id": 9, "ts": 50}], keys=["a"])  # nothing to pair with yet
    driver.pipe("orders", [{"id": 1, "ts": 10}], keys=["b"])    # no pair: an empty batch out
    driver.pipe("orders", [{"id": 2, "ts": 10}], keys=["a"])
    assert driver.read_json("out") == [{"order": 2, "payment": 9}]
