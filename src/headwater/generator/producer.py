"""Publish the generated stream to Kafka: register schemas, create topics, batch, rate-limit.

The generator yields column batches (:func:`generate_batches`); per slice of ``batch_size``
events and per event type: nest the flat columns into the schema layout, encode them in one
vectorized call (:meth:`WireEncoder.encode_frame`), break the records the generator marked
malformed, then ``produce()`` them in a tight loop with a queue-full retry and one ``poll(0)`` per
slice. The producer is tuned for throughput (see
:data:`PRODUCER_TUNING`); delivery reports are requested for errors only.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from headwater.errors import ConfigError, HeadwaterError
from headwater.generator.encode import WireEncoder
from headwater.generator.events import flat_column, nest, to_dicts
from headwater.generator.faults import malform
from headwater.generator.jsonl import record_line
from headwater.generator.model import GeneratedEvent, GeneratorConfig, KeyChoice
from headwater.generator.pipeline import EventBatch, generate_batches
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

Group = tuple[str, list[bytes], list[str | None]]  # (topic, values, keys) of one event type


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
    batch_size: int = 40_000
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
    gc.set_threshold(200_000, 20, 1_000)  # batches of bytes objects: default GC wastes time on them
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


def key_column(choice: KeyChoice, et: EventType) -> str | None:
    """The flat column (see :mod:`headwater.generator.events`) holding the record key of
    ``et``'s events for ``choice``; None for no key."""
    if choice is KeyChoice.NONE:
        return None
    if choice is KeyChoice.DEFAULT:
        return flat_column(et.key_field)
    return {KeyChoice.EVENT_ID: "eventId", KeyChoice.USER_ID: "userId", KeyChoice.CORRELATION_ID: "correlationId"}[choice]


def key_function(choice: KeyChoice) -> Callable[[EventType, dict[str, Any]], str | None]:
    """How the record key is taken from an event dict for ``choice`` (see :class:`KeyChoice`;
    the producer reads the same fields column-wise, :func:`key_column`)."""
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
    """Turns generated batches into per-topic groups of (values, keys), breaking some on purpose."""

    def __init__(self, config: GeneratorConfig, prefix: str, encoder: WireEncoder) -> None:
        self._types = catalog()
        self._topics = {name: t.topic(prefix) for name, t in self._types.items()}
        self._encoder = encoder
        self._environment = config.environment
        self._keys = {name: key_column(config.key, t) for name, t in self._types.items()}

    def records(self, batch: EventBatch, out: IO[bytes] | None) -> list[Group]:
        """One group per event type (stream order within a type); writes the side file lines in
        produce order when ``out`` is given."""
        groups: list[Group] = []
        lines: list[bytes] = []
        for name, frame in batch.frames.items():
            topic = self._topics[name]
            nested = nest(name, frame, self._environment)
            values = self._encoder.encode_frame(name, nested)
            broken = frame["_malformed"]
            if broken.null_count() < len(broken):
                kinds, seeds = broken.to_list(), frame["_mseed"].to_list()
                for i, kind in enumerate(kinds):
                    if kind is not None:
                        values[i] = malform(values[i], kind, seeds[i])
            column = self._keys[name]
            keys = frame[column].to_list() if column is not None else [None] * len(frame)
            groups.append((topic, values, keys))
            if out is not None:
                flags = frame.select("_invalid", "_malformed", "_delayed", "_lateness").rows()
                for event, key, (invalid, malformed, delayed, lateness) in zip(to_dicts(name, nested), keys, flags):
                    generated = GeneratedEvent(name, event)
                    generated.invalid, generated.malformed, generated.delayed = invalid, malformed, delayed
                    generated.lateness_ms = lateness
                    lines.append(record_line(topic, key, generated))
        if out is not None:
            out.write(b"".join(lines))
        return groups


def _batches(
    config: GeneratorConfig, options: ProduceOptions, stage: _Stage,
    report: ProduceReport, out: IO[bytes] | None,
) -> Iterator[list[Group]]:
    size = options.batch_size
    if options.rate is not None:  # about 10 batches per second, so pacing stays smooth
        size = max(1, min(size, int(options.rate / 10)))
    for chunk in generate_batches(config, options.count):
        for batch in chunk.slices(size):
            for name, frame in batch.frames.items():
                report.per_type[name] += len(frame)
                report.invalid += len(frame) - frame["_invalid"].null_count()
                report.malformed += len(frame) - frame["_malformed"].null_count()
                delayed = frame["_delayed"]
                if delayed.null_count() < len(delayed):
                    late = int((delayed == "late").sum())
                    report.late += late
                    report.out_of_order += len(delayed) - delayed.null_count() - late
            yield stage.records(batch, out)


def _publish(
    producer: Producer, batches: Iterator[list[Group]], options: ProduceOptions,
    report: ProduceReport, progress: IO[str] | None,
) -> None:
    start = time.perf_counter()
    deadline = start + options.duration_s if options.duration_s is not None else None
    next_progress = start
    produce, poll = producer.produce, producer.poll
    for groups in batches:
        count = 0
        for topic, values, keys in groups:
            n, i = len(values), 0
            while i < n:
                try:
                    for i in range(i, n):  # noqa: B020 - resumes at the record that did not fit
                        produce(topic, values[i], keys[i])
                    i = n
                except BufferError:  # local queue full: let librdkafka drain it
                    poll(0.05)
            count += n
        poll(0)
        report.events += count
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
