"""Helpers for end-to-end runtime tests: produce inputs, run `headwater run`, read outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Inputs:
    """What was produced, for computing expected results independently of the engine."""

    counts: Counter
    totals: dict[str, float]
    ids: list[int]


def produce_events(
    config: dict[str, str], topic: str, n: int, keys: int = 50, start_id: int = 0
) -> Inputs:
    """`n` JSON events {id, amount} keyed by `u<i % keys>`; returns the expected aggregates."""
    producer = Producer({**config, "linger.ms": 20})
    counts: Counter = Counter()
    totals: dict[str, float] = {}
    ids = []
    for i in range(start_id, start_id + n):
        key = f"u{i % keys}"
        amount = float(i % 7) + 0.25
        counts[key] += 1
        totals[key] = totals.get(key, 0.0) + amount
        ids.append(i)
        producer.produce(topic, orjson.dumps({"id": i, "amount": amount}), key.encode())
        if i % 2000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return Inputs(counts, totals, ids)


def merge(a: Inputs, b: Inputs) -> Inputs:
    counts = a.counts + b.counts
    totals = {k: a.totals.get(k, 0.0) + b.totals.get(k, 0.0) for k in counts}
    return Inputs(counts, totals, a.ids + b.ids)


def read_topic(config: dict[str, str], topic: str, committed_only: bool = True) -> list:
    """Every record currently in `topic` (all partitions), read until end-of-partition on each.

    Under read_committed the end is the last stable offset, so an open transaction would hold it
    back: the engine has stopped (or been killed and its transaction aborted) before we read.
    """
    consumer = Consumer(
        {
            **config,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    pending = set(partitions)
    records = []
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
            continue
        records.append(msg)
    consumer.close()
    assert not pending, f"{topic}: partitions {pending} not read to the end in 60s"
    return records


def latest_by_key(records: Iterable) -> dict[str, dict]:
    """The last JSON value per key (a changelog-style view of update streams)."""
    return {m.key().decode(): orjson.loads(m.value()) for m in records}


def run_headwater(
    args: list[str], env: dict[str, str], log: Path, wait: bool = True, timeout: float = 180
) -> subprocess.Popen:
    """Start `headwater run ...` (in its own process group); optionally wait for it."""
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "headwater", "run", *args],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if wait:
        proc.wait(timeout)
    return proc


def kill_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the supervisor and all its workers (kill -9 semantics with SIGKILL)."""
    os.killpg(proc.pid, sig)
    proc.wait(60)


def wait_for_output(config: dict[str, str], topic: str, at_least: int, timeout: float = 90) -> int:
    """Block until `topic` holds at least `at_least` records (any isolation)."""
    deadline = time.monotonic() + timeout
    consumer = Consumer({**config, "group.id": f"w-{uuid.uuid4().hex[:8]}"})
    try:
        while time.monotonic() < deadline:
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            total = sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts
            )
            if total >= at_least:
                return total
            time.sleep(0.2)
    finally:
        consumer.close()
    raise AssertionError(f"{topic} did not reach {at_least} records in {timeout}s")
