"""Topologies the runtime tests run with `headwater run tests.topologies:<name>`.

Topic names come from the environment so every test uses its own topics:
HW_TEST_INPUT (source), HW_TEST_OUTPUT (per-key counts), HW_TEST_ECHO (one record per input).
"""

from __future__ import annotations

import os

import polars as pl

from headwater.streams import Topology, agg
from headwater.streams.local_sink import LocalDirectorySink


def count_per_key() -> Topology:
    """Counts and sums per key; also echoes every input's id (to check exactly-once)."""
    topology = Topology("count-per-key")
    events = topology.source(os.environ["HW_TEST_INPUT"], value_format="json")
    events.aggregate("counts", n=agg.count(), total=agg.sum("amount")).select(
        "n", "total", key=pl.col("_key")
    ).to_topic(os.environ["HW_TEST_OUTPUT"])
    if os.environ.get("HW_TEST_ECHO"):
        events.select("id").to_topic(os.environ["HW_TEST_ECHO"])
    return topology


def count_per_key_to_directory() -> Topology:
    """count_per_key whose echo goes to a two-phase ``LocalDirectorySink`` in HW_TEST_SINK_DIR
    (one Parquet file per task per checkpoint) instead of a topic."""
    topology = Topology("count-per-key-to-directory")
    events = topology.source(os.environ["HW_TEST_INPUT"], value_format="json")
    events.aggregate("counts", n=agg.count(), total=agg.sum("amount")).select(
        "n", "total", key=pl.col("_key")
    ).to_topic(os.environ["HW_TEST_OUTPUT"])
    events.select("id").sink(LocalDirectorySink(os.environ["HW_TEST_SINK_DIR"]))
    return topology


def poison_aware() -> Topology:
    """Rejects rows whose `kind` is 'poison' by raising in a row function."""

    def check(row: dict) -> dict:
        if row.get("kind") == "poison":
            raise ValueError(f"poison row {row.get('id')}")
        return row

    topology = Topology("poison-aware")
    topology.source(os.environ["HW_TEST_INPUT"], value_format="json").map_rows(
        check, name="check"
    ).to_topic(os.environ["HW_TEST_OUTPUT"])
    return topology


ORDER_STATS_SCHEMA = """
{"type": "record", "name": "UserOrderStats", "namespace": "io.headwater.test",
 "fields": [{"name": "userId", "type": "string"},
            {"name": "orders", "type": "long"},
            {"name": "revenue", "type": "double"}]}
"""


def orders_per_user() -> Topology:
    """Avro order.created -> valid orders -> re-keyed by userId (repartition) -> count, revenue."""
    topology = Topology("orders-per-user")
    payload = pl.col("data").struct.field("payload")
    orders = topology.source(os.environ["HW_TEST_INPUT"], value_format="avro")
    valid = orders.filter(
        (payload.struct.field("totalAmount") > 0) & (payload.struct.field("items").list.len() > 0)
    )
    valid.key_by(payload.struct.field("userId")).aggregate(
        "orders-per-user", orders=agg.count(), revenue=agg.sum(payload.struct.field("totalAmount"))
    ).select("orders", "revenue", userId=pl.col("_key")).to_topic(
        os.environ["HW_TEST_OUTPUT"], value_format="avro", schema=ORDER_STATS_SCHEMA
    )
    return topology


def avro_count_per_key() -> Topology:
    """count_per_key over an Avro source (values with `id` and `amount`)."""
    topology = Topology("avro-count-per-key")
    events = topology.source(os.environ["HW_TEST_INPUT"], value_format="avro")
    events.aggregate("counts", n=agg.count(), total=agg.sum("amount")).select(
        "n", "total", key=pl.col("_key")
    ).to_topic(os.environ["HW_TEST_OUTPUT"])
    events.select("id").to_topic(os.environ["HW_TEST_ECHO"])
    return topology


def orders_count_per_key() -> Topology:
    """Avro order.created records (declared schema: the latest of `<topic>-value`) counted per
    record key; everything undecodable or foreign goes to the DLQ at decode."""
    topology = Topology("orders-count-per-key")
    topology.source(os.environ["HW_TEST_INPUT"], value_format="avro").aggregate(
        "orders", n=agg.count()
    ).select("n", key=pl.col("_key")).to_topic(os.environ["HW_TEST_OUTPUT"])
    return topology


def windowed_sums() -> Topology:
    """Per-key tumbling windows (HW_TEST_WINDOW, default 1 s; grace HW_TEST_GRACE, default
    500 ms) over the ``at`` event time: final ``n`` and ``total`` of ``amount`` per window to
    HW_TEST_OUTPUT; late records (``id``, their window, how late) to HW_TEST_ECHO. Stream time
    follows the wall clock after HW_TEST_IDLE_TIMEOUT of quiet (default: never)."""
    from headwater.streams.windows import tumbling

    topology = Topology("windowed-sums", idle_timeout=os.environ.get("HW_TEST_IDLE_TIMEOUT"))
    events = topology.source(os.environ["HW_TEST_INPUT"], value_format="json", event_time="at")
    window = tumbling(os.environ.get("HW_TEST_WINDOW", "1s"),
                      grace=os.environ.get("HW_TEST_GRACE", "500ms"))
    sums = events.window(window).aggregate("sums", n=agg.count(), total=agg.sum("amount"))
    sums.to_topic(os.environ["HW_TEST_OUTPUT"])
    sums.late.select("id", "window_start", "late_by_ms").to_topic(os.environ["HW_TEST_ECHO"])
    return topology


