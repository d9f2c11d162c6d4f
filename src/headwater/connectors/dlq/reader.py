"""Reading a dead-letter topic up to the end it had when reading started."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from headwater.connectors.dlq.errors import DeadLetterReadError, DeadLetterTopicError
from headwater.connectors.dlq.records import DeadLetterRecord, record_from_message

DEFAULT_READ_TIMEOUT_S = 30.0
_BATCH = 500
_POLL_S = 0.1  # consume() waits this long unless a full batch arrives


def read_dead_letters(
    consumer_config: Mapping[str, Any],
    topic: str,
    *,
    limit: int | None = None,
    from_beginning: bool = True,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> Iterator[DeadLetterRecord]:
    """Yield the messages of a dead-letter topic, parsed, then stop at the topic's end.

    The end of each partition is fixed when reading starts (its offset end under
    ``read_committed``), so records written meanwhile (even by a replay into the same topic) are
    not read and the iteration always terminates. Partitions are read concurrently: the order is
    by offset within a partition, not across partitions.

    Reading moves nothing: the partitions are assigned directly (no group membership), offsets
    are never committed, and the group id is unique unless ``consumer_config`` sets one.

    Args:
        consumer_config: librdkafka settings (at least ``bootstrap.servers``).
        topic: the dead-letter topic.
        limit: stop after this many records (``None``: read to the end).
        from_beginning: True to start at each partition's first retained offset; False to yield
            only the newest ``limit`` records of EACH partition (``limit`` then required). That
            mode reads the last ``2 * limit`` offsets (transaction markers take offsets too), so
            after aborted transactions it may return fewer.
        timeout_s: give up when no progress is made for this long (metadata and fetches).

    Yields:
        :class:`DeadLetterRecord` per message, including messages without headwater metadata
        (``is_dead_letter`` false).

    Raises:
        DeadLetterTopicError: the topic does not exist.
        DeadLetterReadError: a fetch failed or a partition's end was not reached in time.
        ValueError: ``from_beginning=False`` without ``limit``.
    """
    if not from_beginning and limit is None:
        raise ValueError("from_beginning=False needs a limit (the newest N per partition)")
    if limit is not None and limit <= 0:
        return
    config = {
        "group.id": f"headwater-dlq-reader-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        **consumer_config,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
    }
    consumer = Consumer(config)
    try:
        ends = _assign(consumer, topic, limit, from_beginning, timeout_s)
        if from_beginning:
            yield from _read(consumer, topic, ends, limit, timeout_s)
            return
        newest: dict[int, deque[DeadLetterRecord]] = {}
        for record in _read(consumer, topic, ends, None, timeout_s):
            newest.setdefault(record.dlq_partition, deque(maxlen=limit)).append(record)
        for partition in sorted(newest):
            yield from newest[partition]
    finally:
        consumer.close()


def _assign(
    consumer: Consumer, topic: str, limit: int | None, from_beginning: bool, timeout_s: float
) -> dict[int, int]:
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise DeadLetterTopicError(topic, f"cannot read metadata: {exc}") from exc
    if meta is None or meta.error is not None:
        reason = meta.error.str() if meta is not None and meta.error else "unknown topic"
        raise DeadLetterTopicError(topic, f"does not exist or is not readable ({reason})")
    starts: list[TopicPartition] = []
    ends: dict[int, int] = {}
    for partition in sorted(meta.partitions):
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s, cached=False
            )
        except KafkaException as exc:
            raise DeadLetterReadError(topic, f"partition {partition}: offsets: {exc}") from exc
        start = low if from_beginning else max(low, high - 2 * (limit or 0))
        if start < high:
            starts.append(TopicPartition(topic, partition, start))
            ends[partition] = high
    consumer.assign(starts)
    return ends


def _read(
    consumer: Consumer, topic: str, ends: dict[int, int], limit: int | None, timeout_s: float
) -> Iterator[DeadLetterRecord]:
    pending = dict(ends)
    count = 0
    last_progress = time.monotonic()
    while pending:
        messages = consumer.consume(num_messages=_BATCH, timeout=_POLL_S)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise DeadLetterReadError(topic, f"fetch failed: {error.str()}", _positions(
                    consumer, topic, pending))
            partition, offset = message.partition(), message.offset()
            end = pending.get(partition)
            if end is None or offset >= end:
                _done(consumer, topic, partition, pending)
                continue
            last_progress = time.monotonic()
            yield record_from_message(message)
            count += 1
            if limit is not None and count >= limit:
                return
            if offset >= end - 1:
                _done(consumer, topic, partition, pending)
        # transaction markers occupy offsets without yielding messages: trust the position
        for partition, (position, end) in _positions(consumer, topic, pending).items():
            if position >= end:
                _done(consumer, topic, partition, pending)
        if not messages:
            if pending and time.monotonic() - last_progress > timeout_s:
                raise DeadLetterReadError(
                    topic,
                    f"no progress for {timeout_s:g}s before the end of partition(s) "
                    f"{sorted(pending)}",
                    _positions(consumer, topic, pending),
                )


def _done(consumer: Consumer, topic: str, partition: int, pending: dict[int, int]) -> None:
    if pending.pop(partition, None) is not None:
        consumer.pause([TopicPartition(topic, partition)])


def _positions(
    consumer: Consumer, topic: str, pending: dict[int, int]
) -> dict[int, tuple[int, int]]:
    tps = consumer.position([TopicPartition(topic, p) for p in pending])
    return {tp.partition: (tp.offset, pending[tp.partition]) for tp in tps}
