"""End-to-end latency: produce at a steady rate while the engine runs; time each output's arrival.

The harness produces input records itself (remembering when each was handed to the producer)
and reads the engine's output with its own consumer; latency = output arrival - produce time.

- W1: the output value's first field is the input's ``eventId`` (read from the Avro bytes without
  a full decode);
- W2: an output ``{"count": n}`` for key k means the n-th input of k was processed: its produce
  time is the reference (an engine that emits per batch reports its newest record only).
Events produced during the first ``warmup_s`` are not counted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from headwater.connectors.produce import produce


@dataclass
class LatencyResult:
    """Percentiles (ms) over ``samples`` outputs; ``produced`` inputs at ``rate`` events/s."""

    produced: int
    rate: float
    samples: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass
class _Clock:
    by_event: dict[bytes, float] = field(default_factory=dict)
    by_key: dict[bytes, list[float]] = field(default_factory=lambda: defaultdict(list))


def avro_first_string(value: bytes) -> bytes:
    """The first field of a Confluent-framed Avro record when it is a string."""
    shift = length = 0
    i = 5
    while True:
        b = value[i]
        length |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    length = (length >> 1) ^ -(length & 1)
    return value[i:i + length]


def measure(config: dict[str, Any], workload: str, input_topic: str, output_topic: str,
            records: Sequence[tuple[bytes, bytes, bytes]], rate: float, seconds: float,
            warmup_s: float, drain_s: float = 5.0) -> LatencyResult:
    """Produce ``records`` (key, value, eventId) at ``rate`` for up to ``seconds``; read outputs.

    The engine must already be consuming ``input_topic`` (see the engine suite).
    """
    clock = _Clock()
    total = min(len(records), int(rate * seconds))
    warmup_s = min(warmup_s, 0.25 * total / rate)  # too few records for the full run: shorter warm-up
    latencies: list[float] = []
    stop = threading.Event()
    counted_from = [float("inf")]
    reader = threading.Thread(target=_read, args=(config, workload, output_topic, clock, latencies,
                                                  counted_from, stop), daemon=True)
    reader.start()
    producer = Producer({**config, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    start = time.time()
    counted_from[0] = start + warmup_s
    for i in range(total):
        key, value, event_id = records[i]
        due = start + i / rate
        now = time.time()
        if due > now:
            time.sleep(due - now)
            now = time.time()
        if workload == "W1":
            clock.by_event[event_id] = now
        else:
            clock.by_key[key].append(now)
        produce(producer, input_topic, value=value, key=key)
        if i % 256 == 0:
            producer.poll(0)
    producer.flush(60)
    achieved = total / max(time.time() - start, 1e-9)
    time.sleep(drain_s)
    stop.set()
    reader.join(30)
    arr = np.array(latencies) * 1000 if latencies else None
    pct = (lambda q: float(np.percentile(arr, q))) if arr is not None else (lambda q: None)
    return LatencyResult(total, achieved, len(latencies), pct(50), pct(95), pct(99))


def _read(config: dict[str, Any], workload: str, topic: str, clock: _Clock, out: list[float],
          counted_from: list[float], stop: threading.Event) -> None:
    consumer = Consumer({**config, "group.id": f"bench-lat-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5,
                         "isolation.level": "read_uncommitted"})
    parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    try:
        while not stop.is_set():
            for msg in consumer.consume(10_000, 0.05):
                arrived = time.time()
                if msg.error() is not None or msg.value() is None:
                    continue
                if workload == "W1":
                    sent = clock.by_event.get(avro_first_string(msg.value()))
                else:
                    times = clock.by_key.get(msg.key())
                    n = int(orjson.loads(msg.value())["count"])
                    sent = times[n - 1] if times and n <= len(times) else None
                if sent is not None and sent >= counted_from[0]:
                    out.append(arrived - sent)
    finally:
        consumer.close()
