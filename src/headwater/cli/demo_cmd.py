"""``headwater demo``: the main job's end-to-end check against the real stack.

Today it registers a schema, produces sample events through the Schema Registry with
confluent-kafka's Avro serializer, consumes them back and prints what it saw.
"""

from __future__ import annotations

import argparse
import time
import uuid

from headwater.cli.common import add_connection_options, settings_from_args
from headwater.errors import HeadwaterError

SAMPLE_SCHEMA = """
{"type": "record", "name": "DemoEvent", "namespace": "io.headwater.demo",
 "fields": [
   {"name": "eventId", "type": {"type": "string", "logicalType": "uuid"}},
   {"name": "eventType", "type": "string"},
   {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
   {"name": "userId", "type": ["null", "string"], "default": null}
 ]}
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="produce sample events through the registry and read them back",
        description="Round-trip sample Avro events through the real Kafka and Schema Registry.",
    )
    add_connection_options(parser)
    parser.add_argument("--events", type=int, default=10, help="how many events (default 10)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    settings = settings_from_args(args)
    kafka = settings.kafka_client_config()
    topic = f"demo.events.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)

    registry = SchemaRegistryClient(settings.schema_registry_config())
    serialize = AvroSerializer(registry, SAMPLE_SCHEMA)
    deserialize = AvroDeserializer(registry)
    producer = Producer(kafka)
    kinds = ["user.registered", "order.created", "payment.succeeded"]
    for i in range(args.events):
        event = {
            "eventId": str(uuid.uuid4()),
            "eventType": kinds[i % len(kinds)],
            "timestamp": int(time.time() * 1000),
            "userId": f"user-{i % 3}",
        }
        value = serialize(event, SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, key=event["userId"].encode(), value=value)
    if producer.flush(30):
        raise HeadwaterError(f"demo: events to {topic} were not delivered within 30s")
    print(f"produced {args.events} events to {topic} (schema subject {topic}-value)")

    consumer = Consumer(
        {**kafka, "group.id": f"{topic}.reader", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 30
    try:
        while seen < args.events and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            event = deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE))
            seen += 1
            print(
                f"  p{msg.partition()}@{msg.offset()} key={msg.key().decode()} "
                f"{event['eventType']:<18} {event['eventId']}"
            )
    finally:
        consumer.close()
    if seen != args.events:
        raise HeadwaterError(f"demo: read back {seen} of {args.events} events from {topic}")
    print(f"read back {seen}/{args.events} events")
    return 0
