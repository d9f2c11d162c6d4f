"""Re-reading a dead letter's original record from its source topic, by its coordinates.

Needed for dead letters written without their value (too large for the DLQ topic, see
:class:`~headwater.connectors.dlq.writer.DeadLetterWriter`): their ``hw.dlq.source.*`` headers
say where the original is, for as long as the source topic retains it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from headwater.connectors.dlq.errors import DeadLetterReadError
from headwater.connectors.dlq.records import Header

_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record as it is in its source topic."""

    key: bytes | None
    value: bytes | None
    headers: list[Header]
    timestamp_ms: int | None


class SourceRecordGone(Exception):
    """The record is no longer in its source topic (retention, compaction, topic deleted).

    Attributes:
        coordinates: ``<topic>:<partition>:<offset>``.
        reason: why, one line.
    """

    def __init__(self, coordinates: str, reason: str) -> None:
        self.coordinates, self.reason = coordinates, reason
        super().__init__(f"{coordinates}: {reason}")


class SourceReader:
    """Reads single records of source topics by (topic, partition, offset).

    One consumer (created on first use, no group membership, nothing committed,
    ``read_committed``), re-assigned for each record. Use as a context manager or :meth:`close`.
    """

    def __init__(self, consumer_config: Mapping[str, Any], timeout_s: float = 30.0) -> None:
        """
        Args:
            consumer_config: librdkafka settings (at least ``bootstrap.servers``).
            timeout_s: how long one fetch may take before it is an error (not "gone").
        """
        self._config = {
            "group.id": f"headwater-dlq-source-{uuid.uuid4().hex}",
            **consumer_config,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "error",
            "enable.partition.eof": True,
        }
        self._timeout_s = timeout_s
        self._consumer: Consumer | None = None

    def fetch(self, topic: str, partition: int, offset: int) -> SourceRecord:
        """The record at ``topic:partition:offset``.

        Raises:
            SourceRecordGone: the topic, partition or offset no longer exists.
            DeadLetterReadError: the broker could not be read in time (a transient failure).
        """
        where = f"{topic}:{partition}:{offset}"
        consumer = self._open()
        tp = TopicPartition(topic, partition)
        try:
            meta = consumer.list_topics(topic, timeout=self._timeout_s).topics.get(topic)
            if meta is None or meta.error is not None or partition not in meta.partitions:
                raise SourceRecordGone(where, "the topic or partition does not exist")
            low, high = consumer.get_watermark_offsets(tp, timeout=self._timeout_s, cached=False)
        except KafkaException as exc:
            raise DeadLetterReadError(topic, f"reading {where}: {exc}") from exc
        if offset < low:
            raise SourceRecordGone(where, f"deleted (the partition now starts at offset {low})")
        if offset >= high:
            raise SourceRecordGone(where, f"not in the partition (it ends at offset {high})")
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + self._timeout_s
        try:
            while time.monotonic() < deadline:
                message = consumer.poll(_POLL_S)
                if message is None:
                    continue
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise DeadLetterReadError(topic, f"reading {where}: {error.str()}")
                if error is not None or message.offset() != offset:
                    after = "" if error is not None else f"; the next record is at {message.offset()}"
                    raise SourceRecordGone(where, "no longer readable (compacted away, or a "
                                           f"transaction marker or aborted record){after}")
                ts_type, ts = message.timestamp()
                return SourceRecord(message.key(), message.value(), list(message.headers() or ()),
                                    ts if ts_type else None)
        finally:
            consumer.unassign()
        raise DeadLetterReadError(topic, f"reading {where}: no record within {self._timeout_s:g}s")

    def close(self) -> None:
        """Close the consumer (if one was opened)."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _open(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        return self._consumer
