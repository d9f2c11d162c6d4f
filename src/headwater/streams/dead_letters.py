"""Dead letters of a batch: the source records of failed rows, or the rows themselves.

A record that fails to decode, or whose rows an operator fails on under policy ``dlq``, becomes
a dead letter carrying its original key, value and headers (:func:`to_dead_letter`). Rows that
trace to no record of the batch being processed (rows a timer emitted) become dead letters of
their own: key ``_key``, value the row's user columns as JSON. Writing them is the DLQ
connector's job (:mod:`headwater.connectors.dlq`); :class:`~headwater.streams.batch.BatchContext`
sends them.
"""

from __future__ import annotations

import polars as pl

from headwater.connectors.dlq import DeadLetter
from headwater.streams.records import (
    KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC, RawRecord, RecordBatch, user_columns,
)


def dead_letters_of(rows: pl.DataFrame, batch: RecordBatch | None, error: BaseException,
                    operator: str) -> list[DeadLetter]:
    """The dead letters of ``rows``: the records of ``batch`` they trace to (each once, even if
    a row repeats), then the rows that trace to none as themselves."""
    letters, traced = [], []
    if batch is not None:
        seen: set[int] = set()
        for topic, partition, offset in rows.select(TOPIC, PARTITION, OFFSET).iter_rows():
            i = batch.position(partition, offset) if topic == batch.topic else None
            traced.append(i is not None)
            if i is not None and i not in seen:
                seen.add(i)
                letters.append(to_dead_letter(batch.record(i), error, operator))
    untraced = rows.filter(~pl.Series(traced, dtype=pl.Boolean)) if traced else rows
    letters += [_row_dead_letter(meta, body, error, operator) for meta, body in
                zip(untraced.select(KEY, TOPIC, PARTITION, OFFSET, TIMESTAMP).iter_rows(),
                    _json_rows(untraced))]
    return letters


def to_dead_letter(record: RawRecord, error: BaseException, operator: str) -> DeadLetter:
    """A dead letter for ``record`` carrying the original bytes and the error."""
    return DeadLetter(
        key=record.key,
        value=record.value,
        headers=record.headers,
        error_class=type(error).__name__,
        error_message=str(error) or repr(error),
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        operator=operator,
        source_timestamp_ms=record.timestamp_ms,
    )


def _json_rows(rows: pl.DataFrame) -> list[bytes]:
    if rows.height == 0:
        return []
    if not user_columns(rows):
        return [b"{}"] * rows.height
    return rows.select(user_columns(rows)).write_ndjson().encode().split(b"\n")[: rows.height]


def _row_dead_letter(meta: tuple, body: bytes, error: BaseException, operator: str) -> DeadLetter:
    key, topic, partition, offset, timestamp = meta
    return DeadLetter(
        key=None if key is None else key.encode(), value=body, headers=None,
        error_class=type(error).__name__, error_message=str(error) or repr(error),
        source_topic=topic or "", source_partition=partition if partition is not None else -1,
        source_offset=offset if offset is not None else -1, operator=operator,
        source_timestamp_ms=timestamp,
    )