def event_time_echo() -> Topology:
    """Every record of HW_TEST_INPUT to HW_TEST_OUTPUT, with its ``at`` field as event time."""
    topology = Topology("event-time-echo")
    topology.source(os.environ["HW_TEST_INPUT"], value_format="json", event_time="at").to_topic(
        os.environ["HW_TEST_OUTPUT"])
    return topology


def domain_windows() -> Topology:
    """Generated ``order.created`` events (Avro, keyed by userId, event time = the envelope's
    ``timestamp``) in tumbling 60 s windows (grace 5 s) to HW_TEST_OUTPUT and in sessions (gap
    30 s, grace 5 s) to HW_TEST_SESSIONS, ``n`` and ``total`` of ``totalAmount`` each; the late
    records of both (``eventId``, ``kind``) to HW_TEST_ECHO. Idle after HW_TEST_IDLE_TIMEOUT."""
    from headwater.streams.windows import session, tumbling

    topology = Topology("domain-windows", idle_timeout=os.environ.get("HW_TEST_IDLE_TIMEOUT"))
    orders = topology.source(os.environ["HW_TEST_INPUT"], event_time="timestamp")
    amount = pl.col("data").struct.field("payload").struct.field("totalAmount")
    for kind, window, output in (("tumbling", tumbling("60s", grace="5s"), "HW_TEST_OUTPUT"),
                                 ("session", session("30s", grace="5s"), "HW_TEST_SESSIONS")):
        result = orders.window(window).aggregate(kind, n=agg.count(), total=agg.sum(amount))
        result.to_topic(os.environ[output])
        result.late.select(pl.col("eventId").cast(pl.String), pl.lit(kind).alias("kind")) \
            .to_topic(os.environ["HW_TEST_ECHO"])
    return topology


def order_payments() -> Topology:
    """``order.created`` (HW_TEST_INPUT) joined with ``payment.succeeded`` (HW_TEST_PAYMENTS),
    both Avro keyed by userId, re-keyed by ``correlationId`` (so both go through repartition
    topics), payments within [0, HW_TEST_AFTER] after the order (grace HW_TEST_GRACE), join type
    HW_TEST_JOIN_HOW: ``order`` and ``payment`` eventIds (null when unmatched) to
    HW_TEST_OUTPUT; late records (``eventId``, ``eventType``) to HW_TEST_ECHO."""
    topology = Topology("order-payments")
    orders = topology.source(os.environ["HW_TEST_INPUT"], event_time="timestamp")
    payments = topology.source(os.environ["HW_TEST_PAYMENTS"], event_time="timestamp")
    joined = orders.key_by("correlationId").join(
        payments.key_by("correlationId"), store="order-payments", before=0,
        after=os.environ["HW_TEST_AFTER"], grace=os.environ["HW_TEST_GRACE"],
        how=os.environ["HW_TEST_JOIN_HOW"])  # type: ignore[arg-type]
    joined.select(order=pl.col("eventId").cast(pl.String),
                  payment=pl.col("eventId_right").cast(pl.String)
                  ).to_topic(os.environ["HW_TEST_OUTPUT"])
    joined.late.select(pl.col("eventId").cast(pl.String), "eventType").to_topic(
        os.environ["HW_TEST_ECHO"])
    return topology


def orders_enriched() -> Topology:
    """JSON orders ``{id, userId}`` of HW_TEST_INPUT enriched (left join) with the Avro users
    table of the compacted topic HW_TEST_USERS, looked up by ``userId`` (the orders go through
    a repartition topic). HW_TEST_JOIN=global makes it a global table instead; HW_TEST_JOIN=key
    joins by the orders' record key (no repartitioning: the topics must be co-partitioned).
    Every enriched order to HW_TEST_OUTPUT."""
    topology = Topology("orders-enriched")
    users_topic, kind = os.environ["HW_TEST_USERS"], os.environ.get("HW_TEST_JOIN", "table")
    orders = topology.source(os.environ["HW_TEST_INPUT"], value_format="json")
    if kind == "global":
        users = topology.global_table(users_topic, store="users", value_format="avro")
        enriched = orders.join_table(users, on=pl.col("userId"))
    else:
        table = topology.table(users_topic, store="users", value_format="avro")
        enriched = orders.join_table(table, on=None if kind == "key" else "userId")
    enriched.to_topic(os.environ["HW_TEST_OUTPUT"])
    return topology
