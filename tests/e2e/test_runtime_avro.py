"""Avro end to end: generated order.created events through the registry, decoded column-wise,
filtered, re-keyed through a repartition topic, aggregated, and written back as Avro."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from headwater.connectors.dlq import read_dead_letters
from headwater.generator.jsonl import read_records
from tests.e2e.runtime_support import IDLE, ROOT, Job, read_topic

pytestmark = pytest.mark.e2e


def generate(job: Job, prefix: str, side_file: Path, events: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "headwater", "produce", "-n", str(events), "--prefix", prefix,
         "--partitions", "4", "--seed", "7", "--invalid", "0.05", "--malformed", "0.02",
         "--output", str(side_file), "--no-progress"],
        cwd=ROOT, env={**job.env_for_cli()}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr


def expected_stats(side_file: Path, topic: str) -> tuple[dict[str, tuple[int, float]], int]:
    stats: dict[str, list] = defaultdict(lambda: [0, 0.0])
    malformed = 0
    for record in read_records(side_file):
        if record["topic"] != topic:
            continue
        if record["malformed"]:
            malformed += 1
            continue
        payload = record["event"]["data"]["payload"]
        if payload["totalAmount"] > 0 and payload["items"]:
            stats[payload["userId"]][0] += 1
            stats[payload["userId"]][1] += payload["totalAmount"]
    return {k: (n, total) for k, (n, total) in stats.items()}, malformed


def test_generated_orders_are_counted_per_user_through_a_repartition_topic(
    new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url
) -> None:
    prefix = unique_name("gen")
    job = Job(new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url,
              topology="tests.topologies:orders_per_user")
    side_file = tmp_path / "events.jsonl"
    generate(job, prefix, side_file, 20_000)
    job.env["HW_TEST_INPUT"] = f"{prefix}.order.created"
    expected, malformed = expected_stats(side_file, job.env["HW_TEST_INPUT"])
    assert expected and malformed

    job.run(*IDLE)

    registry = SchemaRegistryClient({"url": schema_registry_url})
    deserialize = AvroDeserializer(registry)
    final = {}
    for msg in read_topic(job.config, job.output):
        value = deserialize(msg.value(), SerializationContext(job.output, MessageField.VALUE))
        final[value["userId"]] = (value["orders"], value["revenue"])
        assert msg.key().decode() == value["userId"]
    assert {k: n for k, (n, _) in final.items()} == {k: n for k, (n, _) in expected.items()}
    for user, (_, revenue) in expected.items():
        assert final[user][1] == pytest.approx(revenue)

    letters = list(read_dead_letters(job.config, f"{job.application_id}.dlq"))
    assert len(letters) == malformed
    assert {letter.operator for letter in letters} == {"decode"}
    assert {letter.error_class for letter in letters} <= {
        "MalformedFraming", "UnknownSchemaId", "UndecodableDatum"}
