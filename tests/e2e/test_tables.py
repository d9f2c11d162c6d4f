"""Stream-table joins on the real stack: orders enriched from an Avro users table fed by a
compacted topic (an update and a tombstone included), co-partitioned through a repartition
topic and under a ``kill -9`` mid-run with exactly-once; a global table on two workers with a
stream of another partition count; unequal partition counts of a co-partitioned join refused
at start.

Determinism: "latest" joins see the table as processed before each order, so the users are
produced and processed (a run to idle) before the orders they must enrich, except for the
global table, which every worker reads to its end before it processes any stream record.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.e2e.runtime_support import IDLE, Job, read_topic

pytestmark = pytest.mark.e2e

USER_SCHEMA = {
    "type": "record", "name": "UserProfile", "namespace": "io.headwater.test",
    "fields": [{"name": "userId", "type": "string"}, {"name": "name", "type": "string"},
               {"name": "tier", "type": "string"}],
}
CHECKPOINT_EVERY = ["--batch-size", "500", "--commit-every-records", "1500"]
COMPACTED = {"cleanup.policy": "compact"}


def produce_users(job: Job, topic: str, updates: list[tuple[str, str | None]]) -> None:
    """(userId, tier or None for a tombstone), keyed by userId, partitioned like the Java
    clients (murmur2), as a JVM users service would."""
    serialize = AvroSerializer(SchemaRegistryClient({"url": job.env["HEADWATER_SCHEMA_REGISTRY_URL"]}),
                               json.dumps(USER_SCHEMA))
    context = SerializationContext(topic, MessageField.VALUE)
    producer = Producer({**job.config, "partitioner": "murmur2_random", "enable.idempotence": True})
    for user, tier in updates:
        value = None if tier is None else serialize(
            {"userId": user, "name": f"name-{user}", "tier": tier}, context)
        producer.produce(topic, value, user.encode())
    assert producer.flush(60) == 0


def produce_orders(job: Job, ids: range, users: int) -> None:
    producer = Producer({**job.config, "linger.ms": 20, "enable.idempotence": True})
    for i in ids:
        producer.produce(job.input, orjson.dumps({"id": i, "userId": f"u{i % users}"}),
                         f"o{i}".encode())
        if i % 2000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def enriched(job: Job) -> tuple[Counter, dict[int, str | None]]:
    """(how often each order id was emitted, the tier each got)."""
    seen, tiers = Counter(), {}
    for msg in read_topic(job.config, job.output):
        row = orjson.loads(msg.value())
        seen[row["id"]] += 1
        tiers[row["id"]] = row.get("tier")
        assert row.get("userId_right") in (None, row["userId"])  # the table's own userId
    return seen, tiers


def users_job(request, tmp_path: Path, guarantee: str, users_partitions: int,
              join: str) -> tuple[Job, str]:
    fx = request.getfixturevalue
    job = Job(fx("new_topic"), fx("unique_name"), tmp_path, fx("kafka_bootstrap"),
              fx("schema_registry_url"), guarantee=guarantee,
              topology="tests.topologies:orders_enriched")
    users = fx("new_topic")("users", partitions=users_partitions, config=COMPACTED)
    job.env.update({"HW_TEST_USERS": users, "HW_TEST_JOIN": join,
                    "HEADWATER_RESTART_BACKOFF_MS": "200"})
    return job, users


INITIAL = [(f"u{i}", "basic") for i in range(20)] + [("u1", "gold"), ("u2", None)]


def expected_tier(user: int, changed: dict[int, str | None]) -> str | None:
    if user in changed:
        return changed[user]
    return "basic" if user < 20 else None


def test_orders_are_enriched_from_a_compacted_users_table_across_a_kill_under_exactly_once(
    request, tmp_path
) -> None:
    job, users = users_job(request, tmp_path, "exactly-once", 4, "table")
    produce_users(job, users, INITIAL)
    job.run(*IDLE)  # the table first: "latest" joins see what was processed before them

    fault = "checkpoint.after_flush=kill@3"  # kill -9 with the transaction flushed, uncommitted
    produce_orders(job, range(6_000), users=25)
    job.run(*CHECKPOINT_EVERY, *IDLE, env={"HEADWATER_FAILPOINTS": fault,
                                           "HEADWATER_FAILPOINTS_FIRED": str(tmp_path / "fired")})
    assert (tmp_path / "fired" / "checkpoint.after_flush").exists(), job.log_tail()

    seen, tiers = enriched(job)
    assert seen == Counter(range(6_000)), (  # each order once: nothing lost, nothing twice
        f"missing {sorted(set(range(6_000)) - set(seen))[:5]}, "
        f"twice {[i for i, n in seen.items() if n > 1][:5]}\n{job.log_tail()}")
    changed = {1: "gold", 2: None}
    assert tiers == {i: expected_tier(i % 25, changed) for i in range(6_000)}

    produce_users(job, users, [("u3", "silver"), ("u4", None), ("u21", "new")])
    job.run(*IDLE)
    produce_orders(job, range(6_000, 6_100), users=25)
    job.run(*IDLE)
    seen, tiers = enriched(job)
    assert seen == Counter(range(6_100)), job.log_tail()
    changed.update({3: "silver", 4: None, 21: "new"})
    assert {i: tiers[i] for i in range(6_000, 6_100)} == {
        i: expected_tier(i % 25, changed) for i in range(6_000, 6_100)}


def test_a_global_table_enriches_a_stream_of_another_partition_count_on_two_workers(
    request, tmp_path
) -> None:
    job, users = users_job(request, tmp_path, "exactly-once", 3, "global")  # orders: 4
    job.env["HEADWATER_WORKERS"] = "2"
    produce_users(job, users, INITIAL)
    produce_orders(job, range(4_000), users=25)  # together: the table is read first anyway

    job.run(*IDLE)

    seen, tiers = enriched(job)
    assert seen == Counter(range(4_000)), job.log_tail()
    assert tiers == {i: expected_tier(i % 25, {1: "gold", 2: None}) for i in range(4_000)}
    log = job.log.read_text()
    assert log.count("global table(s)") >= 2, job.log_tail()  # each worker restored it whole
    assert "worker-0" in log and "worker-1" in log


def test_a_co_partitioned_join_of_topics_with_unequal_partition_counts_fails_at_start(
    request, tmp_path
) -> None:
    job, users = users_job(request, tmp_path, "at-least-once", 3, "key")  # orders: 4
    proc = job.run(*IDLE, wait=False)
    proc.wait(120)
    assert proc.returncode != 0
    log = job.log.read_text()
    assert "co-partitioned" in log, job.log_tail()
    assert f"{job.input}=4" in log and f"{users}=3" in log, job.log_tail()
