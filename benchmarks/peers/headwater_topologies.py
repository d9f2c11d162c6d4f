"""headwater's side of the engine suite: ``headwater run benchmarks.peers.headwater_topologies:w1``.

Topics and the input format come from the BENCH_* environment (see ``peer_env.py``). A sink on
the source stream prints ``first_consumed`` once per worker (one attribute check per batch).
"""

from __future__ import annotations

import os
import sys

import polars as pl

sys.path.insert(0, os.path.dirname(__file__))

from peer_env import FirstConsumed, PeerEnv  # noqa: E402

from headwater.bench.workloads import INTERVAL_JOINS, SESSIONS, W1_SCHEMA_STR, WINDOWED  # noqa: E402
from headwater.streams import Topology, agg  # noqa: E402
from headwater.streams.windows import Window, hopping, session, tumbling  # noqa: E402


class _Probe:
    """A sink that only reports the first batch."""

    def __init__(self) -> None:
        self.first = FirstConsumed()

    def write(self, frame: pl.DataFrame) -> None:
        self.first()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _source(name: str) -> tuple[Topology, PeerEnv, object]:
    env = PeerEnv.load()
    topology = Topology(name)
    orders = topology.source(env.input, value_format=env.fmt)  # type: ignore[arg-type]
    orders.sink(_Probe(), name="first-consumed")
    return topology, env, orders


def _w1(name: str, avro: bool) -> Topology:
    """Validate (totalAmount > 0, items non-empty), derive itemCount/totalCents; Avro or JSON out."""
    topology, env, orders = _source(name)
    payload = pl.col("data").struct.field("payload")
    amount = payload.struct.field("totalAmount")
    items = payload.struct.field("items").list.len()
    derived = orders.filter((amount > 0) & (items > 0), name="validate").select(
        eventId=pl.col("eventId").cast(pl.String),
        userId=pl.col("userId"),
        orderId=payload.struct.field("orderId"),
        totalAmount=amount,
        itemCount=items.cast(pl.Int32),
        totalCents=(amount * 100 + 0.5).floor().cast(pl.Int64),
        name="derive",
    )
    if avro:
        derived.to_topic(env.output, value_format="avro", schema=W1_SCHEMA_STR)
    else:
        derived.to_topic(env.output)
    return topology


def w1() -> Topology:
    """W1: Avro out (schema ``W1_SCHEMA``)."""
    return _w1("bench-w1", avro=True)


def w1j() -> Topology:
    """W1j: W1 with JSON out."""
    return _w1("bench-w1j", avro=False)


def w2() -> Topology:
    """Count per record key (userId); emits ``{"count": n}`` per changed key per batch."""
    topology, env, orders = _source("bench-w2")
    orders.aggregate("counts", count=agg.count()).select("count").to_topic(env.output)
    return topology


def _windowed(name: str, window: Window) -> Topology:
    """Per userId (the record key) in event time (the envelope's ``timestamp``): count, sum and
    mean of ``totalAmount``; final results, JSON. No idle timeout, like the peers: windows close
    with the data only, so every engine emits the same windows."""
    env = PeerEnv.load()
    topology = Topology(name, idle_timeout=None)
    orders = topology.source(env.input, value_format=env.fmt, event_time="timestamp")  # type: ignore[arg-type]
    orders.sink(_Probe(), name="first-consumed")
    amount = pl.col("data").struct.field("payload").struct.field("totalAmount")
    orders.window(window).aggregate(
        name, count=agg.count(), total=agg.sum(amount), avg=agg.mean(amount),
    ).select("window_start", "window_end", "count", "total", "avg").to_topic(env.output)
    return topology


def w3() -> Topology:
    """Tumbling 1-minute windows, 5 s grace."""
    spec = WINDOWED["W3"]
    return _windowed("bench-w3", tumbling(spec.size_ms, grace=spec.grace_ms))


def w3h() -> Topology:
    """Hopping windows of 5 minutes advancing by 1 minute, 5 s grace."""
    spec = WINDOWED["W3h"]
    return _windowed("bench-w3h", hopping(spec.size_ms, spec.advance_ms, grace=spec.grace_ms))


