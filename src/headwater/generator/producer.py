"""Publish the generated stream to Kafka: register schemas, create topics, batch, rate-limit.

Per batch of ``batch_size`` events: group by type, encode each group in one call
(:class:`WireEncoder`), break a ``malformed_fraction`` of records, then ``produce()`` them with a
queue-full retry and one ``poll(0)`` per batch. The producer is tuned for throughput (see
:data:`PRODUCER_TUNING`); delivery reports are requested for errors only.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from headwater.errors import ConfigError, HeadwaterError
from headwater.generator.encode import WireEncoder
from headwater.generator.faults import malform
from headwater.generator.jsonl import record_line
from headwater.generator.model import GeneratedEvent, GeneratorConfig, KeyChoice
from headwater.generator.pipeline import generate
from headwater.schemas.admin import register_catalog
from headwater.schemas.catalog import DEFAULT_PREFIX, EventType, catalog

PRODUCER_TUNING: dict[str, Any] = {
    "linger.ms": 20,  # fill batches under load; at most 20 ms extra latency when idle
    "batch.size": 1_000_000,  # bytes per partition batch
    "compression.type": "lz4",  # cheap on CPU, ~3x smaller for these payloads
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "delivery.report.only.error": True,  # no per-record callback on success
}

Batch = list[tuple[str, bytes | None, bytes]]  # (topic, key, value)


class ProduceError(HeadwaterError):
    """Records were not delivered.

    Attributes:
        failed: how many records failed.
        first_error: the first delivery error reported by the client.
    """

    def __init__(self, failed: int, first_error: str) -> None:
        self.failed = failed
        self.first_error = first_error
        super().__init__(f"{failed} records were not delivered; first error: {first_error}")


@dataclass(frozen=True)
class ProduceOptions:
    """How to publish (what to generate is :class:`GeneratorConfig`).

    Attributes:
        count: events to produce; None with ``duration_s`` for a timed run.
        duration_s: wall-clock seconds to produce for (stops at whichever comes first).
        rate: target events per second; None for as fast as possible.
        prefix: topic prefix (topics ``<prefix>.<eventType>``).
        partitions: partitions of topics this run creates (existing topics are left alone).
        batch_size: events generated, encoded and handed to the producer per step.
        output: write the side file (see :mod:`headwater.generator.jsonl`) here.
        pregenerate: generate and encode everything before producing (needs ``count``); the
            report then times producing alone, which measures the broker path.
        progress: live progress line on stderr; None means "when stderr is a terminal".
    """

    count: int | None = 10_000
    duration_s: float | None = None
    rate: float | None = None
    prefix: str = DEFAULT_PREFIX
    partitions: int = 3
    batch_size: int = 10_000
    output: Path | None = None
    pregenerate: bool = False
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.count is None and self.duration_s is None:
            raise ConfigError("count", "give a number of events or a duration")
        if self.count is not None and self.count < 0:
            raise ConfigError("count", f"must be >= 0, got {self.count}")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("rate", f"must be > 0, got {self.rate}")
        if self.pregenerate and (self.count is None or self.duration_s is not None):
            raise ConfigError("pregenerate", "needs a number of events and no duration")
        if self.batch_size < 1 or self.partitions < 1:
            raise ConfigError("batch_size", "batch size and partitions must be >= 1")


@dataclass
class ProduceReport:
    """What a run produced: totals, per-type counts and timings."""

    events: int = 0
    seconds: float = 0.0
    prepare_seconds: float = 0.0
    per_type: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    malformed: int = 0
    late: int = 0
    out_of_order: int = 0

    @property
    def rate(self) -> float:
        """Achieved events per second (producing, including the final flush)."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """The one-line summary printed at the end of a run."""
        prep = f" (+{self.prepare_seconds:.2f} s pregenerating)" if self.prepare_seconds else ""
        types = " ".join(f"{name}={n}" for name, n in sorted(self.per_type.items()))
        return (
            f"produced {self.events} events in {self.seconds:.2f} s{prep} = {self.rate:,.0f} events/s;"
            f" invalid={self.invalid} malformed={self.malformed} late={self.late}"
            f" out-of-order={self.out_of_order}; {types}"
        )


def produce_generated(
    kafka_config: dict[str, Any],
    registry: SchemaRegistryClient,
    config: GeneratorConfig,
    options: ProduceOptions,
    stderr: IO[str] = sys.stderr,
) -> ProduceReport:
    """Register the catalog, create missing topics, and publish the generated stream.

    Raises:
        ProduceError: some records were not delivered (after the final flush).
        IncompatibleSchema, RegistryError: from registering the catalog.
    """
    types = list(catalog().values())
    ids = {name: reg.schema_id for name, reg in register_catalog(registry, options.prefix).items()}
    ensure_topics(kafka_config, [t.topic(options.prefix) for t in types], options.partitions)
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer({**kafka_config, **PRODUCER_TUNING, "on_delivery": on_delivery})
    stage = _Stage(config, options.prefix, WireEncoder(ids))
    report = ProduceReport()
    out = open(options.output, "wb") if options.output else None  # noqa: SIM115 - closed below
    thresholds = gc.get_threshold()
    gc.set_threshold(200_000, 20, 1_000)  # many long-lived dicts: default GC costs ~40% of a run
    try:
        batches = _batches(config, options, stage, report, out)
        if options.pregenerate:
            start = time.perf_counter()
            batches = iter(list(batches))
            report.prepare_seconds = time.perf_counter() - start
        show = stderr.isatty() if options.progress is None else options.progress
        _publish(producer, batches, options, report, stderr if show else None)
    finally:
        gc.set_threshold(*thresholds)
        if out is not None:
            out.close()
    if errors:
        raise ProduceError(len(errors), errors[0])
    return report


def ensure_topics(kafka_config: dict[str, Any], topics: Iterable[str], partitions: int) -> list[str]:
    """Create the topics that do not exist yet (replication 1 capped by the broker count);
    returns the ones created."""
    admin = AdminClient(dict(kafka_config))
    metadata = admin.list_topics(timeout=30)
    missing = [t for t in topics if t not in metadata.topics]
    if not missing:
        return []
    replication = min(3, len(metadata.brokers)) or 1
    futures = admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
    for topic, future in futures.items():
        try:
            future.result(timeout=30)
        except Exception as exc:  # KafkaException wrapping a KafkaError
            err = exc.args[0] if exc.args else None
            if getattr(err, "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise HeadwaterError(f"cannot create topic '{topic}': {exc}") from exc
    return missing


def key_function(choice: KeyChoice) -> Callable[[EventType, dict[str, Any]], str | None]:
    """How the record key is taken from an event for ``choice`` (see :class:`KeyChoice`)."""
    field_name = {
        KeyChoice.EVENT_ID: "eventId",
        KeyChoice.USER_ID: "userId",
        KeyChoice.CORRELATION_ID: "correlationId",
    }.get(choice)
    if choice is KeyChoice.DEFAULT:
        return lambda et, event: et.key_of(event)
    if choice is KeyChoice.NONE:
        return lambda et, event: None
    return lambda et, event: event.get(field_name)


class _Stage:
    """Turns generated events into (topic, key, value) records, breaking some on purpose."""

    def __init__(self, config: GeneratorConfig, prefix: str, encoder: WireEncoder) -> None:
        self._types = catalog()
        self._topics = {name: t.topic(prefix) for name, t in self._types.items()}
        self._encoder = encoder
        self._key = key_function(config.key)
        self._malformed = config.malformed_fraction
        self._rng = random.Random(f"{config.seed}:malformed")

    def records(self, events: list[GeneratedEvent], out: IO[bytes] | None) -> Batch:
        by_type: dict[str, list[GeneratedEvent]] = {}
        for event in events:
            by_type.setdefault(event.event_type, []).append(event)
        batch: Batch = []
        lines: list[bytes] = []
        for name, group in by_type.items():
            et, topic = self._types[name], self._topics[name]
            values = self._encoder.encode(name, [e.event for e in group])
            for event, value in zip(group, values):
                if self._malformed and self._rng.random() < self._malformed:
                    value, event.malformed = malform(value, self._rng)
                key = self._key(et, event.event)
                batch.append((topic, key.encode() if key is not None else None, value))
                if out is not None:
                    lines.append(record_line(topic, key, event))
        if out is not None:
            out.write(b"".join(lines))
        return batch


def _batches(
    config: GeneratorConfig, options: ProduceOptions, stage: _Stage,
    report: ProduceReport, out: IO[bytes] | None,
) -> Iterator[Batch]:
    stream = generate(config, options.count)
    size = options.batch_size
    if options.rate is not None:  # about 10 batches per second, so pacing stays smooth
        size = max(1, min(size, int(options.rate / 10)))
    while events := list(islice(stream, size)):
        for event in events:
            report.per_type[event.event_type] += 1
            report.invalid += event.invalid is not None
            report.late += event.delayed == "late"
            report.out_of_order += event.delayed == "out-of-order"
        batch = stage.records(events, out)
        report.malformed += sum(e.malformed is not None for e in events)
        yield batch


def _publish(
    producer: Producer, batches: Iterator[Batch], options: ProduceOptions,
    report: ProduceReport, progress: IO[str] | None,
) -> None:
    start = time.perf_counter()
    deadline = start + options.duration_s if options.duration_s is not None else None
    next_progress = start
    produce, poll = producer.produce, producer.poll
    for batch in batches:
        for topic, key, value in batch:
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:  # local queue full: let librdkafka drain it
                    poll(0.05)
        poll(0)
        report.events += len(batch)
        now = time.perf_counter()
        if options.rate is not None and (ahead := report.events / options.rate - (now - start)) > 0:
            time.sleep(ahead if deadline is None else max(0.0, min(ahead, deadline - now)))
            now = time.perf_counter()
        if progress is not None and now >= next_progress:
            progress.write(f"\r{report.events:>12,} events  {report.events / max(now - start, 1e-9):>10,.0f} events/s")
            progress.flush()
            next_progress = now + 0.5
        if deadline is not None and now >= deadline:
            break
    remaining = producer.flush(60)
    report.seconds = time.perf_counter() - start
    if progress is not None:
        progress.write("\n")
    if remaining:
        raise ProduceError(remaining, "not delivered within 60 s of the final flush")
