"""Sliding windows, Kafka Streams' record-driven semantics (``SlidingWindows.ofSizeAndGrace``):
per key, two records share a window when their event times differ by at most ``size``.

**Windows.** Per key, a record at ``t`` defines its *left* window ``[t - size, t]`` and, when a
record of the key lies in ``(t, t + size + 1]``, its *right* window ``[t + 1, t + size + 1]``
(both ends inclusive, as in Kafka Streams). Output rows carry ``window_end`` = inclusive end + 1,
so they read ``[window_start, window_end)`` like every window here, and the state key's end is
that exclusive end. Only these windows exist (each holds a record; two definitions with the same
bounds are one window).

**Rules, per record in consumption order** (``C`` = the stream time the record arrives at, see
:mod:`headwater.streams.windows`, minus grace). A window is *closed* once ``window_end <= C``
(Kafka Streams: inclusive end ``< stream time - grace``).

- The record is **late** when ``t + size + 1 <= C``, i.e. every window that could hold it (the
  last is ``[t, t + size]``) is closed: Kafka Streams' rule (``t + 1 + size <= stream time -
  grace`` drops the record). It counts nowhere and goes to the late output once, with its own
  window ``[t - size, t + 1)`` and ``late_by_ms = stream_time - (t + 1 + grace)``.
- Otherwise it is *accepted*: it joins every open window of its key that contains ``t``, and
  every window the definitions above now call for that does not exist yet is created if it is
  open, holding every accepted record of its key within its bounds. A window closed by then is
  never created: an accepted record whose own left window already closed counts only in the
  open windows that hold it, and is not on the late output.

So a window's result is every accepted record of its key within its bounds that arrived before
the window closed. Kafka Streams computes the same when records arrive within grace. Two
differences, both deliberate: Kafka Streams derives a new window from stored neighbouring
windows, so a record that arrived after some of its windows had closed can be missing from a
window created later (here it counts); and it folds records less than ``size`` after the epoch
into one window ``[0, size]`` (here windows may start before the epoch).

**Vectorized, no per-record Python.** For a batch of one partition: the windows it touches are
enumerated from each key's sorted record times (retained plus the batch's); "open when the
record arrives / when created" compares a record's position in the batch with the position where
each window closes (stream time only grows along the batch: one ``searchsorted``), so results
never depend on batch cuts; window contents are range joins over (key, time) folded with the
accumulators.

**State.** The window store holds one entry per window keyed ``end | start | key`` (closed by the
base class's range scan). The index store ``<store>-records`` (format ``sliding index v1``)
holds per key (``r | key``) the accepted records' times, each with the accumulator of the
records at that time: what a new window must hold. A time is kept until its right window closes
(``t + size + 2 <= C``); besides being trimmed whenever its key is touched, each key has expiry
markers ``x | expiry | key``, closed by range like windows, so a quiet key's records leave too.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import polars as pl

from headwater.state.codec import SLIDING_INDEX_V1_ID, ValueFormat
from headwater.streams.accumulators import AccRows
from headwater.streams.context import ProcessingContext
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC
from headwater.streams.task import TaskId
from headwater.streams.window_aggregate import (
    _OBSERVED,
    WindowOperator,
    _time_bytes,
    closed_bound,
    window_keys,
)
from headwater.streams.windows import WINDOW_END, WINDOW_START, SlidingWindow

_INDEX = ValueFormat(SLIDING_INDEX_V1_ID, description="sliding index v1")
_REC, _EXP = b"r", b"x"
_ROW, _KID, _FIRST, _WID = "__row", "__kid", "__first", "__wid"
_NEVER = np.iinfo(np.int64).max


def _search(s_kid: np.ndarray, s_t: np.ndarray, q_kid: np.ndarray,
            *q_ts: np.ndarray) -> list[np.ndarray]:
    """Per query array: how many of the (kid, time)-sorted pairs ``(s_kid, s_t)`` lie below each
    ``(q_kid, q_t)`` (times ranked jointly, so the combined key never overflows)."""
    _, inv = np.unique(np.concatenate([s_t, *q_ts]), return_inverse=True)
    m = int(inv.max()) + 1 if len(inv) else 1
    s = s_kid.astype(np.int64) * m + inv[:len(s_t)]
    out, at = [], len(s_t)
    for q in q_ts:
        out.append(np.searchsorted(s, q_kid.astype(np.int64) * m + inv[at:at + len(q)]))
        at += len(q)
    return out


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group, position) for every position in ``[lo[g], hi[g])``."""
    counts = hi - lo
    group = np.repeat(np.arange(len(lo)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return group, np.arange(int(counts.sum())) - first + np.repeat(lo, counts)


def _per_window(op: np.ufunc, values: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    """``op`` (``np.minimum``/``np.maximum``) of ``values`` per ``group`` (sorted) of ``0..n-1``;
    -1 where a group is empty (for maximum) or ``_NEVER`` (for minimum)."""
    out = np.full(n, _NEVER if op is np.minimum else -1, np.int64)
    if len(group):
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        out[group[starts]] = op.reduceat(values, starts)
    return out


def _decode(value: bytes, *, store: str, partition: int, key: bytes
            ) -> tuple[np.ndarray, bytes, int]:
    """A key's retained times, their accumulators' bytes and the width of one."""
    payload = _INDEX.decode(value, store=store, partition=partition, key=key)
    n = int(np.frombuffer(payload, "<i8", count=1)[0])
    rows = payload[8 + 8 * n:]
    return np.frombuffer(payload, "<i8", count=n, offset=8), rows, len(rows) // max(n, 1)


def _encode(times: np.ndarray, rows: bytes) -> bytes | None:
    if not len(times):
        return None
    return _INDEX.encode(np.array([len(times)], "<i8").tobytes() + times.astype("<i8").tobytes()
                         + rows)


@dataclass
class SlidingAggregate(WindowOperator):
    """Sliding windows (see the module docstring and
    :class:`~headwater.streams.window_aggregate.WindowOperator`)."""

    window: SlidingWindow
    index_suffix: ClassVar[str | None] = "-records"
    _inputs: list[str] = field(init=False, repr=False)
    """The columns the aggregates read (what a (window, record) pair carries)."""
    _expired: weakref.WeakKeyDictionary = field(
        init=False, repr=False, default_factory=weakref.WeakKeyDictionary)
    """Per index cache: the bound of the last expiry scan (as the base class's ``_floors``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        roots = {n for e in self._acc.partials for n in e.meta.root_names()}
        wild = any(e.meta.has_multiple_outputs() for e in self._acc.partials)
        self._inputs = [_ROW, OFFSET, *sorted(roots - {_ROW, OFFSET}), *(["*"] if wild else [])]
        # ("*" is never a column: then every column is carried)

    def _merge_partition(self, partition: int, rows: pl.DataFrame, ctx: ProcessingContext
                         ) -> tuple[pl.DataFrame | None, pl.DataFrame]:
        size, grace = self.window.size_ms, self.window.grace_ms
        t = pl.col(TIMESTAMP)
        rows = rows.with_row_index(_ROW).with_columns(pl.col(_ROW).cast(pl.Int64))
        close = rows.get_column(_OBSERVED).to_numpy() - grace  # C per row, never decreasing
        is_late = t + size + 1 <= pl.col(_OBSERVED) - grace
        late = self._late_rows(
            rows.filter(is_late).drop(_ROW).with_columns(
                (t - size).alias(WINDOW_START), (t + 1).alias(WINDOW_END)),
            pl.col(WINDOW_END) + grace)
        names = rows.filter(~is_late).get_column(KEY).unique(maintain_order=True).to_list()
        if not names:
            return None, late
        kids = pl.DataFrame({KEY: names, _KID: np.arange(len(names))},
                            schema={KEY: rows.schema[KEY], _KID: pl.Int64})
        ok = rows.filter(~is_late).join(kids, on=KEY).sort(_KID, TIMESTAMP, _ROW)
        stored, srows = self._load_records(partition, names, int(close[0]), ctx)
        times = (pl.concat([stored.select(_KID, TIMESTAMP, pl.lit(-1, pl.Int64).alias(_FIRST)),
                            ok.select(_KID, TIMESTAMP, pl.col(_ROW).alias(_FIRST))])
                 .group_by(_KID, TIMESTAMP)
                 .agg(pl.col(_FIRST).min(), (pl.col(_FIRST) >= 0).any().alias("__b"))
                 .sort(_KID, TIMESTAMP))
        wins = self._windows(times)
        cache = ctx.state(self.store, partition)
        w_kid, w_s, w_e = (wins.get_column(c).to_numpy() for c in (_KID, WINDOW_START, WINDOW_END))
        wkeys = window_keys(w_e, w_s, [names[k] for k in w_kid])
        old = cache.get_many(wkeys)
        present = np.fromiter((v is not None for v in old), bool, len(old))
        closes_at = np.searchsorted(close, w_e, side="left")  # first row at which it is closed
        # the batch's records in each window, and those that arrive while it is open
        o_kid, o_t, o_row = (ok.get_column(c).to_numpy() for c in (_KID, TIMESTAMP, _ROW))
        lo, hi = _search(o_kid, o_t, w_kid, w_s, w_e)
        wid, pos = _expand(lo, hi)
        min_row = _per_window(np.minimum, o_row[pos], wid, len(wins))
        counts = o_row[pos] < closes_at[wid]
        wid, pos = wid[counts], pos[counts]
        # retained records in each new window; when each window is first called for (``c``)
        s_kid, s_t = stored.get_column(_KID).to_numpy(), stored.get_column(TIMESTAMP).to_numpy()
        slo, shi = _search(s_kid, s_t, w_kid, w_s, w_e)
        shi[present] = slo[present]
        zw, zpos = _expand(slo, shi)
        first_r = wins.get_column("__first_r").fill_null(_NEVER).to_numpy()
        c_r = np.where(first_r == _NEVER, _NEVER,
                       np.maximum(first_r, np.where(shi > slo, -1, min_row)))
        c = np.minimum(wins.get_column("__c_l").fill_null(_NEVER).to_numpy(), c_r)
        new = ~present & (c >= 0) & (c < closes_at)
        keep = new | (present & (np.bincount(wid, minlength=len(wins)) > 0))
        kept = np.flatnonzero(keep)
        wid, pos = wid[keep[wid]], pos[keep[wid]]  # (a window never created may hold some)
        renum = np.full(len(wins), -1)
        renum[kept] = np.arange(len(kept))
        # results: stored or retained-record accumulators, folded with the batch's partials
        on_new = keep[zw]
        acc = self._acc.reduce(self._acc.take(srows, zpos[on_new]), renum[zw[on_new]],
                                 len(kept))
        was = kept[present[kept]]
        if len(was):
            self._acc.put(acc, renum[was], self._acc.load(
                [old[i] for i in was], store=self.store, partition=partition,
                keys=[wkeys[i] for i in was]))
        inputs = self._inputs if set(self._inputs) <= set(ok.columns) else ok.columns
        partials = (ok.select(inputs)[pos].with_columns(pl.Series(_WID, renum[wid]))
                    .group_by(_WID, maintain_order=True)  # pairs come sorted by window
                    .agg(pl.col(OFFSET).max(), *self._acc.partials))
        at = partials.get_column(_WID).to_numpy()
        self._acc.put(acc, at, self._acc.fold(self._acc.take(acc, at), partials))
        cache.put_many([wkeys[i] for i in kept], self._acc.encode(acc))
        last = _per_window(np.maximum, o_row[pos], wid, len(wins))
        topic_row = np.where(last >= 0, last, c)[kept]
        group = pl.DataFrame({
            KEY: pl.Series([names[k] for k in w_kid[kept]], dtype=rows.schema[KEY]),
            TOPIC: rows.get_column(TOPIC).gather(topic_row),
            PARTITION: pl.Series([partition] * len(kept), dtype=rows.schema[PARTITION]),
            WINDOW_START: w_s[kept], WINDOW_END: w_e[kept]})
        self._store_records(partition, names, ok, stored, srows, int(close[-1]), ctx)
        return self._result_frame(group, acc), late

    def _windows(self, times: pl.DataFrame) -> pl.DataFrame:
        """The windows the batch touches, from each key's sorted distinct times (``_FIRST``: the
        batch row where a time first arrives, -1 if retained; ``__b``: in the batch): left
        windows holding a batch record, right windows holding one or defined by one; with when
        each definition is first called for (``__c_l``; for right windows, that of their own
        record, ``__first_r``)."""
        size, t = self.window.size_ms, pl.col(TIMESTAMP)
        in_batch = pl.when("__b").then(t)
        times = times.with_columns(
            t.shift(-1).over(_KID).alias("__next"),
            in_batch.forward_fill().over(_KID).alias("__prev_b"),
            in_batch.shift(-1).backward_fill().over(_KID).alias("__next_b"))
        none = pl.lit(None, pl.Int64)
        left = times.filter(pl.col("__prev_b") >= t - size).select(
            _KID, (t - size).alias(WINDOW_START), (t + 1).alias(WINDOW_END),
            pl.col(_FIRST).alias("__c_l"), none.alias("__first_r"))
        right = times.filter(
            (pl.col("__next") <= t + size + 1)
            & (pl.col("__b") | (pl.col("__next_b") <= t + size + 1))
        ).select(_KID, (t + 1).alias(WINDOW_START), (t + size + 2).alias(WINDOW_END),
                 none.alias("__c_l"), pl.col(_FIRST).alias("__first_r"))
        return (pl.concat([left, right]).group_by(_KID, WINDOW_START, WINDOW_END)
                .agg(pl.col("__c_l").min(), pl.col("__first_r").min())
                .sort(_KID, WINDOW_END, WINDOW_START))

    # --- the index of retained records ------------------------------------------------------

    def _load_records(self, partition: int, names: list[str], cutoff: int,
                      ctx: ProcessingContext) -> tuple[pl.DataFrame, AccRows]:
        """The retained (not expired at ``cutoff``) times of ``names`` (``_KID``, ``TIMESTAMP``,
        sorted) and their accumulators, aligned."""
        index = ctx.state(self.index_store, partition)
        ikeys = [_REC + k.encode() for k in names]
        counts, ts, raw, at = np.zeros(len(names), np.int64), [], [], []
        for k, (ik, value) in enumerate(zip(ikeys, index.get_many(ikeys))):
            if value is None:
                continue
            times, rows, w = _decode(value, store=self.index_store, partition=partition, key=ik)
            counts[k] = n = len(times)
            ts.append(times)
            raw += [rows[i:i + w] for i in range(0, n * w, w)]
            at += [ik] * n
        stored = pl.DataFrame({_KID: np.repeat(np.arange(len(names)), counts),
                               TIMESTAMP: np.concatenate(ts) if ts else np.zeros(0, np.int64)},
                              schema={_KID: pl.Int64, TIMESTAMP: pl.Int64})
        srows = self._acc.load(raw, store=self.index_store, partition=partition, keys=at)
        live = (stored.get_column(TIMESTAMP) + self.window.size_ms + 2 > cutoff).to_numpy()
        return stored.filter(live), self._acc.take(srows, np.flatnonzero(live))

    def _store_records(self, partition: int, names: list[str], ok: pl.DataFrame,
                       stored: pl.DataFrame, srows: AccRows, cutoff: int,
                       ctx: ProcessingContext) -> None:
        """Fold the accepted records into their keys' retained times, drop those expired at
        ``cutoff``, and queue an expiry marker for each key whose latest time grew."""
        size = self.window.size_ms
        fresh = ok.group_by(_KID, TIMESTAMP).agg(pl.col(OFFSET).max(), *self._acc.partials)
        fresh = fresh.join(stored.with_row_index("__at"), on=[_KID, TIMESTAMP], how="left")
        at = fresh.get_column("__at")
        base = self._acc.identities(fresh.height)
        hit = at.is_not_null().to_numpy()
        self._acc.put(base, np.flatnonzero(hit), self._acc.take(srows, at.drop_nulls().to_numpy()))
        rows = self._acc.concat([srows, self._acc.fold(base, fresh)])
        both = (pl.concat([stored.select(_KID, TIMESTAMP), fresh.select(_KID, TIMESTAMP)])
                .with_row_index("__i").unique([_KID, TIMESTAMP], keep="last")
                .filter(pl.col(TIMESTAMP) + size + 2 > cutoff).sort(_KID, TIMESTAMP))
        enc = self._acc.encode(self._acc.take(rows, both.get_column("__i").to_numpy()))
        b_kid, b_t = both.get_column(_KID).to_numpy(), both.get_column(TIMESTAMP).to_numpy()
        edges = np.searchsorted(b_kid, np.arange(len(names) + 1))
        n = np.diff(edges)
        old_max = np.full(len(names), np.iinfo(np.int64).min)
        s_kid = stored.get_column(_KID).to_numpy()
        np.maximum.at(old_max, s_kid, stored.get_column(TIMESTAMP).to_numpy())
        new_max = np.where(n > 0, b_t[np.maximum(edges[1:] - 1, 0)] if len(b_t) else 0, 0)
        grew = (n > 0) & (new_max > old_max)
        expiry = _time_bytes(new_max + size + 2).tobytes()
        head, counts = _INDEX.encode(b""), n.astype("<i8").tobytes()
        tbytes = b_t.astype("<i8").tobytes()
        keys, values, marks = [], [], []
        for k, name in enumerate(names):
            a, b = int(edges[k]), int(edges[k + 1])
            keys.append(_REC + name.encode())
            values.append(head + counts[8 * k:8 * k + 8] + tbytes[8 * a:8 * b]
                          + b"".join(enc[a:b]) if b > a else None)
            if grew[k]:
                marks.append(_EXP + expiry[8 * k:8 * k + 8] + name.encode())
        index = ctx.state(self.index_store, partition)
        index.put_many(keys + marks, values + [head] * len(marks))

    def on_time(self, ctx: ProcessingContext, task: TaskId, stream_time_ms: int | None,
                wall_ms: int) -> pl.DataFrame | None:
        """Close windows (base class), then drop the retained times that expired: one range
        scan of the expiry markers from the previous scan's bound."""
        out = super().on_time(ctx, task, stream_time_ms, wall_ms)
        if stream_time_ms is None:
            return out
        cutoff = stream_time_ms - self.window.grace_ms
        index = ctx.state(self.index_store, task.partition)
        bound = _EXP + closed_bound(cutoff)
        floor = self._expired.get(index, _EXP)
        if floor >= bound:
            return out
        due = [k for k, _ in index.range(floor, bound)]
        self._expired[index] = bound
        if not due:
            return out
        index.delete_many(due)
        ikeys = list(dict.fromkeys(_REC + k[9:] for k in due))
        values = []
        for ik, value in zip(ikeys, index.get_many(ikeys)):
            if value is None:
                values.append(None)
                continue
            times, rows, w = _decode(value, store=self.index_store, partition=task.partition,
                                     key=ik)
            i = int(np.searchsorted(times, cutoff - self.window.size_ms - 2, side="right"))
            values.append(_encode(times[i:], rows[i * w:]))
        index.put_many(ikeys, values)
        return out
