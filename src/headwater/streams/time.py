"""Stream time and timers.

**Stream time** of a task = the largest event time among the records it has processed. Event time
is the ``_timestamp`` column: the Kafka record timestamp, unless the source declares an
``event_time`` expression, which then replaces ``_timestamp`` as soon as a batch is decoded
(:func:`with_event_time`, as Kafka Streams' timestamp extractor does), so windows, stream time
and outputs all see the same time. It is computed once per batch, vectorized: one maximum per
partition. It only moves forward and survives
restarts through the committed offsets' metadata (:func:`encode_metadata`), as Kafka Streams
keeps partition time.

**Timers**: an operator that subclasses :class:`TimerOperator` and sets ``fires_on`` is called
(``on_time``) for a task when that task's stream time advances (after the batch that advanced
it) and/or when wall-clock time advances (``BatchContext.punctuate``). Only such operators are
visited: the topology lists them per sub-topology when it is built, so other topologies pay
nothing. The rows ``on_time`` returns flow to the operator's children exactly as if it had output
them during a batch (inside the open transaction, before the next checkpoint).

Rows emitted by a timer must carry the metadata columns (build them with :func:`timer_rows`):

- ``_key``: the output key (string; ``None`` only if no keyed operator or sink follows);
- ``_topic``: the task's (first) source topic, ``ctx.source_topic_of(task)``;
- ``_partition``: the task's partition (checked: a timer emits for its own task only);
- ``_offset``: the offset of the last source record that contributed, or ``-1`` if none does;
- ``_timestamp``: the result's event time (a window's end, or the stream time that fired it).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import orjson
import polars as pl

from headwater.errors import HeadwaterError
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, METADATA_COLUMNS, OFFSET, PARTITION, TIMESTAMP, TOPIC
from headwater.streams.task import TaskId

if TYPE_CHECKING:
    from headwater.streams.context import ProcessingContext


class TimerKind(enum.Flag):
    """What fires a :class:`TimerOperator`: stream time advancing, wall-clock time, or both."""

    NONE = 0
    STREAM_TIME = enum.auto()
    WALL_CLOCK = enum.auto()


class TimerOutputError(HeadwaterError):
    """A timer returned rows without the metadata columns or for another task's partition."""


class TimerOperator(Operator):
    """An operator with timers. Subclasses set ``fires_on`` and implement :meth:`on_time`.

    ``on_time`` must not fail on data: there is no source record to dead-letter, so an exception
    stops the worker (nothing of the interval is committed).
    """

    fires_on: ClassVar[TimerKind] = TimerKind.NONE

    def on_time(
        self, ctx: ProcessingContext, task: TaskId, stream_time_ms: int | None, wall_ms: int
    ) -> pl.DataFrame | None:
        """Called for ``task`` when its stream time or the wall clock advanced (per ``fires_on``).

        Args:
            ctx: the processing context (state, the task's source topic...).
            task: the task whose time advanced.
            stream_time_ms: the task's stream time (``None`` until it has seen a record).
            wall_ms: processing time now, epoch milliseconds.

        Returns:
            Rows for the operator's children (metadata columns included, see the module
            docstring and :func:`timer_rows`), or ``None``.
        """
        raise NotImplementedError


def timer_rows(
    ctx: ProcessingContext,
    task: TaskId,
    body: pl.DataFrame,
    *,
    keys: Sequence[str | None] | pl.Series,
    timestamp_ms: int | Sequence[int],
    offset: int | Sequence[int] = -1,
) -> pl.DataFrame:
    """``body`` with the metadata columns a timer's output needs, for ``task``.

    Args:
        ctx: the processing context (gives the task's source topic).
        task: the task emitting.
        body: the user columns, one row per output record.
        keys: one output key per row.
        timestamp_ms: the event time of the rows (one for all, or one per row).
        offset: the offset of the last contributing source record (``-1``: none), for all
            rows or one per row.
    """
    n = body.height
    stamps = [timestamp_ms] * n if isinstance(timestamp_ms, int) else list(timestamp_ms)
    offsets = [offset] * n if isinstance(offset, int) else list(offset)
    meta = pl.DataFrame([
        pl.Series(KEY, list(keys), pl.String),
        pl.Series(TOPIC, [ctx.source_topic_of(task)] * n, pl.String),
        pl.Series(PARTITION, [task.partition] * n, pl.Int32),
        pl.Series(OFFSET, offsets, pl.Int64),
        pl.Series(TIMESTAMP, stamps, pl.Int64),
    ])
    return pl.concat([meta, body.drop([c for c in METADATA_COLUMNS if c in body.columns])],
                     how="horizontal")


