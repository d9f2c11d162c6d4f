"""Selecting dead letters and re-publishing their original records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from headwater.connectors.dlq.errors import DeadLetterDeliveryError, DeadLetterTopicError
from headwater.connectors.dlq.records import REPLAYED_FROM, DeadLetterRecord, Header, header_bytes
from headwater.connectors.dlq.source import SourceRecord, SourceRecordGone
from headwater.connectors.produce import produce

DEFAULT_FLUSH_TIMEOUT_S = 60.0
REPLAY_MESSAGE_MAX_BYTES = 64 * 1024 * 1024
"""``message.max.bytes`` of the replay producer: originals re-read from their source may be
larger than librdkafka's 1 MB default; the target topic's own limit still applies."""
_ROLE = "replay target"

SourceFetch = Callable[[str, int, int], SourceRecord]
"""``(topic, partition, offset) -> SourceRecord``, raising ``SourceRecordGone``; e.g.
:meth:`headwater.connectors.dlq.source.SourceReader.fetch`."""


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Selects dead letters by exact error class and/or source topic (``None``: any).

    Messages without headwater metadata never match a set criterion.
    """

    error_class: str | None = None
    source_topic: str | None = None

    def __call__(self, record: DeadLetterRecord) -> bool:
        """Whether ``record`` matches every set criterion."""
        return (self.error_class is None or record.error_class == self.error_class) and (
            self.source_topic is None or record.source_topic == self.source_topic
        )


@dataclass(slots=True)
class ReplayResult:
    """What a replay did.

    Attributes:
        scanned: dead-letter messages read.
        replayed: records re-published (or, in a dry run, that would have been).
        skipped: messages not replayed (filtered out, or without headwater metadata).
        by_error_class: replayed records per error class.
        from_source: replayed records re-read from their source topic (their dead letter was
            written without value, headers or key).
        not_replayable: selected dead letters that could NOT be replayed, as
            ``(dlq location, reason)``: written without their value and the original is gone
            from the source (or no source reader was given). Never silently skipped.
    """

    scanned: int = 0
    replayed: int = 0
    skipped: int = 0
    by_error_class: Counter[str] = field(default_factory=Counter)
    from_source: int = 0
    not_replayable: list[tuple[str, str]] = field(default_factory=list)


def replay_headers(record: DeadLetterRecord) -> list[Header]:
    """The original headers of ``record`` plus ``hw.dlq.replayed-from: <topic>:<part>:<offset>``."""
    return [*record.headers, (REPLAYED_FROM, record.location.encode("utf-8"))]


def replay_dead_letters(
    records: Iterable[DeadLetterRecord],
    producer: Producer,
    target: str,
    *,
    select: Callable[[DeadLetterRecord], bool] = DeadLetterFilter(),
    limit: int | None = None,
    dry_run: bool = False,
    keep_timestamps: bool = True,
    flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S,
    on_progress: Callable[[ReplayResult], None] | None = None,
    source: SourceFetch | None = None,
) -> ReplayResult:
    """Re-publish the original key, value and headers of the selected dead letters to ``target``.

    Partitioning: when ``target`` is the record's source topic, the record goes back to its
    source partition (so keyed co-partitioning holds whatever partitioner first wrote it);
    otherwise the producer's partitioner places it by key. The timestamp is the original one
    (``hw.dlq.source.timestamp``) when known and ``keep_timestamps``, else the current time.

    A dead letter written without its value (or headers, or key) because of its size is
    replayed from the original record, re-read with ``source`` at its source coordinates (also
    in a dry run). When that record is gone, or its size or key does not match the dead letter,
    it is listed in ``not_replayable`` instead.

    Args:
        records: parsed dead-letter messages (e.g. :func:`read_dead_letters`).
        producer: producer to publish with; created with ``allow.auto.create.topics=false`` so a
            mistyped target is an error rather than a new topic.
        target: topic to publish to (must exist).
        select: which records to replay; records without metadata are always skipped.
        limit: stop after replaying this many.
        dry_run: count what would be replayed, publish nothing.
        keep_timestamps: see above.
        flush_timeout_s: how long the final flush may block.
        on_progress: called with the running result after each scanned record.
        source: reads original records for dead letters written without their value.

    Returns:
        The counts.

    Raises:
        DeadLetterTopicError: ``target`` does not exist.
        DeadLetterDeliveryError: some records were not delivered (after the flush).
    """
    partitions = _partition_count(producer, target)
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    result = ReplayResult()
    if limit is not None and limit <= 0:
        return result
    for record in records:
        result.scanned += 1
        if not record.is_dead_letter or not select(record):
            result.skipped += 1
        else:
            original = _original(record, source, result)
            if original is not None:
                if not dry_run:
                    _produce(producer, target, record, original, partitions, keep_timestamps,
                             on_delivery)
                result.replayed += 1
                result.by_error_class[record.error_class or ""] += 1
        if on_progress is not None:
            on_progress(result)
        if limit is not None and result.replayed >= limit:
            break
    if not dry_run:
        undelivered = producer.flush(flush_timeout_s)
        if failures or undelivered:
            first = failures[0] if failures else f"flush timed out after {flush_timeout_s:g}s"
            raise DeadLetterDeliveryError(target, len(failures) + undelivered, first, _ROLE)
    return result


