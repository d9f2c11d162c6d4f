"""Order analytics: valid ``order.created`` events aggregated per user.

Used by ``headwater demo``; the first of the domain topologies (ingestion, correlation,
analytics and anomaly pipelines follow on the roadmap).
"""

from __future__ import annotations

import polars as pl

from headwater.streams import Topology, agg

USER_ORDER_STATS_SCHEMA = """
{"type": "record", "name": "UserOrderStats", "namespace": "io.headwater.analytics",
 "doc": "Running order statistics of one user (valid order.created events only).",
 "fields": [
   {"name": "userId", "type": "string", "doc": "The user."},
   {"name": "orders", "type": "long", "doc": "Valid orders placed so far."},
   {"name": "revenue", "type": "double", "doc": "Sum of their totalAmount."},
   {"name": "largestOrder", "type": "double", "doc": "Largest totalAmount so far."}
 ]}
"""


def orders_per_user(orders_topic: str, output_topic: str) -> Topology:
    """order.created (Avro) -> drop invalid orders -> re-key by userId -> per-user statistics.

    An order is valid when it has items, a positive total and every item a positive quantity;
    invalid ones are filtered out here (validation with DLQ reasons is the ingestion topology's
    job). Undecodable records go to the DLQ with the decode error.
    """
    topology = Topology("orders-per-user")
    payload = pl.col("data").struct.field("payload")
    items = payload.struct.field("items")
    valid = topology.source(orders_topic, value_format="avro").filter(
        (items.list.len() > 0)
        & (payload.struct.field("totalAmount") > 0)
        & items.list.eval(pl.element().struct.field("quantity") > 0).list.all()
    )
    total = payload.struct.field("totalAmount")
    valid.key_by(payload.struct.field("userId")).aggregate(
        "orders-per-user", orders=agg.count(), revenue=agg.sum(total), largestOrder=agg.max(total)
    ).select("orders", "revenue", "largestOrder", userId=pl.col("_key")).to_topic(
        output_topic, value_format="avro", schema=USER_ORDER_STATS_SCHEMA
    )
    return topology
