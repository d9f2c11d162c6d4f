"""Test operators with timers, shared by the stream-time and sink specifications."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator
from headwater.streams.records import PARTITION
from headwater.streams.task import TaskId
from headwater.streams.time import TimerKind, TimerOperator, timer_rows


@dataclass
class PeriodCounter(TimerOperator):
    """Counts rows per partition; each time the task's stream time enters a new period of
    ``every`` ms, emits ``{"period": <start>, "seen": <rows so far>}``."""

    every: int
    store: str = "periods"
    name: str = "period-counter"
    fires_on = TimerKind.STREAM_TIME

    def store_names(self) -> list[str]:
        return [self.store]

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        for (partition,), rows in frame.partition_by(PARTITION, as_dict=True).items():
            cache = ctx.state(self.store, int(partition))
            [seen] = cache.get_many([b"seen"])
            cache.put_many([b"seen"], [str(int(seen or 0) + rows.height).encode()])
        return frame.clear()

    def on_time(self, ctx: ProcessingContext, task: TaskId, stream_time_ms: int | None,
                wall_ms: int) -> pl.DataFrame | None:
        assert stream_time_ms is not None
        cache = ctx.state(self.store, task.partition)
        period = stream_time_ms // self.every * self.every
        last, seen = cache.get_many([b"period", b"seen"])
        cache.put_many([b"period"], [str(period).encode()])
        if last is None or int(last) == period:
            return None
        body = pl.DataFrame({"period": [period], "seen": [int(seen or 0)]})
        return timer_rows(ctx, task, body, keys=[f"p{task.partition}"], timestamp_ms=period)


@dataclass
class Heartbeat(TimerOperator):
    """On every wall-clock advance, one row per task with the time and its stream time."""

    name: str = "heartbeat"
    fires_on = TimerKind.WALL_CLOCK

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        return frame.clear()

    def on_time(self, ctx: ProcessingContext, task: TaskId, stream_time_ms: int | None,
                wall_ms: int) -> pl.DataFrame | None:
        body = pl.DataFrame({"task": [str(task)], "wall": [wall_ms], "st": [stream_time_ms]},
                            schema={"task": pl.String, "wall": pl.Int64, "st": pl.Int64})
        return timer_rows(ctx, task, body, keys=[str(task)], timestamp_ms=wall_ms)


@dataclass
class StreamTimeProbe(Operator):
    """Records the stream time operators see during a batch."""

    seen: list[Any] = field(default_factory=list)
    name: str = "probe"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        for partition in frame.get_column(PARTITION).unique().sort().to_list():
            self.seen.append(ctx.stream_time(ctx.task(partition)))
        return frame
