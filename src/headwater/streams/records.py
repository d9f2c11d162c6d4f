"""What flows into a topology: raw Kafka records, and the metadata columns every frame carries.

A batch from one source topic becomes one Polars frame: the decoded value's fields as columns,
plus the metadata columns below. Operators keep the metadata columns unless told otherwise, so
any row can always be traced back to its source record (for the DLQ and for offsets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """One record as read from Kafka (or handed to the in-process test driver)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None = field(default=None)


def metadata_frame(records: list[RawRecord]) -> pl.DataFrame:
    """The metadata columns of ``records``, one row each, in order."""
    return pl.DataFrame(
        {
            KEY: [None if r.key is None else r.key.decode("utf-8", "replace") for r in records],
            TOPIC: [r.topic for r in records],
            PARTITION: [r.partition for r in records],
            OFFSET: [r.offset for r in records],
            TIMESTAMP: [r.timestamp_ms for r in records],
        },
        schema={
            KEY: pl.String,
            TOPIC: pl.String,
            PARTITION: pl.Int32,
            OFFSET: pl.Int64,
            TIMESTAMP: pl.Int64,
        },
    )


def user_columns(frame: pl.DataFrame) -> list[str]:
    """The frame's columns that are not metadata."""
    return [c for c in frame.columns if c not in METADATA_COLUMNS]