def _partition_count(producer: Producer, target: str) -> int:
    try:
        meta = producer.list_topics(target, timeout=30).topics.get(target)
    except KafkaException as exc:
        raise DeadLetterTopicError(target, f"cannot read metadata: {exc}", _ROLE) from exc
    if meta is None or meta.error is not None or not meta.partitions:
        raise DeadLetterTopicError(target, "does not exist", _ROLE)
    return len(meta.partitions)


def _original(record: DeadLetterRecord, source: SourceFetch | None,
              result: ReplayResult) -> SourceRecord | None:
    """The record to re-publish; None (and listed as not replayable) when it cannot be had."""
    if not record.dropped:
        return SourceRecord(record.key, record.value, record.headers, record.source_timestamp_ms)
    parts = ", ".join(sorted(record.dropped))
    if source is None:
        result.not_replayable.append((record.location, f"written without its {parts} and no "
                                                       "source reader was given"))
        return None
    if None in (record.source_topic, record.source_partition, record.source_offset):
        result.not_replayable.append((record.location, f"written without its {parts} and its "
                                                       "source coordinates are unreadable"))
        return None
    try:
        original = source(record.source_topic, record.source_partition, record.source_offset)
    except SourceRecordGone as gone:
        result.not_replayable.append((record.location, f"written without its {parts}; the "
                                                       f"source record {gone}"))
        return None
    mismatch = _differs(record, original)
    if mismatch:
        result.not_replayable.append((record.location, f"written without its {parts}; the record "
                                      f"now at {record.source_topic}:{record.source_partition}:"
                                      f"{record.source_offset} is another one ({mismatch})"))
        return None
    result.from_source += 1
    return original


def _differs(record: DeadLetterRecord, original: SourceRecord) -> str | None:
    sizes = {"value": len(original.value or b""), "key": len(original.key or b""),
             "headers": header_bytes(original.headers)}
    for part, size in record.dropped.items():
        if size is not None and size != sizes[part]:
            return f"its {part} has {sizes[part]} bytes, the dead letter's had {size}"
    if "key" not in record.dropped and original.key != record.key:
        return "its key differs"
    return None


def _produce(
    producer: Producer,
    target: str,
    record: DeadLetterRecord,
    original: SourceRecord,
    partitions: int,
    keep_timestamps: bool,
    on_delivery: Callable[[KafkaError | None, Any], None],
) -> None:
    kwargs: dict[str, Any] = {
        "key": original.key,
        "value": original.value,
        "headers": [*original.headers, (REPLAYED_FROM, record.location.encode("utf-8"))],
        "on_delivery": on_delivery,
    }
    if (
        record.source_topic == target
        and record.source_partition is not None
        and 0 <= record.source_partition < partitions
    ):
        kwargs["partition"] = record.source_partition
    timestamp = original.timestamp_ms if original.timestamp_ms is not None else record.source_timestamp_ms
    if keep_timestamps and timestamp is not None:
        kwargs["timestamp"] = timestamp
    produce(producer, target, **kwargs)
