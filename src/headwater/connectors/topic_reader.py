"""Read whole topics to their current end (demo, tools, tests): no group, no commits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from headwater.errors import HeadwaterError


class TopicReadTimeout(HeadwaterError):
    """Some partitions were not read to their end in time (names them)."""


def read_to_end(
    kafka_config: Mapping[str, Any],
    topics: Iterable[str],
    *,
    committed_only: bool = True,
    batch_size: int = 10_000,
    timeout_s: float = 60.0,
) -> Iterator[list[Any]]:
    """Yield batches of messages of every partition of ``topics``, from offset 0 to the end.

    The end of a partition is where end-of-partition is first reported: its high watermark, or
    under ``committed_only`` (read_committed) its last stable offset, so an open transaction
    holds it back. Error-free messages only; the consumer joins no group and commits nothing.

    Raises:
        TopicReadTimeout: partitions still unread after ``timeout_s``.
    """
    consumer = Consumer({
        **kafka_config,
        "group.id": f"headwater-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed" if committed_only else "read_uncommitted",
    })
    try:
        assignment = [
            TopicPartition(topic, p, 0)
            for topic in topics
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        consumer.assign(assignment)
        pending = {(tp.topic, tp.partition) for tp in assignment}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TopicReadTimeout(f"not read to the end in {timeout_s}s: {sorted(pending)}")
            batch = []
            for msg in consumer.consume(batch_size, 0.2):
                error = msg.error()
                if error is None:
                    batch.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
            if batch:
                yield batch
    finally:
        consumer.close()
