"""What flows into a topology: a batch of raw Kafka records, columnar, and its metadata columns.

A batch from one source topic becomes one Polars frame: the decoded value's fields as columns,
plus the metadata columns below. Operators keep the metadata columns unless told otherwise, so
any row can always be traced back to its source record (for the DLQ and for offsets).
A :class:`RecordBatch` holds the raw records as parallel lists (one per attribute), never as one
Python object per record; :class:`RawRecord` exists only for the records that are dead-lettered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

KEY = "_key"
TOPIC = "_topic"
PARTITION = "_partition"
OFFSET = "_offset"
TIMESTAMP = "_timestamp"
METADATA_COLUMNS = (KEY, TOPIC, PARTITION, OFFSET, TIMESTAMP)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read from Kafka (materialized only when it is dead-lettered)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None = field(default=None)


@dataclass(slots=True)
class RecordBatch:
    """Records of one topic as parallel columns, in consumption order.

    ``messages`` (optional) are the client's message objects, kept only to read headers lazily.
    """

    topic: str
    partitions: list[int]
    offsets: list[int]
    timestamps: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    headers: list[Headers | None] | None = None
    messages: Sequence[Any] | None = None
    _index: dict[tuple[int, int], int] | None = None

    @classmethod
    def from_messages(cls, topic: str, messages: Sequence[Any]) -> RecordBatch:
        """From confluent-kafka ``Message`` objects of one topic (no error messages)."""
        return cls(
            topic,
            [m.partition() for m in messages],
            [m.offset() for m in messages],
            [m.timestamp()[1] for m in messages],
            [m.key() for m in messages],
            [m.value() for m in messages],
            messages=messages,
        )

    @classmethod
    def from_records(cls, topic: str, records: Sequence[RawRecord]) -> RecordBatch:
        """From :class:`RawRecord` objects (the in-process test driver)."""
        return cls(
            topic,
            [r.partition for r in records],
            [r.offset for r in records],
            [r.timestamp_ms for r in records],
            [r.key for r in records],
            [r.value for r in records],
            headers=[r.headers for r in records],
        )

    def __len__(self) -> int:
        return len(self.offsets)

    def record(self, i: int) -> RawRecord:
        """Record ``i`` as an object (for dead letters)."""
        if self.headers is not None:
            headers = self.headers[i]
        elif self.messages is not None:
            headers = self.messages[i].headers()
        else:
            headers = None
        return RawRecord(self.topic, self.partitions[i], self.offsets[i], self.timestamps[i],
                         self.keys[i], self.values[i], headers)

    def position(self, partition: int, offset: int) -> int | None:
        """The index of the record at (partition, offset), if it is in this batch."""
        if self._index is None:
            self._index = {(p, o): i for i, (p, o) in enumerate(zip(self.partitions, self.offsets))}
        return self._index.get((partition, offset))

    def metadata(self, rows: Sequence[int] | None = None) -> pl.DataFrame:
        """The metadata columns of all records, or of the records at ``rows``, in order."""
        def pick(values: list) -> list:
            return values if rows is None else [values[i] for i in rows]

        keys = pick(self.keys)
        return pl.DataFrame(
            [
                _keys_as_text(keys),
                pl.Series(TOPIC, [self.topic], pl.String).extend_constant(self.topic, len(keys) - 1)
                if keys else pl.Series(TOPIC, [], pl.String),
                pl.Series(PARTITION, pick(self.partitions), pl.Int32),
                pl.Series(OFFSET, pick(self.offsets), pl.Int64),
                pl.Series(TIMESTAMP, pick(self.timestamps), pl.Int64),
            ]
        )


def _keys_as_text(keys: list[bytes | None]) -> pl.Series:
    raw = pl.Series(KEY, keys, pl.Binary)
    try:
        return raw.cast(pl.String)
    except pl.exceptions.InvalidOperationError:
        text = [None if k is None else k.decode("utf-8", "replace") for k in keys]
        return pl.Series(KEY, text, pl.String)


def user_columns(frame: pl.DataFrame) -> list[str]:
    """The frame's columns that are not metadata."""
    return [c for c in frame.columns if c not in METADATA_COLUMNS]
