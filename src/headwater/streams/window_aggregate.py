"""Windowed keyed aggregation: batch partials merged into ordered window state; results emitted
when windows close (stream-time timers), on every update, or both.

:class:`WindowOperator` holds what every window type shares (late records, emit modes, closing
windows by range); :class:`WindowAggregate` is the tumbling/hopping operator, and
:mod:`headwater.streams.session_aggregate` the session operator.

State (one store per operator, changelogged and restored like all state): one entry per (window,
key), keyed ``window_end | window_start | key`` (big-endian, sign-flipped times, so byte order is
time order). Closing every window that ends at or before ``stream time - grace`` is therefore one
range scan and one range delete from the start of the store: expired windows never cost a full
scan. Values are fixed-width rows (``window rows v1``, see :mod:`headwater.state.codec`) of the
aggregates' stored fields plus the last contributing offset.

A batch is handled column-wise: per-record stream time (see :mod:`headwater.streams.windows`),
window assignment, the late rows split off, one ``group_by`` over (partition, key, window), one
batched ``get_many``/``put_many`` per partition. Per-record Python only runs over the distinct
(key, window) pairs of a batch to build their state keys.
"""

from __future__ import annotations

import weakref

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import polars as pl

from headwater.errors import HeadwaterError
from headwater.streams.accumulators import AccRows, Accumulators
from headwater.streams.aggregate import Agg, MissingKeyError
from headwater.streams.context import ProcessingContext
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC
from headwater.streams.task import TaskId
from headwater.streams.time import TimerKind, TimerOperator, timer_rows
from headwater.streams.windows import WINDOW_END, WINDOW_START, AnyWindow, Window

if TYPE_CHECKING:
    from headwater.state.cache import WriteBackCache

EmitMode = Literal["final", "update", "both"]

LATE_BY_MS = "late_by_ms"
STREAM_TIME = "stream_time"
_SIGN = np.uint64(1 << 63)
_OBSERVED = "__observed_stream_time"


class LateRecordError(HeadwaterError):
    """A record arrived after its window closed (its reason in the DLQ when no late output is
    routed)."""


def _time_bytes(values: np.ndarray) -> np.ndarray:
    """Epoch-ms int64 values as 8-byte big-endian keys whose byte order is numeric order."""
    return (values.astype(np.int64).view(np.uint64) ^ _SIGN).astype(">u8")


def _times_of(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint64) ^ _SIGN).view(np.int64)


def window_key(end: int, start: int, key: bytes) -> bytes:
    """The state key of ``key``'s window ``[start, end)``."""
    return _time_bytes(np.array([end, start])).tobytes() + key


def closed_bound(cutoff_ms: int) -> bytes:
    """The exclusive upper state key of the windows ending at or before ``cutoff_ms``."""
    return _time_bytes(np.array([cutoff_ms + 1])).tobytes()


