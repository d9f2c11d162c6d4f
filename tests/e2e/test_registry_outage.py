"""The schema registry goes down mid-run: the engine retries, fails the worker, restarts with
backoff until the registry is back, and then processes everything exactly once. Not a single
record is dead-lettered for it: an unreachable registry says nothing about the records."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from headwater.connectors.dlq import read_dead_letters
from tests.e2e.proxy import CuttableProxy
from tests.e2e.runtime_support import Inputs, Job, read_topic, wait_for_output

pytestmark = pytest.mark.e2e

V1 = """{"type": "record", "name": "Reading", "namespace": "io.headwater.test",
 "fields": [{"name": "id", "type": "long"}, {"name": "amount", "type": "double"}]}"""
V2 = """{"type": "record", "name": "Reading", "namespace": "io.headwater.test",
 "fields": [{"name": "id", "type": "long"}, {"name": "amount", "type": "double"},
            {"name": "unit", "type": "string", "default": "kg"}]}"""


def produce_avro(job: Job, registry: SchemaRegistryClient, schema: str, ids: range,
                 expected: Inputs) -> None:
    serialize = AvroSerializer(registry, schema)
    producer = Producer(job.config)
    ctx = SerializationContext(job.input, MessageField.VALUE)
    for i in ids:
        key, amount = f"u{i % 31}", float(i % 5)
        value = {"id": i, "amount": amount} if "unit" not in schema else {
            "id": i, "amount": amount, "unit": "g"}
        producer.produce(job.input, serialize(value, ctx), key.encode())
        expected.counts[key] += 1
        expected.totals[key] = expected.totals.get(key, 0.0) + amount
        expected.ids.append(i)
    assert producer.flush(30) == 0


def wait_for_log(job: Job, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in job.log_tail(100_000):
        assert time.monotonic() < deadline, f"{text!r} never logged\n{job.log_tail()}"
        time.sleep(0.2)


def test_a_registry_outage_mid_run_fails_and_restarts_without_dead_letters(
    new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url
) -> None:
    from collections import Counter

    url = urlparse(schema_registry_url)
    proxy = CuttableProxy(url.hostname, url.port)
    proxy.up()
    job = Job(new_topic, unique_name, tmp_path, kafka_bootstrap,
              f"http://127.0.0.1:{proxy.port}{url.path}", guarantee="exactly-once",
              topology="tests.topologies:avro_count_per_key")
    job.env.update({"HEADWATER_TRANSIENT_RETRY_MS": "2000", "HEADWATER_RESTART_BACKOFF_MS": "200",
                    "HEADWATER_MAX_RESTARTS": "50"})
    registry = SchemaRegistryClient({"url": schema_registry_url})  # the real one, never cut
    expected = Inputs(Counter(), {}, [])
    produce_avro(job, registry, V1, range(0, 2_000), expected)
    proc = job.run("--until-idle", "10", wait=False)
    try:
        wait_for_output(job.config, job.echo, 2_000)
        proxy.down()
        # records under a schema id the engine has never seen: it must ask the registry
        produce_avro(job, registry, V2, range(2_000, 4_000), expected)
        wait_for_log(job, "SchemaRegistryUnavailable")
        wait_for_log(job, "restart #2")  # still down after a restart: it failed again, no DLQ
        proxy.up()
        assert proc.wait(240) == 0, job.log_tail()
    finally:
        proxy.down()
        if proc.poll() is None:
            proc.kill()
    ids = sorted(int(m.value().split(b":")[1].rstrip(b"}")) for m in read_topic(job.config, job.echo))
    assert ids == expected.ids
    job.assert_exact(expected)
    assert list(read_dead_letters(job.config, f"{job.application_id}.dlq")) == []
