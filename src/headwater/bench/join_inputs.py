"""Inputs of the join workloads W4 and W4t: two topics each, pre-loaded from one generator pass.

One pass of the generator (:func:`headwater.generator.generate_batches`, the same seed, users and
rule-violation fraction as the orders input of the other workloads) fills four topics:

- W4 ``orders`` (``order.created``) and ``payments`` (``payment.succeeded``), both keyed by
  ``correlationId``: the ``order.created`` and ``payment.succeeded`` events of the generated
  stream, in stream order, until ``events`` records in total;
- W4t ``orders`` (``order.created``) keyed by ``userId`` and ``users`` (``user.registered``,
  keyed by ``userId``, ``cleanup.policy=compact``): likewise until ``events`` records in total.

Every topic has the same partition count and is written with librdkafka's ``murmur2_random``
partitioner (the Java clients' murmur2, which Quix Streams' producer and headwater's ``key_by``
use), so the two topics of a workload are co-partitioned by key. Each record's Kafka timestamp is
its event time (the envelope's ``timestamp``): Quix Streams consumes co-partitioned topics in
Kafka-timestamp order. The topics are reused by later runs with the same parameters (the names
hold them) and never timed.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
import numpy as np
import orjson
import polars as pl
from confluent_kafka import KafkaError, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from headwater.bench import kafka_io, workloads
from headwater.bench.kafka_io import DELIVERY_TIMEOUT_S, PRODUCER
from headwater.bench.workloads import JoinExpected, Timed
from headwater.generator import GeneratorConfig, generate_batches
from headwater.generator.encode import WireEncoder
from headwater.generator.events import nest, to_dicts
from headwater.schemas.admin import register_schema
from headwater.schemas.catalog import event_type

ORDER, PAYMENT, USER = "order.created", "payment.succeeded", "user.registered"
#: Bump when the way the inputs are generated changes (it is part of the topic names).
VERSION = "v1"


@dataclass(frozen=True)
class Side:
    """One input topic of a join workload."""

    role: str  # orders | payments | users
    event_type: str
    key_field: str  # envelope field holding the record key
    compacted: bool = False


#: Per join workload: its (left, right) inputs. The left side's topic is ``BENCH_INPUT``, the
#: right side's ``BENCH_INPUT2``.
SIDES: dict[str, tuple[Side, Side]] = {
    "W4": (Side("orders", ORDER, "correlationId"), Side("payments", PAYMENT, "correlationId")),
    "W4t": (Side("orders", ORDER, "userId"), Side("users", USER, "userId", compacted=True)),
}
#: The topics whose consumer-group offsets end a timed run. W4t: the orders only; the users
#: table's topic may be read outside the group (a table restored from its topic, a global table's
#: reader), and it is small (at most ``users`` records).
TIMED_SIDES = {"W4": ("orders", "payments"), "W4t": ("orders",)}
PRODUCER_CONFIG = {**PRODUCER, "partitioner": "murmur2_random"}


def topic_name(workload: str, role: str, fmt: str, seed: int, users: int, events: int,
               partitions: int) -> str:
    """``bench.w4.orders.avro.v1.s1.u10000.n1000000.p4``: everything that shapes the content."""
    return f"bench.{workload.lower()}.{role}.{fmt}.{VERSION}.s{seed}.u{users}.n{events}.p{partitions}"


@dataclass
class JoinInput:
    """The two topics of one join workload."""

    workload: str
    left: str
    right: str

    @property
    def topics(self) -> tuple[str, str]:
        return self.left, self.right

    @property
    def timed(self) -> list[str]:
        sides = SIDES[self.workload]
        return [t for side, t in zip(sides, self.topics) if side.role in TIMED_SIDES[self.workload]]


def join_inputs(workloads_: list[str], fmt: str, seed: int, users: int, events: int,
                partitions: int) -> dict[str, JoinInput]:
    """The inputs of the requested join workloads."""
    out = {}
    for w in workloads_:
        if w in SIDES:
            left, right = SIDES[w]
            out[w] = JoinInput(w, *(topic_name(w, s.role, fmt, seed, users, events, partitions)
                                    for s in (left, right)))
    return out


def prepare(kafka: dict[str, Any], registry_url: str, inputs: dict[str, JoinInput], fmt: str,
            seed: int, users: int, invalid_fraction: float, events: int, partitions: int,
            progress: Callable[[str], None]) -> list[str]:
    """Create the topics and pre-load those not yet complete (each workload's pair holds exactly
    ``events`` records when complete); returns a line per workload saying what was done."""
    lines, todo = [], {}
    for w, inp in inputs.items():
        left, right = SIDES[w]
        kafka_io.create_topics(kafka, [inp.left], partitions, {"retention.ms": "-1"})
        kafka_io.create_topics(kafka, [inp.right], partitions,
                               {"cleanup.policy": "compact"} if right.compacted else {"retention.ms": "-1"})
        have = sum(sum(kafka_io.end_offsets(kafka, t).values()) for t in inp.topics)
        if have == events:
            lines.append(f"reusing {inp.left} + {inp.right} ({have:,} records)")
        elif have:
            raise RuntimeError(f"{inp.left} + {inp.right} hold {have} records, not {events}: delete them")
        else:
            todo[w] = inp
    if todo:
        t0 = time.monotonic()
        counts = preload(kafka, registry_url, todo, fmt, seed, users, invalid_fraction, events,
                         progress)
        for w, inp in todo.items():
            lines.append(f"pre-loaded {inp.left} ({counts[inp.left]:,}) + {inp.right} "
                         f"({counts[inp.right]:,}) in {time.monotonic() - t0:.1f} s (not timed)")
    return lines


def _encoders(registry_url: str, fmt: str, inputs: dict[str, JoinInput]) -> dict[str, Callable[[str, pl.DataFrame], list[bytes]]]:
    """Per topic: (event type, nested frame) -> values (Avro: registered under ``<topic>-value``)."""
    out: dict[str, Callable[[str, pl.DataFrame], list[bytes]]] = {}
    client = SchemaRegistryClient({"url": registry_url}) if fmt == "avro" else None
    for w, inp in inputs.items():
        for side, topic in zip(SIDES[w], inp.topics):
            if client is not None:
                sid = register_schema(client, f"{topic}-value", event_type(side.event_type).schema_str).schema_id
                encoder = WireEncoder({side.event_type: sid})
                out[topic] = encoder.encode_frame
            else:
                out[topic] = lambda name, nested: [orjson.dumps(e) for e in to_dicts(name, nested)]
    return out


def select(frames: dict[str, pl.DataFrame], sides: tuple[Side, Side], room: int) -> dict[str, pl.DataFrame]:
    """The rows of a generated batch that go to a workload's two topics (those with a key), in
    stream order, at most ``room`` of them in total (the first ones by position)."""
    picked = {}
    for side in sides:
        frame = frames.get(side.event_type)
        if frame is not None and len(frame):
            picked[side.role] = frame.filter(pl.col(side.key_field).is_not_null())
    positions = np.sort(np.concatenate([f["_pos"].to_numpy() for f in picked.values()])) \
        if picked else np.zeros(0, np.int64)
    if len(positions) > room:
        last = positions[room - 1] if room > 0 else -1
        picked = {role: f.filter(pl.col("_pos") <= last) for role, f in picked.items()}
    return {role: f for role, f in picked.items() if len(f)}


def preload(kafka: dict[str, Any], registry_url: str, inputs: dict[str, JoinInput], fmt: str,
            seed: int, users: int, invalid_fraction: float, events: int,
            progress: Callable[[str], None]) -> dict[str, int]:
    """One generator pass filling every workload's pair with ``events`` records; records per
    topic. The producer lets librdkafka retry transient errors for ``DELIVERY_TIMEOUT_S``."""
    config = GeneratorConfig(seed=seed, invalid_fraction=invalid_fraction, users=users)
    encoders = _encoders(registry_url, fmt, inputs)
    producer = Producer({**kafka, **PRODUCER_CONFIG})
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    left = {w: events for w in inputs}
    counts = {t: 0 for inp in inputs.values() for t in inp.topics}
    batches: Iterator = generate_batches(config)
    while any(left.values()):
        batch = next(batches)
        for w, inp in inputs.items():
            if not left[w]:
                continue
            sides = SIDES[w]
            chosen = select(batch.frames, sides, left[w])
            for side, topic in zip(sides, inp.topics):
                frame = chosen.get(side.role)
                if frame is None:
                    continue
                values = encoders[topic](side.event_type, nest(side.event_type, frame, config.environment))
                keys = frame[side.key_field].to_list()
                stamps = frame["timestamp"].to_list()
                for key, value, ts in zip(keys, values, stamps):
                    while True:
                        try:
                            producer.produce(topic, value, key.encode(), timestamp=ts, on_delivery=delivered)
                            break
                        except BufferError:
                            producer.poll(0.05)
                counts[topic] += len(values)
                left[w] -= len(values)
            producer.poll(0)
        progress("pre-loading join inputs: " + ", ".join(
            f"{w} {events - n:,}/{events:,}" for w, n in left.items()))
    if producer.flush(DELIVERY_TIMEOUT_S + 30):
        raise RuntimeError("preload of the join inputs not delivered in time")
    if failed:
        raise RuntimeError(f"preload of the join inputs: {len(failed)} records not delivered ({failed[0]})")
    return counts


def decoder(fmt: str, name: str) -> Callable[[bytes], dict[str, Any]]:
    """Value -> event dict (the harness's own decoder: fastavro or orjson)."""
    if fmt == "avro":
        schema = fastavro.parse_schema(event_type(name).schema)
        return lambda value: fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None)
    return orjson.loads


def expected(kafka: dict[str, Any], inp: JoinInput, fmt: str) -> JoinExpected:
    """The workload's expected output, computed by the harness from the two topics read back."""
    left_side, right_side = SIDES[inp.workload]
    decode_left = decoder(fmt, left_side.event_type)
    decode_right = decoder(fmt, right_side.event_type)
    left: list[Timed] = [workloads.order_side(decode_left(v), left_side.key_field)
                         for _, _, v in kafka_io.read_partitions(kafka, inp.left)]
    if inp.workload == "W4":
        right = [workloads.payment_side(decode_right(v)) for _, _, v in kafka_io.read_partitions(kafka, inp.right)]
        return workloads.interval_join(left, right, workloads.INTERVAL_JOINS["W4"])
    # the table in offset order per partition (a key lives in one partition)
    table = [workloads.user_side(decode_right(v)) for _, _, v in kafka_io.read_partitions(kafka, inp.right)
             if v is not None]
    return workloads.enrich(left, table)