@dataclass
class WindowOperator(TimerOperator):
    """What every window aggregate shares (a subclass implements :meth:`_merge_batch`).

    Output rows (``emit="final"``: once per window when it closes; ``"update"``: after every
    batch that changed it; ``"both"``: final rows on the main output and the updates on the
    ``updates`` side output): the metadata columns (``_key``, the last contributing ``_offset``,
    ``_timestamp`` = ``window_end``), ``window_start``, ``window_end`` and one column per
    aggregate. Late records leave on the side output ``late`` (the record's columns plus
    ``window_start``, ``window_end``, ``stream_time`` and ``late_by_ms``, one row per closed
    window it missed), or, when nothing reads that output, go to the DLQ as ``LateRecordError``.

    State: window entries keyed ``window_end | window_start | key`` in :attr:`store`, so closing
    is one range scan from the previous close's bound (see :meth:`on_time`).
    """

    store: str
    window: AnyWindow
    aggs: Mapping[str, Agg]
    emit: EmitMode = "final"
    name: str = "window_aggregate"
    stateful: bool = True
    fires_on: ClassVar[TimerKind] = TimerKind.STREAM_TIME
    late_records: int = 0
    _acc: Accumulators = field(init=False, repr=False)
    _late: list[pl.DataFrame] = field(init=False, repr=False, default_factory=list)
    _updates: list[pl.DataFrame] = field(init=False, repr=False, default_factory=list)
    _floors: weakref.WeakKeyDictionary[WriteBackCache, bytes] = field(
        init=False, repr=False, default_factory=weakref.WeakKeyDictionary)
    """Per cache (task): the bound of the last close; no key below it is ever written again
    (a record for a closed window is late), so the next close scans from there, not from the
    start of the store (where RocksDB would step over every tombstone of closed windows)."""

    def __post_init__(self) -> None:
        self._acc = Accumulators(self.aggs, self.window.describe())

    index_suffix: ClassVar[str | None] = None
    """Window types that keep a per-key index beside the windows name its store's suffix."""

    @property
    def index_store(self) -> str:
        """The store of the per-key index (``<store><index_suffix>``)."""
        assert self.index_suffix is not None
        return self.store + self.index_suffix

    def store_names(self) -> list[str]:
        return [self.store] if self.index_suffix is None else [self.store, self.index_store]

    # --- a batch ----------------------------------------------------------------------------

    def prepare(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        """Stamp each row with the stream time it arrives at (``_OBSERVED``), once per batch:
        if the batch is retried row by row (an operator failure), each row keeps the stream
        time it had in the batch, so which records are late never changes."""
        return frame if _OBSERVED in frame.columns else _with_observed_time(frame, ctx)

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        frame = self.prepare(frame, ctx)
        rows = frame.filter(pl.col(KEY).is_not_null())
        updated, late = self._merge_batch(rows, ctx)
        # side effects last: a failed attempt (re-run row by row) dead-letters and stashes nothing
        keyless = frame.filter(pl.col(KEY).is_null())
        if keyless.height:
            ctx.dead_letter(keyless.drop(_OBSERVED), MissingKeyError(
                "a window aggregate needs a key"), self.name)
        if late is not None and late.height:
            self.late_records += late.height
            self._late.append(late)
        if updated is None:
            updated = self._result_frame(rows.clear().select(KEY, TOPIC, PARTITION).with_columns(
                pl.lit(0, pl.Int64).alias(WINDOW_START), pl.lit(0, pl.Int64).alias(WINDOW_END)),
                self._acc.identities(0))
        if self.emit == "update":
            return updated
        if self.emit == "both" and updated.height:
            self._updates.append(updated)
        return updated.clear()

    def _merge_batch(self, rows: pl.DataFrame, ctx: ProcessingContext
                     ) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
        """Merge ``rows`` (keyed, with the stream time each arrives at in ``_OBSERVED``) into
        state; return the updated windows (:meth:`_result_frame` rows, ``None`` if none) and
        the late rows (see the class docstring). By default one partition at a time
        (:meth:`_merge_partition`)."""
        updated, late = [], []
        for (p,), part in rows.group_by(PARTITION, maintain_order=True):
            u, lt = self._merge_partition(int(p), part, ctx)
            if u is not None:
                updated.append(u)
            late.append(lt)
        return (pl.concat(updated, how="vertical_relaxed") if updated else None,
                pl.concat(late, how="diagonal_relaxed") if late else None)

    def _merge_partition(self, partition: int, rows: pl.DataFrame, ctx: ProcessingContext
                         ) -> tuple[pl.DataFrame | None, pl.DataFrame]:
        """:meth:`_merge_batch` for the rows of one partition."""
        raise NotImplementedError

    def _result_frame(self, group: pl.DataFrame, rows: AccRows) -> pl.DataFrame:
        """Output rows of windows ``group`` (metadata, window bounds) holding aggregates ``rows``."""
        return group.select(
            KEY, TOPIC, PARTITION,
            pl.Series(OFFSET, self._acc.offsets(rows), pl.Int64),
            pl.col(WINDOW_END).alias(TIMESTAMP), WINDOW_START, WINDOW_END,
        ).with_columns(self._acc.columns(rows))

    @staticmethod
    def _late_rows(late: pl.DataFrame, closes_at: pl.Expr) -> pl.DataFrame:
        """Late rows as the ``late`` output shows them (``closes_at``: when their window
        closed)."""
        return late.with_columns(
            pl.col(_OBSERVED).alias(STREAM_TIME),
            (pl.col(_OBSERVED) - closes_at).alias(LATE_BY_MS),
        ).drop(_OBSERVED)

    # --- side outputs -----------------------------------------------------------------------

    def take_side_outputs(self) -> dict[str, pl.DataFrame]:
        """The late rows (``late``) and, with ``emit="both"``, the updated windows
        (``updates``) of the batch just applied, then forgets them."""
        out = {}
        if self._late:
            out["late"], self._late = pl.concat(self._late, how="diagonal_relaxed"), []
        if self._updates:
            out["updates"], self._updates = pl.concat(self._updates, how="vertical_relaxed"), []
        return out

    def unrouted_side_output(self, name: str, rows: pl.DataFrame, ctx: ProcessingContext) -> None:
        """Late rows nobody reads are dead-lettered (one letter per record), never dropped;
        updates nobody reads are derived data and simply not emitted."""
        if name != "late":
            return
        first = rows.unique([PARTITION, OFFSET], keep="first", maintain_order=True)
        ctx.dead_letter(first, LateRecordError(
            f"late for window(s) of {self.window.describe()}: its window closed before it "
            "arrived (route `.late` to keep late records as data)"), self.name)

    # --- closing windows --------------------------------------------------------------------

    def on_time(self, ctx: ProcessingContext, task: TaskId, stream_time_ms: int | None,
                wall_ms: int) -> pl.DataFrame | None:
        """Close (delete, and with ``final``/``both`` emit) every window of ``task`` ending at
        or before ``stream time - grace``: one range scan from the previous close's bound."""
        if stream_time_ms is None:
            return None
        cache = ctx.state(self.store, task.partition)
        bound = closed_bound(stream_time_ms - self.window.grace_ms)
        floor = self._floors.get(cache)
        if floor is not None and floor >= bound:
            return None
        closed = list(cache.range(floor, bound))
        self._floors[cache] = bound
        if not closed:
            return None
        keys = [k for k, _ in closed]
        cache.delete_many(keys)  # a tombstone each, unless never checkpointed
        raw = np.frombuffer(b"".join(k[:16] for k in keys), dtype=">u8").reshape(-1, 2)
        ends, starts = _times_of(raw[:, 0]), _times_of(raw[:, 1])
        names = [k[16:].decode() for k in keys]
        self._closed(ctx, task, names, starts, ends)
        if self.emit == "update":
            return None
        rows = self._acc.load([v for _, v in closed], store=self.store,
                              partition=task.partition, keys=keys)
        body = pl.DataFrame({WINDOW_START: starts, WINDOW_END: ends}).with_columns(
            self._acc.columns(rows))
        return timer_rows(ctx, task, body, keys=names,
                          timestamp_ms=ends.tolist(), offset=self._acc.offsets(rows).tolist())

    def _closed(self, ctx: ProcessingContext, task: TaskId, keys: list[str],
                starts: np.ndarray, ends: np.ndarray) -> None:
        """Hook: the windows ``[starts[i], ends[i])`` of ``keys[i]`` (of ``task``) were just
        closed and deleted."""


@dataclass
class WindowAggregate(WindowOperator):
    """Tumbling and hopping windows (see the module docstring and :class:`WindowOperator`)."""

    window: Window

    def _merge_batch(self, rows: pl.DataFrame, ctx: ProcessingContext
                     ) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
        pairs = self.window.assign(rows)
        closes_at = pl.col(WINDOW_END) + self.window.grace_ms
        late = pairs.filter(closes_at <= pl.col(_OBSERVED))
        partials = (
            pairs.filter(closes_at > pl.col(_OBSERVED))
            .group_by(PARTITION, KEY, WINDOW_START, WINDOW_END, maintain_order=True)
            .agg(pl.col(TOPIC).last(), pl.col(OFFSET).max(), *self._acc.partials)
        )
        updated = [self._merge_partition(int(p), group, ctx)
                   for (p,), group in partials.group_by(PARTITION, maintain_order=True)]
        return (pl.concat(updated, how="vertical_relaxed") if updated else None,
                self._late_rows(late, closes_at))

    def _merge_partition(self, partition: int, group: pl.DataFrame,
                         ctx: ProcessingContext) -> pl.DataFrame:
        cache = ctx.state(self.store, partition)
        keys = window_keys(group.get_column(WINDOW_END).to_numpy(),
                           group.get_column(WINDOW_START).to_numpy(),
                           group.get_column(KEY).to_list())
        rows = self._acc.fold(self._acc.load(cache.get_many(keys), store=self.store,
                                             partition=partition, keys=keys), group)
        cache.put_many(keys, self._acc.encode(rows))
        return self._result_frame(group, rows)


def window_keys(ends: np.ndarray, starts: np.ndarray, keys: list[str]) -> list[bytes]:
    """The state keys of windows ``[starts[i], ends[i])`` of ``keys[i]``."""
    head = _time_bytes(np.stack([ends, starts], axis=1).reshape(-1)).tobytes()
    return [head[16 * i: 16 * i + 16] + k.encode() for i, k in enumerate(keys)]


def _with_observed_time(rows: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
    """``rows`` plus the stream time each one arrives at (``_OBSERVED``): the task's stream
    time before the batch, then the running maximum of the event times of its partition."""
    before = [(p, ctx.stream_time(ctx.task(p))) for p in rows.get_column(PARTITION).unique()]
    floor = pl.DataFrame(
        {PARTITION: [p for p, _ in before], "__before": [t for _, t in before]},
        schema={PARTITION: rows.schema[PARTITION], "__before": pl.Int64},
    )
    running = pl.col(TIMESTAMP).cum_max().over(PARTITION)
    return (rows.join(floor, on=PARTITION, how="left", maintain_order="left")
            .with_columns(pl.max_horizontal(running, pl.col("__before")).alias(_OBSERVED))
            .drop("__before"))
