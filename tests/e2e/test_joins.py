"""Interval joins on the real stack: generated ``order.created`` joined with ``payment.succeeded``
by ``correlationId``, checked against the generator's JSON-lines file.

``headwater produce`` writes the order flows (Avro through the registry, keyed by userId, so both
sides are re-keyed through repartition topics; some events out of order). The grace period is
longer than the whole input's event-time span, so no generated record can be late however the
engine interleaves partitions and topics: the expected pairs, never-paid orders and orphan
payments follow from the file alone (same ``correlationId``, payment time within ``[order,
order + AFTER]``). The test then writes records that must be late (event time hours before
everything else) and, per repartition partition, one order and one payment far in the future so
that stream time passes every expiry and the unmatched rows come out.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from headwater.schemas.registry import SchemaCache
from headwater.schemas.serde import AvroSerde
from headwater.streams.partitioner import partition_for
from tests.e2e.runtime_support import IDLE, ROOT, Job, read_topic

pytestmark = pytest.mark.e2e

AFTER_MS = 120_000
GRACE = "3h"
PARTITIONS = 3
CHECKPOINT_EVERY = ["--batch-size", "300", "--commit-every-records", "900"]


def generate(job: Job, prefix: str, lines: Path, start: int) -> tuple[str, str]:
    subprocess.run(
        [sys.executable, "-m", "headwater", "produce", "-n", "6000", "--prefix", prefix,
         "--partitions", str(PARTITIONS), "--key", "user-id", "--users", "200",
         "--seed", "20261204", "--start-time", str(start), "--event-rate", "20",
         "--out-of-order", "0.2", "--max-disorder-ms", "8000", "--output", str(lines),
         "--no-progress"],
        cwd=ROOT, env=job.env_for_cli(), check=True, timeout=300, capture_output=True)
    return f"{prefix}.order.created", f"{prefix}.payment.succeeded"


def expected(lines: Path, orders_topic: str, payments_topic: str, how: str) -> Counter:
    """(order eventId | None, payment eventId | None) -> count, from the file alone."""
    orders, payments = [], []
    for line in lines.open("rb"):
        r = orjson.loads(line)
        e = r["event"]
        if r["topic"] == orders_topic:
            orders.append((e["correlationId"], e["timestamp"], e["eventId"]))
        elif r["topic"] == payments_topic:
            payments.append((e["correlationId"], e["timestamp"], e["eventId"]))
    by_corr: dict[str, list] = {}
    for corr, t, pid in payments:
        by_corr.setdefault(corr, []).append((t, pid))
    out, paid_orders, used_payments = Counter(), set(), set()
    for corr, t, oid in orders:
        for pt, pid in by_corr.get(corr, []):
            if t <= pt <= t + AFTER_MS:
                out[(oid, pid)] += 1
                paid_orders.add(oid)
                used_payments.add(pid)
    if how in ("left", "outer"):
        out.update((oid, None) for _, _, oid in orders if oid not in paid_orders)
    if how in ("right", "outer"):
        out.update((None, pid) for _, _, pid in payments if pid not in used_payments)
    return out


def template(lines: Path, topic: str) -> dict:
    for line in lines.open("rb"):
        r = orjson.loads(line)
        if r["topic"] == topic:
            return r["event"]
    raise AssertionError(f"no {topic} record in {lines}")


def corr_in_partition(partition: int, tag: str) -> str:
    """A correlationId that the Java partitioner sends to repartition ``partition``."""
    n = 0
    while partition_for(f"{tag}-{n}".encode(), PARTITIONS) != partition:
        n += 1
    return f"{tag}-{n}"


def produce_extra(job: Job, lines: Path, orders_topic: str, payments_topic: str,
                  late_at: int, closing_at: int) -> set[str]:
    """Late records (one order, one payment) and, per repartition partition, a closing order and
    payment far ahead; returns the late records' eventIds."""
    serde = AvroSerde(SchemaCache.from_url(job.env["HEADWATER_SCHEMA_REGISTRY_URL"]))
    producer = Producer(job.config)
    late = set()
    for topic in (orders_topic, payments_topic):
        base = template(lines, topic)
        schema_id = serde.schema_id(f"{topic}-value", register=False)
        events = [{**base, "eventId": f"late-{topic}", "timestamp": late_at,
                   "correlationId": "late-flow"}]
        late.add(f"late-{topic}")
        events += [{**base, "eventId": f"closing-{topic}-{p}", "timestamp": closing_at,
                    "correlationId": corr_in_partition(p, "closing")} for p in range(PARTITIONS)]
        for event in events:
            producer.produce(topic, serde.encode_one(event, schema_id), b"extra", partition=0)
    assert producer.flush(30) == 0
    return late


def emitted(job: Job) -> tuple[Counter, set[str]]:
    pairs = Counter()
    for m in read_topic(job.config, job.output):
        row = orjson.loads(m.value())
        if "closing" not in (row["order"] or "") + (row["payment"] or ""):
            pairs[(row["order"], row["payment"])] += 1
    late = {orjson.loads(m.value())["eventId"] for m in read_topic(job.config, job.echo)}
    return pairs, late


@pytest.mark.parametrize(("how", "fault"), [
    ("inner", None),
    ("left", None),
    ("right", None),
    ("outer", None),
    ("outer", "checkpoint.after_flush=kill@3"),  # kill -9: transaction flushed, not committed
])
def test_orders_join_payments_by_correlation_id_as_the_generators_file_says(
    request, tmp_path, how, fault
) -> None:
    fx = request.getfixturevalue
    job = Job(fx("new_topic"), fx("unique_name"), tmp_path, fx("kafka_bootstrap"),
              fx("schema_registry_url"), guarantee="exactly-once",
              topology="tests.topologies:order_payments")
    lines = tmp_path / "events.jsonl"
    start = int(time.time() * 1000) - 2 * 3_600_000
    orders_topic, payments_topic = generate(job, fx("unique_name")("join"), lines, start)
    job.env.update({"HW_TEST_INPUT": orders_topic, "HW_TEST_PAYMENTS": payments_topic,
                    "HW_TEST_AFTER": f"{AFTER_MS}ms", "HW_TEST_GRACE": GRACE,
                    "HW_TEST_JOIN_HOW": how, "HEADWATER_RESTART_BACKOFF_MS": "200"})
    if fault:
        job.env.update({"HEADWATER_FAILPOINTS": fault,
                        "HEADWATER_FAILPOINTS_FIRED": str(tmp_path / "fired")})
    want = expected(lines, orders_topic, payments_topic, how)
    kinds = Counter("pair" if o and p else "order only" if o else "payment only" for o, p in want)
    assert kinds["pair"] > 200 and (how in ("inner", "right") or kinds["order only"] > 50)

    job.run(*CHECKPOINT_EVERY, *IDLE)  # everything generated, processed to the end
    want_late = produce_extra(job, lines, orders_topic, payments_topic,
                              late_at=start - 4 * 3_600_000, closing_at=start + 10 * 3_600_000)
    job.run(*CHECKPOINT_EVERY, *IDLE)  # a restart: buffers restored, then late and closing

    if fault:
        assert (tmp_path / "fired" / fault.split("=")[0]).exists(), job.log_tail()
    pairs, late = emitted(job)
    assert pairs == want, (
        f"missing {list((want - pairs).items())[:5]}, "
        f"unexpected {list((pairs - want).items())[:5]}\n{job.log_tail()}")
    assert late == want_late, job.log_tail()
