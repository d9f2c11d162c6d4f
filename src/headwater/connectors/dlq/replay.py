"""Selecting dead letters and re-publishing their original records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from headwater.connectors.dlq.errors import DeadLetterDeliveryError, DeadLetterTopicError
from headwater.connectors.dlq.records import REPLAYED_FROM, DeadLetterRecord, Header

DEFAULT_FLUSH_TIMEOUT_S = 60.0
_ROLE = "replay target"


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
    """

    scanned: int = 0
    replayed: int = 0
    skipped: int = 0
    by_error_class: Counter[str] = field(default_factory=Counter)


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
) -> ReplayResult:
    """Re-publish the original key, value and headers of the selected dead letters to ``target``.

    Partitioning: when ``target`` is the record's source topic, the record goes back to its
    source partition (so keyed co-partitioning holds whatever partitioner first wrote it);
    otherwise the producer's partitioner places it by key. The timestamp is the original one
    (``hw.dlq.source.timestamp``) when known and ``keep_timestamps``, else the current time.

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
            if not dry_run:
                _produce(producer, target, record, partitions, keep_timestamps, on_delivery)
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


def _produce(
    producer: Producer,
    target: str,
    record: DeadLetterRecord,
    partitions: int,
    keep_timestamps: bool,
    on_delivery: Callable[[KafkaError | None, Any], None],
) -> None:
    kwargs: dict[str, Any] = {
        "key": record.key,
        "value": record.value,
        "headers": replay_headers(record),
        "on_delivery": on_delivery,
    }
    if (
        record.source_topic == target
        and record.source_partition is not None
        and 0 <= record.source_partition < partitions
    ):
        kwargs["partition"] = record.source_partition
    if keep_timestamps and record.source_timestamp_ms is not None:
        kwargs["timestamp"] = record.source_timestamp_ms
    while True:
        try:
            producer.produce(target, **kwargs)
            return
        except BufferError:
            producer.poll(0.1)
