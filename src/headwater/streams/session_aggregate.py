"""Session windows: per key, a record at ``t`` opens ``[t, t + gap)`` and overlapping windows
merge (Flink's model, with half-open windows: records exactly ``gap`` apart start a new session,
where Flink and Kafka Streams would merge them), so a session is
``[first event time, last event time + gap)``.

**Rules, per record in consumption order** (``obs`` = the stream time it arrives at, see
:mod:`headwater.streams.windows`): a session is *closed* once ``end + grace <= obs``. The record
merges with every open session of its key that overlaps ``[t, t + gap)``; if the merged
session is itself closed (``merged end + grace <= obs``) the record is late (late output, with
that window), else the merged session replaces the ones it absorbed. A record that overlaps only
a closed session therefore opens a new one (the closed session's result was final).

**Vectorized, with an exact slow path.** When every record of a key in a batch has
``t >= obs - grace`` (the common case), or an older one provably cannot (see
:meth:`SessionAggregate._slow_keys`), no record of that key can meet a closed session or be
late, and the sequential rules above equal the union of overlapping intervals: one sort and one
running maximum over the batch's records and the key's stored sessions (Polars). Keys with an
older record are replayed record by record in Python (their outcome then depends on order).

**State**: the window store holds one entry per session keyed ``end | start | key`` (as for
tumbling windows, so closing is the same range scan); the index store ``<store>-sessions`` maps
each key to its open sessions' ``(start, end)`` (format ``session index v1``), so a batch reads
the sessions of its keys with one ``get_many``. Both are changelogged and restored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import polars as pl

from headwater.state.codec import SESSION_INDEX_V1_ID, ValueFormat
from headwater.state.errors import StateError
from headwater.streams.context import ProcessingContext
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC
from headwater.streams.task import TaskId
from headwater.streams.window_aggregate import (
    _OBSERVED,
    WindowOperator,
    window_keys,
)
from headwater.streams.windows import WINDOW_END, WINDOW_START, SessionWindow

if TYPE_CHECKING:
    from headwater.state.cache import WriteBackCache

_INDEX = ValueFormat(SESSION_INDEX_V1_ID, description="session index v1")
_ROW, _SID, _STORED = "__row", "__sid", "__stored"


@dataclass
class _Session:
    start: int
    end: int
    rows: list[int]
    stored: list[int]


def replay(times: list[int], observed: list[int], stored: list[tuple[int, int]], gap: int,
           grace: int) -> tuple[list[_Session], list[tuple[int, int, int]]]:
    """The session rules of the module docstring applied record by record to one key.

    Args:
        times, observed: each record's event time and the stream time it arrives at, in order.
        stored: the key's sessions before the batch.

    Returns:
        The sessions after the batch (stored ones untouched have no ``rows``), and the late
        records as ``(record index, window start, window end)``.
    """
    live = [_Session(s, e, [], [j]) for j, (s, e) in enumerate(stored)]
    closed: list[_Session] = []  # stream time only grows: a closed session never reopens
    late = []
    for i, (t, obs) in enumerate(zip(times, observed)):
        if any(x.end + grace <= obs for x in live):
            closed += [x for x in live if x.end + grace <= obs]
            live = [x for x in live if x.end + grace > obs]
        hit = [x for x in live if x.start < t + gap and t < x.end]
        start = min([t, *(x.start for x in hit)])
        end = max([t + gap, *(x.end for x in hit)])
        if end + grace <= obs:
            late.append((i, start, end))
            continue
        merged = _Session(start, end, [i], [])
        for x in hit:
            merged.rows += x.rows
            merged.stored += x.stored
        live = [x for x in live if all(x is not h for h in hit)] + [merged] if hit else \
            [*live, merged]
    return closed + live, late


def _read_index(index: WriteBackCache, names: list[str], *, store: str,
                partition: int) -> pl.DataFrame:
    """The open sessions of keys ``names``: a frame of ``_key``, ``window_start``,
    ``window_end`` (one ``get_many``, one ``np.frombuffer``)."""
    ikeys = [k.encode() for k in names]
    found = [(k, v) for k, v in zip(names, index.get_many(ikeys)) if v is not None]
    header = _INDEX.header
    for k, v in found:
        if v[:1] != header:
            raise _INDEX.mismatch(v, store=store, partition=partition, key=k.encode())
        if (len(v) - 1) % 16:
            raise StateError(f"session index of key {k!r} holds {len(v) - 1} bytes, not whole "
                             "(start, end) pairs", store=store, partition=partition)
    pairs = np.frombuffer(b"".join(v[1:] for _, v in found), "<i8").reshape(-1, 2)
    counts = np.array([(len(v) - 1) // 16 for _, v in found], dtype=np.int64)
    owners = pl.Series(KEY, [k for k, _ in found], pl.String).gather(
        np.repeat(np.arange(len(found)), counts))
    return pl.DataFrame({KEY: owners, WINDOW_START: pairs[:, 0], WINDOW_END: pairs[:, 1]})


def _write_index(index: WriteBackCache, names: list[str], sessions: pl.DataFrame) -> None:
    """Store ``sessions`` (``_key``, ``window_start``, ``window_end``) as the open sessions of
    keys ``names`` (a key without sessions is deleted)."""
    ordered = sessions.filter(pl.col(KEY).is_in(names)).sort(KEY, WINDOW_START)
    raw = np.ascontiguousarray(
        ordered.select(WINDOW_START, WINDOW_END).to_numpy().astype("<i8")).tobytes()
    values: dict[str, bytes | None] = dict.fromkeys(names)
    at = 0
    for key, n in ordered.group_by(KEY, maintain_order=True).len().iter_rows():
        values[key] = _INDEX.header + raw[at: at + 16 * n]
        at += 16 * n
    index.put_many([k.encode() for k in values], list(values.values()))


@dataclass
class SessionAggregate(WindowOperator):
    """Session windows (see the module docstring and
    :class:`~headwater.streams.window_aggregate.WindowOperator`)."""

    window: SessionWindow
    index_suffix: ClassVar[str | None] = "-sessions"

    def _merge_partition(self, partition: int, rows: pl.DataFrame, ctx: ProcessingContext
                         ) -> tuple[pl.DataFrame, pl.DataFrame]:
        gap, grace = self.window.gap_ms, self.window.grace_ms
        rows = rows.with_row_index(_ROW)
        names = rows.get_column(KEY).unique(maintain_order=True).to_list()
        stored = _read_index(ctx.state(self.index_store, partition), names,
                             store=self.index_store, partition=partition).with_row_index(_STORED)
        slow = self._slow_keys(rows, stored)
        rec_sid, sto_sid = self._union(rows, stored, slow)
        late_at: list[tuple[int, int, int]] = []
        if slow:
            rec_slow, sto_slow, late_at = self._replay(rows, stored, slow,
                                                       first_sid=_next_sid(rec_sid))
            rec_sid, sto_sid = pl.concat([rec_sid, rec_slow]), pl.concat([sto_sid, sto_slow])
        return (self._write(partition, rows, stored, rec_sid, sto_sid, ctx),
                self._late_of(rows, late_at))

    def _slow_keys(self, rows: pl.DataFrame, stored: pl.DataFrame) -> set[str]:
        """Keys whose outcome may depend on record order. A record older than ``stream time -
        grace`` is still safe when its own window is not late and no session of its key could
        have closed between its time and ``stream time - grace`` (no candidate session end, a
        stored end or any batch record's ``t + gap``, lies in that span): then it can neither
        be late nor meet a closed session."""
        gap, grace = self.window.gap_ms, self.window.grace_ms
        older = rows.filter(pl.col(TIMESTAMP) < pl.col(_OBSERVED) - grace)
        if not older.height:
            return set()
        ends = pl.concat([stored.select(KEY, pl.col(WINDOW_END).alias("__end")),
                          rows.select(KEY, (pl.col(TIMESTAMP) + gap).alias("__end"))])
        nearest = older.select(KEY, TIMESTAMP, _OBSERVED).sort(TIMESTAMP).join_asof(
            ends.sort("__end"), left_on=TIMESTAMP, right_on="__end", by=KEY,
            strategy="forward", allow_exact_matches=False,  # the first end after t
            check_sortedness=False)  # sorted globally, so within each key too
        unsafe = nearest.filter((pl.col(TIMESTAMP) + gap + grace <= pl.col(_OBSERVED))
                                | (pl.col("__end") <= pl.col(_OBSERVED) - grace))
        return set(unsafe.get_column(KEY).unique().to_list())

    def _union(self, rows: pl.DataFrame, stored: pl.DataFrame, slow: set[str]
               ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Session ids of the records and touched stored sessions of the keys not in ``slow``:
        the union of overlapping intervals."""
        gap = self.window.gap_ms
        fast = ~pl.col(KEY).is_in(list(slow))
        intervals = pl.concat([
            rows.filter(fast).select(
                KEY, pl.col(TIMESTAMP).alias(WINDOW_START),
                (pl.col(TIMESTAMP) + gap).alias(WINDOW_END),
                pl.col(_ROW).cast(pl.Int64), pl.lit(None, pl.Int64).alias(_STORED)),
            stored.filter(fast).select(
                KEY, WINDOW_START, WINDOW_END, pl.lit(None, pl.Int64).alias(_ROW),
                pl.col(_STORED).cast(pl.Int64)),
        ]).sort(KEY, WINDOW_START)
        reach = pl.col(WINDOW_END).cum_max().shift(1).over(KEY)
        intervals = intervals.with_columns(
            (pl.col(WINDOW_START) >= reach).fill_null(True).cum_sum().cast(pl.Int64).alias(_SID))
        touched = intervals.filter(pl.col(_ROW).is_not_null().any().over(_SID))
        return (touched.filter(pl.col(_ROW).is_not_null()).select(_ROW, _SID),
                touched.filter(pl.col(_STORED).is_not_null()).select(_STORED, _SID))

    def _replay(self, rows: pl.DataFrame, stored: pl.DataFrame, slow: set[str], first_sid: int
                ) -> tuple[pl.DataFrame, pl.DataFrame, list[tuple[int, int, int]]]:
        """Session ids and late records of the ``slow`` keys, record by record (:func:`replay`)."""
        rec, sto, late = [], [], []
        sid = first_sid
        stored_ids: dict[str, list[int]] = defaultdict(list)
        before: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for k, i, s, e in stored.filter(pl.col(KEY).is_in(list(slow))).select(
                KEY, _STORED, WINDOW_START, WINDOW_END).iter_rows():
            stored_ids[k].append(i)
            before[k].append((s, e))
        subset = rows.filter(pl.col(KEY).is_in(list(slow)))
        for (key,), group in subset.partition_by(KEY, maintain_order=True,
                                                 as_dict=True).items():
            row_ids = group.get_column(_ROW).to_list()
            sessions, key_late = replay(group.get_column(TIMESTAMP).to_list(),
                                        group.get_column(_OBSERVED).to_list(),
                                        before[key], self.window.gap_ms, self.window.grace_ms)
            for s in sessions:
                if not s.rows:
                    continue
                rec += [(row_ids[i], sid) for i in s.rows]
                sto += [(stored_ids[key][j], sid) for j in s.stored]
                sid += 1
            late += [(row_ids[i], start, end) for i, start, end in key_late]
        return (pl.DataFrame(rec, schema={_ROW: pl.Int64, _SID: pl.Int64}, orient="row"),
                pl.DataFrame(sto, schema={_STORED: pl.Int64, _SID: pl.Int64}, orient="row"),
                late)

    def _write(self, partition: int, rows: pl.DataFrame, stored: pl.DataFrame,
               rec_sid: pl.DataFrame, sto_sid: pl.DataFrame,
               ctx: ProcessingContext) -> pl.DataFrame:
        """Merge each session's records and absorbed stored sessions; write sessions and index;
        return the updated sessions."""
        gap = self.window.gap_ms
        partials = (
            rows.with_columns(pl.col(_ROW).cast(pl.Int64)).join(rec_sid, on=_ROW)
            .group_by(_SID).agg(
                pl.col(KEY).first(), pl.col(TOPIC).last(), pl.col(PARTITION).first(),
                pl.col(OFFSET).max(), pl.col(TIMESTAMP).min().alias(WINDOW_START),
                (pl.col(TIMESTAMP).max() + gap).alias(WINDOW_END), *self._acc.partials)
            .sort(_SID).with_row_index("__dense")
        )
        absorbed = (stored.with_columns(pl.col(_STORED).cast(pl.Int64)).join(sto_sid, on=_STORED)
                    .join(partials.select(_SID, "__dense"), on=_SID))
        dense = absorbed.get_column("__dense").to_numpy().astype(np.int64)
        old_keys = window_keys(absorbed.get_column(WINDOW_END).to_numpy(),
                               absorbed.get_column(WINDOW_START).to_numpy(),
                               absorbed.get_column(KEY).to_list())
        cache = ctx.state(self.store, partition)
        old = self._acc.load(cache.get_many(old_keys), store=self.store, partition=partition,
                             keys=old_keys)
        n = partials.height
        spans = absorbed.group_by("__dense").agg(pl.col(WINDOW_START).min().alias("__s"),
                                                 pl.col(WINDOW_END).max().alias("__e"))
        partials = partials.join(spans, on="__dense", how="left").sort("__dense").with_columns(
            pl.min_horizontal(WINDOW_START, "__s").alias(WINDOW_START),
            pl.max_horizontal(WINDOW_END, "__e").alias(WINDOW_END)).drop("__s", "__e")
        merged = self._acc.fold(self._acc.reduce(old, dense, n), partials)
        new_keys = window_keys(partials.get_column(WINDOW_END).to_numpy(),
                               partials.get_column(WINDOW_START).to_numpy(),
                               partials.get_column(KEY).to_list())
        kept = set(new_keys)
        cache.delete_many([k for k in old_keys if k not in kept])
        cache.put_many(new_keys, self._acc.encode(merged))
        kept_sessions = stored.join(absorbed.select(_STORED), on=_STORED, how="anti")
        _write_index(ctx.state(self.index_store, partition),
                     partials.get_column(KEY).unique().to_list(),
                     pl.concat([kept_sessions.select(KEY, WINDOW_START, WINDOW_END),
                                partials.select(KEY, WINDOW_START, WINDOW_END)]))
        return self._result_frame(partials, merged)

    def _late_of(self, rows: pl.DataFrame, late_at: list[tuple[int, int, int]]) -> pl.DataFrame:
        windows = pl.DataFrame(late_at, schema={_ROW: rows.schema[_ROW], WINDOW_START: pl.Int64,
                                                WINDOW_END: pl.Int64}, orient="row")
        late = rows.join(windows, on=_ROW, maintain_order="left").drop(_ROW)
        return self._late_rows(late, pl.col(WINDOW_END) + self.window.grace_ms)

    def _closed(self, ctx: ProcessingContext, task: TaskId, keys: list[str],
                starts: np.ndarray, ends: np.ndarray) -> None:
        """Drop the closed sessions from their keys' index entries."""
        closed = pl.DataFrame({KEY: keys, WINDOW_START: starts, WINDOW_END: ends})
        names = closed.get_column(KEY).unique().to_list()
        index = ctx.state(self.index_store, task.partition)
        sessions = _read_index(index, names, store=self.index_store, partition=task.partition)
        _write_index(index, names, sessions.join(closed, on=[KEY, WINDOW_START, WINDOW_END],
                                                 how="anti"))


def _next_sid(rec_sid: pl.DataFrame) -> int:
    return int(rec_sid.get_column(_SID).max() or 0) + 1 if rec_sid.height else 0
