"""``headwater demo``: the main job end to end against the real stack.

1. generate a coherent mix of domain events (with some invalid and some malformed ones) and
   publish it through the Schema Registry;
2. read every topic back with headwater's columnar decoder and print per-type counts;
3. run the orders-per-user topology (Avro in, repartition by userId, RocksDB state with a
   changelog, Avro out, DLQ) until the input is drained, and print what it computed.
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

from headwater.cli.common import add_connection_options, settings_from_args
from headwater.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="generate domain events, read them back column-wise, run a stateful topology",
        description="The main job, end to end on the real Kafka and Schema Registry.",
    )
    add_connection_options(parser)
    parser.add_argument("--events", type=int, default=50_000, help="events to generate")
    parser.add_argument("--seed", type=int, default=1, help="generator seed")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:6]
    prefix = f"demo-{run_id}"
    settings = settings_from_args(
        args, application_id=f"demo-orders-{run_id}", state_dir=f".headwater/demo-state/{run_id}"
    )
    print(f"[1/3] generating {args.events:,} events into topics {prefix}.<eventType>")
    _generate(settings, prefix, args.events, args.seed)
    print("[2/3] reading every topic back with the columnar decoder")
    _read_back(settings, prefix)
    print("[3/3] running topology orders-per-user (Avro -> valid orders -> key_by userId -> "
          "count/revenue in RocksDB -> Avro)")
    _run_topology(settings, prefix)
    return 0


def _generate(settings: Settings, prefix: str, events: int, seed: int) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from headwater.generator.model import GeneratorConfig
    from headwater.generator.producer import ProduceOptions, produce_generated

    report = produce_generated(
        settings.kafka_client_config(),
        SchemaRegistryClient(settings.schema_registry_config()),
        GeneratorConfig(seed=seed, invalid_fraction=0.02, malformed_fraction=0.005),
        ProduceOptions(count=events, prefix=prefix, partitions=4, progress=False),
    )
    print(f"      {report.summary()}")


def _read_back(settings: Settings, prefix: str) -> None:
    from headwater.connectors.topic_reader import read_to_end
    from headwater.schemas.catalog import catalog
    from headwater.schemas.serde import AvroSerde

    registry = settings.schema_registry_config()
    serde = AvroSerde(registry.pop("url"), registry_conf=registry)
    types = {t.topic(prefix): t.name for t in catalog().values()}
    decoded = dict.fromkeys(types, 0)
    rejected = dict.fromkeys(types, 0)
    for messages in read_to_end(settings.kafka_client_config(), types):
        by_topic: dict[str, list[bytes]] = {}
        for msg in messages:
            by_topic.setdefault(msg.topic(), []).append(msg.value())
        for topic, values in by_topic.items():
            batch = serde.decode_batch(values)
            decoded[topic] += batch.frame.height
            rejected[topic] += len(batch.rejected)
    print(f"      {'event type':<30}{'decoded':>10}{'rejected':>10}")
    for topic, name in types.items():
        print(f"      {name:<30}{decoded[topic]:>10,}{rejected[topic]:>10,}")


def _run_topology(settings: Settings, prefix: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from headwater.connectors.dlq import dlq_topic, read_dead_letters
    from headwater.streams.runtime import Worker, WorkerOptions
    from headwater.topologies.orders import orders_per_user

    output = f"{prefix}.analytics.user-order-stats"
    admin = AdminClient(settings.kafka_client_config())
    admin.create_topics([NewTopic(output, 4, 1)])[output].result(timeout=30)
    topology = orders_per_user(f"{prefix}.order.created", output)
    began = time.monotonic()
    worker = Worker(topology, settings, WorkerOptions(until_idle_s=2.0))
    worker.run()
    print(f"      processed {worker.records_processed:,} records "
          f"(incl. the repartition topic) in {time.monotonic() - began - 2.0:.1f}s")
    stats = _latest_stats(settings, output)
    print(f"      {len(stats):,} users with valid orders; top 5 by revenue:")
    for row in sorted(stats.values(), key=lambda r: -r["revenue"])[:5]:
        print(f"        {row['userId']:<14} orders={row['orders']:<4} "
              f"revenue={row['revenue']:>10,.2f} largest={row['largestOrder']:>9,.2f}")
    letters = list(read_dead_letters(settings.kafka_client_config(),
                                     dlq_topic(settings.application_id)))
    by_class: dict[str, int] = {}
    for letter in letters:
        by_class[letter.error_class] = by_class.get(letter.error_class, 0) + 1
    print(f"      dead letters: {len(letters)} {by_class or ''} "
          f"(`headwater dlq inspect {dlq_topic(settings.application_id)}`)")
    print(f"      state: {Path(settings.state_dir).resolve()} + changelog topic "
          f"{settings.application_id}-orders-per-user-changelog")


def _latest_stats(settings: Settings, topic: str) -> dict[str, dict]:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from headwater.connectors.topic_reader import read_to_end

    deserialize = AvroDeserializer(SchemaRegistryClient(settings.schema_registry_config()))
    context = SerializationContext(topic, MessageField.VALUE)
    latest = {}
    for messages in read_to_end(settings.kafka_client_config(), [topic]):
        for msg in messages:
            row = deserialize(msg.value(), context)
            latest[row["userId"]] = row
    return latest