def check_timer_rows(rows: pl.DataFrame, task: TaskId, operator: str) -> pl.DataFrame:
    """Raise :class:`TimerOutputError` unless ``rows`` are well-formed output of ``task``."""
    missing = [c for c in METADATA_COLUMNS if c not in rows.columns]
    if missing:
        raise TimerOutputError(f"timer of {operator!r} emitted rows without {missing}")
    if (rows.get_column(PARTITION) != task.partition).any():
        raise TimerOutputError(
            f"timer of {operator!r} for task {task} emitted rows of another partition"
        )
    return rows


class EventTimeError(HeadwaterError):
    """A source's event-time expression cannot be evaluated on a batch or is not a time (a bug in
    the topology, not a bad record: the run fails and commits nothing)."""


def with_event_time(frame: pl.DataFrame, event_time: pl.Expr, topic: str, *,
                    missing_is_null: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``frame`` with ``_timestamp`` replaced by ``event_time`` (epoch ms, or a datetime/date),
    falling back to the Kafka record timestamp on rows where the expression is null; and the
    rows whose event time is neither (e.g. a string that is no number), to dead-letter.

    Args:
        missing_is_null: a column the expression needs that the batch lacks counts as null (JSON
            sources, whose columns are inferred per batch); otherwise it is a topology error.

    Raises:
        EventTimeError: the expression fails on the frame (a bug in the topology).
    """
    if frame.height == 0:
        return frame, frame.clear()
    try:
        values = frame.select(event_time.alias(TIMESTAMP)).to_series()
    except (pl.exceptions.ColumnNotFoundError, pl.exceptions.StructFieldNotFoundError) as err:
        if missing_is_null:
            return frame, frame.clear()
        raise EventTimeError(
            f"event time of source {topic!r} ({event_time}) failed: {err}") from err
    except pl.exceptions.PolarsError as err:
        raise EventTimeError(
            f"event time of source {topic!r} ({event_time}) failed: {err}") from err
    if values.dtype == pl.Null:
        return frame, frame.clear()
    if values.dtype == pl.Date:
        values = values.cast(pl.Datetime("ms"))
    bad: pl.Series | None = None
    if values.dtype.is_temporal() and values.dtype not in (pl.Duration, pl.Time):
        values = values.dt.epoch("ms")
    else:
        converted = values.cast(pl.Int64, strict=False)
        bad = converted.is_null() & values.is_not_null()
        values = converted
    event_ms = pl.coalesce(values.cast(pl.Int64), pl.col(TIMESTAMP)).alias(TIMESTAMP)
    if bad is None or not bad.any():
        return frame.with_columns(event_ms), frame.clear()
    good = frame.with_columns(event_ms)
    return good.filter(~bad), frame.filter(bad)


def max_event_time(frame: pl.DataFrame, event_time: pl.Expr) -> list[tuple[int, int]]:
    """``(partition, max event time)`` of a batch frame (rows without an event time ignored)."""
    if frame.height == 0:
        return []
    times = frame.select(event_time).to_series()
    partitions = frame.get_column(PARTITION).to_numpy()
    if times.null_count():
        partitions = partitions[times.is_not_null().to_numpy()]
        times = times.drop_nulls()
    stamps = times.to_numpy()
    return [(int(p), int(stamps[partitions == p].max())) for p in np.unique(partitions)]


def encode_metadata(stream_time: int | None, seq: int) -> str:
    """The offset-commit metadata of a task: ``{"st": <stream time ms>, "cs": <checkpoint seq>}``."""
    doc: dict[str, int] = {"cs": seq}
    if stream_time is not None:
        doc["st"] = stream_time
    return orjson.dumps(doc).decode()


def decode_metadata(metadata: str | None) -> tuple[int | None, int | None]:
    """``(stream time, checkpoint seq)`` from commit metadata; ``None`` for what is absent or not
    ours (metadata written by another tool is ignored, not an error)."""
    if not metadata:
        return None, None
    try:
        doc = orjson.loads(metadata)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    st, cs = doc.get("st"), doc.get("cs")
    return (st if isinstance(st, int) else None), (cs if isinstance(cs, int) else None)