def w3s() -> Topology:
    """Session windows per userId, 2-minute gap, 5 s grace (``SESSIONS["W3s"]``); like W3, no
    idle timeout, so sessions close with the data only."""
    spec = SESSIONS["W3s"]
    return _windowed("bench-w3s", session(spec.gap_ms, grace=spec.grace_ms))  # type: ignore[arg-type]


def _payload(name: str) -> pl.Expr:
    return pl.col("data").struct.field("payload").struct.field(name)


def w4() -> Topology:
    """Interval join of the orders (BENCH_INPUT) with the payments (BENCH_INPUT2) by
    correlationId, inner, a payment within [0, 10 min] of its order (``INTERVAL_JOINS["W4"]``),
    event time from the envelopes. Both topics are keyed by correlationId and co-partitioned
    (murmur2, equal partition counts), as Quix Streams needs them, so the join reads them as they
    are (``co_partitioned=True``: no repartition topics). One JSON row per matched pair
    ``{orderId, totalAmount, paymentId, amount}``, keyed by the correlationId."""
    env = PeerEnv.load()
    spec = INTERVAL_JOINS["W4"]
    topology = Topology("bench-w4", idle_timeout=None)
    orders = topology.source(env.input, value_format=env.fmt, event_time="timestamp")  # type: ignore[arg-type]
    payments = topology.source(env.input2, value_format=env.fmt, event_time="timestamp")  # type: ignore[arg-type]
    probe = _Probe()
    orders.sink(probe, name="first-consumed-orders")
    payments.sink(probe, name="first-consumed-payments")
    left = orders.select(correlationId=pl.col("correlationId"), orderId=_payload("orderId"),
                         totalAmount=_payload("totalAmount"), name="order-fields")
    right = payments.select(correlationId=pl.col("correlationId"), paymentId=_payload("paymentId"),
                            amount=_payload("amount"), name="payment-fields")
    joined = left.key_by("correlationId").join(
        right.key_by("correlationId"), store="w4-join", before=spec.before_ms, after=spec.after_ms,
        grace=spec.grace_ms, how="inner", co_partitioned=True)
    joined.select("orderId", "totalAmount", "paymentId", "amount").to_topic(env.output)
    return topology


def w4t() -> Topology:
    """Orders (BENCH_INPUT, keyed by userId) enriched with the user's profile from the users
    table (BENCH_INPUT2: user.registered keyed by userId, compacted; latest value per key), left
    join by the orders' record key (the userId). JSON ``{orderId, userId, totalAmount, email,
    firstName, lastName, country}`` keyed by the userId.

    The table is a **global table** (the default; every worker reads the whole users topic to
    its end before it processes any order, then keeps it up to date): the way headwater serves
    small reference data, with no co-partitioning needed. ``BENCH_W4T_TABLE=table`` uses the
    co-partitioned ``topology.table`` instead (the users topic is then a source of the orders'
    tasks, read alongside the orders with no ordering between the two; see docs/benchmarks.md).
    Either way the lookup is by record key: a lookup by a column (``on="userId"``) would re-key
    the stream through a repartition topic first.
    """
    env = PeerEnv.load()
    topology = Topology("bench-w4t", idle_timeout=None)
    orders = topology.source(env.input, value_format=env.fmt, event_time="timestamp")  # type: ignore[arg-type]
    orders.sink(_Probe(), name="first-consumed")
    if os.environ.get("BENCH_W4T_TABLE", "global") == "table":
        users = topology.table(env.input2, value_format=env.fmt, store="w4t-users",  # type: ignore[arg-type]
                               event_time="timestamp")
    else:
        users = topology.global_table(env.input2, value_format=env.fmt, store="w4t-users")  # type: ignore[arg-type]
    left = orders.select(orderId=_payload("orderId"), userId=pl.col("userId"),
                         totalAmount=_payload("totalAmount"), name="order-fields")
    enriched = left.join_table(users, how="left")
    enriched.select(
        "orderId", "userId", "totalAmount",
        *(_payload(f).alias(f) for f in ("email", "firstName", "lastName", "country")),
    ).to_topic(env.output)
    return topology
