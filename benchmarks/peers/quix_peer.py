"""Quix Streams peer: ``python benchmarks/peers/quix_peer.py W1|W1j|W2|W3|W3h|W4|W4t``.

Idiomatic Quix: its own Avro (de)serializers backed by the Schema Registry
(``SchemaRegistryClientConfig``), a StreamingDataFrame with ``filter``/``apply``, and for W2 its
RocksDB state through ``apply(..., stateful=True)`` (Quix has no un-windowed count operator; state
is scoped to the message key, the userId); for W3/W3h its own tumbling/hopping windows with
``Count``/``Sum``/``Mean`` and ``final(closing_strategy="partition")``, in event time (a timestamp
extractor reading the envelope's ``timestamp``). W4: ``join_interval`` of the orders with the
payments (BENCH_INPUT2), both keyed by correlationId on co-partitioned topics (Quix joins by
message key and needs co-partitioned topics), ``backward_ms=0, forward_ms=10 min``; W4t:
``join_asof(how="left")`` of the orders (keyed by userId) with the users topic (BENCH_INPUT2,
user.registered keyed by userId), whose records Quix keeps in a timestamped store; in both, the
timestamps are the envelopes' event times. Runs until SIGTERM; commits every
BENCH_COMMIT_INTERVAL_S.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from peer_env import (  # noqa: E402
    FirstConsumed,
    PeerEnv,
    derive_order,
    merge_enriched,
    order_is_valid,
    w4_order,
    w4_payment,
    w4t_order,
    w4t_profile,
)

from quixstreams import Application, State  # noqa: E402
from quixstreams.dataframe.windows import Count, Mean, Sum  # noqa: E402
from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from quixstreams.models.serializers.schema_registry import (  # noqa: E402
    SchemaRegistryClientConfig,
    SchemaRegistrySerializationConfig,
)

from headwater.bench.workloads import INTERVAL_JOINS, W1_SCHEMA, WINDOWED, event_time_ms  # noqa: E402
from headwater.schemas.catalog import event_type  # noqa: E402


def count(_value: dict, state: State) -> dict:
    n = state.get("count", 0) + 1
    state.set("count", n)
    return {"count": n}


def event_time(value: dict, _headers: object, _timestamp: int, _kind: object) -> int:
    """Event time: the envelope's ``timestamp`` (a datetime from Avro, epoch ms from JSON)."""
    return event_time_ms(value["timestamp"])


def main(workload: str) -> None:
    env = PeerEnv.load()
    app = Application(
        broker_address=env.bootstrap, consumer_group=env.group, auto_offset_reset="earliest",
        commit_interval=env.commit_interval_s, state_dir=env.state_dir, loglevel="WARNING",
        processing_guarantee=env.guarantee,  # type: ignore[arg-type]
        auto_create_topics=True,
    )
    registry = SchemaRegistryClientConfig(url=env.registry)

    def topic(name: str, event: str):  # noqa: ANN202 - a Quix Topic
        if env.fmt == "avro":
            return app.topic(name, key_deserializer="str", value_deserializer=AvroDeserializer(
                schema=event_type(event).schema, schema_registry_client_config=registry),
                timestamp_extractor=event_time)
        return app.topic(name, key_deserializer="str", value_deserializer="json",
                         timestamp_extractor=event_time)

    sdf = app.dataframe(topic(env.input, "order.created"))
    first = FirstConsumed()
    sdf = sdf.update(first)
    if workload == "W4":
        sink = app.topic(env.output, key_serializer="str", value_serializer="json")
        spec = INTERVAL_JOINS["W4"]
        payments = app.dataframe(topic(env.input2, "payment.succeeded")).update(first).apply(w4_payment)
        # a payment at tr matches an order at tl when tl <= tr <= tl + 10 min: Quix looks, for
        # each order, at payments in [tl - backward_ms, tl] and, for each payment, at orders in
        # [tr - forward_ms, tr]; records are kept grace_ms of event time per key (here the
        # bound plus the grace headwater gets: 20 minutes; one order and one payment per key)
        sdf = sdf.apply(w4_order).join_interval(
            payments, how="inner", on_merge=lambda order, payment: {**order, **payment},
            backward_ms=spec.before_ms, forward_ms=spec.after_ms,
            grace_ms=max(spec.after_ms, spec.before_ms) + spec.grace_ms, name="w4-join")
    elif workload == "W4t":
        sink = app.topic(env.output, key_serializer="str", value_serializer="json")
        users = app.dataframe(topic(env.input2, "user.registered")).update(first).apply(w4t_profile)
        sdf = sdf.apply(w4t_order).join_asof(users, how="left", on_merge=merge_enriched,
                                             name="w4t-users")
    elif workload == "W1":
        sink = app.topic(env.output, key_serializer="str", value_serializer=AvroSerializer(
            W1_SCHEMA, schema_registry_client_config=registry,
            schema_registry_serialization_config=SchemaRegistrySerializationConfig(auto_register_schemas=True)))
        sdf = sdf.filter(order_is_valid).apply(derive_order)
    elif workload == "W1j":  # W1 with JSON out
        sink = app.topic(env.output, key_serializer="str", value_serializer="json")
        sdf = sdf.filter(order_is_valid).apply(derive_order)
    elif workload == "W2":
        sink = app.topic(env.output, key_serializer="str", value_serializer="json")
        sdf = sdf.apply(count, stateful=True)
    elif workload in WINDOWED:
        sink = app.topic(env.output, key_serializer="str", value_serializer="json")
        spec = WINDOWED[workload]
        sdf = sdf.apply(lambda v: {"amount": v["data"]["payload"]["totalAmount"]})
        if spec.size_ms == spec.advance_ms:
            windows = sdf.tumbling_window(duration_ms=spec.size_ms, grace_ms=spec.grace_ms)
        else:
            windows = sdf.hopping_window(duration_ms=spec.size_ms, step_ms=spec.advance_ms,
                                         grace_ms=spec.grace_ms)
        # closed by the partition's event time, as headwater closes them (not per key)
        sdf = windows.agg(count=Count(), total=Sum("amount"), avg=Mean("amount")).final(
            closing_strategy="partition")
    else:
        raise SystemExit(f"unknown workload {workload}")
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main(sys.argv[1])
