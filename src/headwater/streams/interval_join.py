"""Stream-stream joins within a time bound on a key (interval joins), column-wise per batch.

A left record at ``t`` joins every right record of the same key whose event time is in
``[t - before, t + after]``; ``how`` says which unmatched records are emitted too (``left``,
``right``, ``outer``: with the other side's columns null). Semantics (docs/joins.md):

- **Lateness** is judged per record against the stream time it arrives at (the task's stream
  time before the batch, then the running maximum of the batch, as for windows): a left record is
  late when ``t + after + grace < stream time``, a right record when ``t + before + grace <
  stream time`` (no on-time record of the other side can match it any more). Late records leave
  on the ``late`` side output (else the DLQ); they never join.
- **Pairs** are therefore exactly the pairs of on-time records of one key within the bound,
  whatever the arrival order and batch boundaries.
- **Unmatched** records of an outer side are emitted when stream time passes ``t + before +
  after + grace`` (from then on no on-time record can match them), by the stream-time timer.

State (one store, changelogged and restored like all state), keys:

- ``L | key`` and ``R | key``: the side's buffered records of ``key`` (``join buffer v1``,
  :mod:`headwater.state.codec`): event time, source offset, matched flag and the row as
  Confluent-framed Avro (schema derived from the frame, registered under
  ``<application_id>-<store>-<side>-value``). One value per key: a batch costs one ``get_many``
  per side and partition, never a scan.
- ``X | expiry | side | key``: the expiry index (big-endian sign-flipped ``expiry = t + before +
  after + grace``), so expiring is one range scan from the previous bound and never touches
  live keys.
- ``S | side``: the side's Avro row schema, so unmatched rows get the other side's columns (as
  nulls) after a restart too.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import polars as pl

from headwater.schemas.layout import frame_schema
from headwater.state.codec import JOIN_BUFFER_V1_ID, ValueFormat
from headwater.streams.aggregate import MissingKeyError
from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, METADATA_COLUMNS, OFFSET, PARTITION, TIMESTAMP
from headwater.streams.repartition import avro_schema_of
from headwater.streams.task import TaskId
from headwater.streams.time import TimerKind, TimerOperator, timer_rows
from headwater.streams.window_aggregate import (
    _OBSERVED,
    LATE_BY_MS,
    STREAM_TIME,
    LateRecordError,
    _time_bytes,
    _with_observed_time,
)

if TYPE_CHECKING:
    from headwater.state.cache import WriteBackCache

JoinHow = Literal["inner", "left", "right", "outer"]
Side = Literal["left", "right"]

JOIN_BUFFER_V1 = ValueFormat(JOIN_BUFFER_V1_ID, description="join buffer v1")
_ENTRY = np.dtype([("ts", "<i8"), ("id", "<i8"), ("matched", "u1")])
_PREFIX: dict[str, bytes] = {"left": b"L", "right": b"R"}
_SIDE_OF = {b"L": "left", b"R": "right"}
_INDEX, _SCHEMA = b"X", b"S"
_MARKER = JOIN_BUFFER_V1.encode(b"")
_ROW = "__join_row"


@dataclass(frozen=True)
class JoinWindow:
    """The time bound of an interval join (all milliseconds, none negative): a left record at
    ``t`` matches right records in ``[t - before_ms, t + after_ms]``."""

    before_ms: int
    after_ms: int
    grace_ms: int

    @property
    def retention_ms(self) -> int:
        """How long after its event time a record stays buffered (``before + after + grace``)."""
        return self.before_ms + self.after_ms + self.grace_ms

    def reach_ms(self, side: Side) -> int:
        """How far after its own event time a record of ``side`` may still be matched."""
        return self.after_ms if side == "left" else self.before_ms

    def describe(self) -> str:
        """E.g. ``interval join [-0ms, +600000ms], grace 0ms``."""
        return f"interval join [-{self.before_ms}ms, +{self.after_ms}ms], grace {self.grace_ms}ms"


# --- buffer values ---------------------------------------------------------------------------


def pack(entries: np.ndarray, payloads: list[bytes]) -> bytes:
    """A ``join buffer v1`` value of ``entries`` (``_ENTRY`` records) and their row payloads."""
    lengths = np.fromiter((len(p) for p in payloads), dtype="<u4", count=len(payloads))
    return b"".join((JOIN_BUFFER_V1.header, np.uint32(len(entries)).tobytes(),
                     entries.astype(_ENTRY, copy=False).tobytes(), lengths.tobytes(), *payloads))


def unpack(value: bytes, *, store: str, partition: int) -> tuple[np.ndarray, list[bytes]]:
    """The entries and payloads of a ``join buffer v1`` value (see :func:`pack`)."""
    body = JOIN_BUFFER_V1.decode(value, store=store, partition=partition)
    n = int(np.frombuffer(body, "<u4", 1)[0])
    at = 4 + n * _ENTRY.itemsize
    entries = np.frombuffer(body, _ENTRY, n, 4)
    lengths = np.frombuffer(body, "<u4", n, at).astype(np.int64)
    ends = at + 4 * n + np.cumsum(lengths)
    starts = ends - lengths
    return entries, [body[s:e] for s, e in zip(starts.tolist(), ends.tolist())]


@dataclass
class _Buffered:
    """The buffered records of one side for a set of keys, flattened (one row per entry)."""

    keys: list[str]
    blobs: list[bytes | None]
    entries: list[np.ndarray]
    payloads: list[list[bytes]]

    @classmethod
    def load(cls, cache: WriteBackCache, side: Side, keys: list[str], *, store: str,
             partition: int) -> _Buffered:
        blobs = cache.get_many([_PREFIX[side] + k.encode() for k in keys])
        entries, payloads = [], []
        for blob in blobs:
            if blob is None:
                entries.append(np.zeros(0, _ENTRY))
                payloads.append([])
            else:
                e, p = unpack(blob, store=store, partition=partition)
                entries.append(e.copy())
                payloads.append(p)
        return cls(keys, blobs, entries, payloads)

    def frame(self) -> pl.DataFrame:
        """One row per entry: ``_key``, ``__ts``, ``__id``, ``__k`` (key index), ``__i``
        (entry index within the key)."""
        sizes = [len(e) for e in self.entries]
        total = sum(sizes)
        if not total:
            return pl.DataFrame(schema={KEY: pl.String, "__ts": pl.Int64, "__id": pl.Int64,
                                        "__k": pl.Int64, "__i": pl.Int64})
        flat = np.concatenate(self.entries)
        k = np.repeat(np.arange(len(sizes)), sizes)
        i = np.concatenate([np.arange(s) for s in sizes])
        return pl.DataFrame({KEY: pl.Series(self.keys, dtype=pl.String).gather(k),
                             "__ts": flat["ts"], "__id": flat["id"], "__k": k, "__i": i})


@dataclass(eq=False)
class IntervalJoin:
    """The join's logic and state, shared by its two inputs (:class:`JoinInput`)."""

    store: str
    window: JoinWindow
    how: JoinHow
    suffix: str
    name: str
    late_records: int = 0
    _late: list[pl.DataFrame] = field(default_factory=list, repr=False)
    _floors: weakref.WeakKeyDictionary[WriteBackCache, bytes] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False)
    _seen: dict[str, pl.Schema] = field(default_factory=dict, repr=False)
    """Each side's latest row schema in this process (for unmatched rows of the other side)."""

    def outer(self, side: Side) -> bool:
        """Whether unmatched records of ``side`` are emitted."""
        return self.how == "outer" or self.how == side

    # --- a batch of one side ----------------------------------------------------------------

    def process(self, side: Side, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        """Join a batch of ``side`` (stamped with ``_OBSERVED``) with the other side's buffer,
        buffer it, and return the joined rows."""
        closes = pl.col(TIMESTAMP) + (self.window.reach_ms(side) + self.window.grace_ms)
        keyed = frame.filter(pl.col(KEY).is_not_null())
        late = keyed.filter(closes < pl.col(_OBSERVED))
        rows = keyed.filter(closes >= pl.col(_OBSERVED)).drop(_OBSERVED)
        out = [self._join_partition(side, int(p), part, ctx)
               for (p,), part in rows.group_by(PARTITION, maintain_order=True)]
        keyless = frame.filter(pl.col(KEY).is_null()).drop(_OBSERVED)
        if keyless.height and self.outer(side):
            out.append(self._unmatched(side, keyless, None, ctx, keyless.get_column(PARTITION)))
        # side effects last: a failed attempt (re-run row by row) dead-letters and stashes nothing
        if keyless.height and not self.outer(side):
            ctx.dead_letter(keyless, MissingKeyError(
                f"an inner {side} side of a join needs a key"), self.name)
        if late.height:
            self.late_records += late.height
            self._late.append(late.with_columns(
                pl.col(_OBSERVED).alias(STREAM_TIME),
                (pl.col(_OBSERVED) - closes).alias(LATE_BY_MS)).drop(_OBSERVED))
        return pl.concat(out, how="diagonal_relaxed") if out else frame.clear().drop(_OBSERVED)

    def _join_partition(self, side: Side, partition: int, part: pl.DataFrame,
                        ctx: ProcessingContext) -> pl.DataFrame:
        other: Side = "right" if side == "left" else "left"
        cache = ctx.state(self.store, partition)
        part = part.with_row_index(_ROW)
        keys = part.get_column(KEY).unique(maintain_order=True).to_list()
        theirs = _Buffered.load(cache, other, keys, store=self.store, partition=partition)
        lo, hi = ((self.window.before_ms, self.window.after_ms) if side == "left"
                  else (self.window.after_ms, self.window.before_ms))
        pairs = (part.select(_ROW, KEY, TIMESTAMP)
                 .join(theirs.frame(), on=KEY, how="inner")
                 .filter(pl.col("__ts").is_between(pl.col(TIMESTAMP) - lo, pl.col(TIMESTAMP) + hi))
                 .sort(_ROW, "__ts", "__id"))
        joined = self._pairs(side, part, pairs, theirs, ctx)
        if pairs.height and self.outer(other):
            self._mark_matched(cache, other, theirs, pairs)
        matched = (np.isin(part.get_column(_ROW).to_numpy(), pairs.get_column(_ROW).to_numpy())
                   if self.outer(side) else np.zeros(part.height, bool))
        self._buffer(cache, side, part, keys, matched, ctx, partition)
        return joined

    def _pairs(self, side: Side, part: pl.DataFrame, pairs: pl.DataFrame, theirs: _Buffered,
               ctx: ProcessingContext) -> pl.DataFrame:
        """The joined rows of ``pairs`` (metadata of this side's row, ``_timestamp`` the later
        of the two event times)."""
        if not pairs.height:
            return part.clear().drop(_ROW)
        ks = pairs.get_column("__k").to_list()
        ix = pairs.get_column("__i").to_list()
        payloads = [theirs.payloads[k][i] for k, i in zip(ks, ix)]
        their_rows = ctx.decode_avro(payloads)
        mine = part.drop(_ROW).gather(pairs.get_column(_ROW))
        stamp = pl.max_horizontal(pl.col(TIMESTAMP), pairs.get_column("__ts"))
        meta = mine.select(*[c for c in METADATA_COLUMNS if c in mine.columns]).with_columns(stamp)
        body = mine.drop([c for c in METADATA_COLUMNS if c in mine.columns])
        left, right = (body, their_rows) if side == "left" else (their_rows, body)
        return self._assemble(meta, left, right)

    def _assemble(self, meta: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame
                  ) -> pl.DataFrame:
        taken = set(left.columns) | set(METADATA_COLUMNS)
        right = right.rename({c: c + self.suffix for c in right.columns if c in taken})
        return pl.concat([f for f in (meta, left, right) if f.width], how="horizontal")

    def _mark_matched(self, cache: WriteBackCache, side: Side, buffered: _Buffered,
                      pairs: pl.DataFrame) -> None:
        hit = pairs.select("__k", "__i").unique()
        changed: dict[int, None] = {}
        for k, i in hit.iter_rows():
            if not buffered.entries[k]["matched"][i]:
                buffered.entries[k]["matched"][i] = 1
                changed[k] = None
        if changed:
            cache.put_many([_PREFIX[side] + buffered.keys[k].encode() for k in changed],
                           [pack(buffered.entries[k], buffered.payloads[k]) for k in changed])

    def _buffer(self, cache: WriteBackCache, side: Side, part: pl.DataFrame, keys: list[str],
                matched: np.ndarray, ctx: ProcessingContext, partition: int) -> None:
        body = part.drop([_ROW, *[c for c in METADATA_COLUMNS if c in part.columns]])
        self._seen[side] = body.schema
        schema = json.dumps(avro_schema_of(body.schema, f"Join_{side}"))
        payloads = ctx.encode_avro(body, ctx.row_subject(f"{self.store}-{side}"), schema)
        stored_schema = JOIN_BUFFER_V1.encode(schema.encode())
        if cache.get_many([_SCHEMA + _PREFIX[side]])[0] != stored_schema:
            cache.put_many([_SCHEMA + _PREFIX[side]], [stored_schema])
        mine = _Buffered.load(cache, side, keys, store=self.store, partition=partition)
        index = {k: n for n, k in enumerate(keys)}
        key_of = [index[k] for k in part.get_column(KEY).to_list()]
        ts = part.get_column(TIMESTAMP).to_numpy()
        offsets = part.get_column(OFFSET).to_numpy()
        new = np.zeros(part.height, _ENTRY)
        new["ts"], new["id"], new["matched"] = ts, offsets, matched
        added: dict[int, list[int]] = {}
        for row, k in enumerate(key_of):
            added.setdefault(k, []).append(row)
        values = []
        for k, picked in added.items():
            entries = np.concatenate([mine.entries[k], new[picked]])
            values.append(pack(entries, mine.payloads[k] + [payloads[r] for r in picked]))
        cache.put_many([_PREFIX[side] + keys[k].encode() for k in added], values)
        expiry = (pl.DataFrame({"e": ts + self.window.retention_ms, "k": key_of}).unique())
        stamps = _time_bytes(expiry.get_column("e").to_numpy()).tobytes()
        index_keys = [_INDEX + stamps[8 * n: 8 * n + 8] + _PREFIX[side] + keys[k].encode()
                      for n, k in enumerate(expiry.get_column("k").to_list())]
        cache.put_many(index_keys, [_MARKER] * len(index_keys))

    # --- expiry -----------------------------------------------------------------------------

    def expire(self, ctx: ProcessingContext, task: TaskId, stream_time_ms: int | None
               ) -> pl.DataFrame | None:
        """Drop every buffered record of ``task`` whose ``t + before + after + grace`` is before
        stream time, and emit the unmatched ones of outer sides: one index range scan."""
        if stream_time_ms is None:
            return None
        cache = ctx.state(self.store, task.partition)
        bound = _INDEX + _time_bytes(np.array([stream_time_ms])).tobytes()
        floor = self._floors.get(cache, _INDEX)
        if floor >= bound:
            return None
        due = [k for k, _ in cache.range(floor, bound)]
        self._floors[cache] = bound
        if not due:
            return None
        cache.delete_many(due)
        out = []
        for side in ("left", "right"):
            prefix = _PREFIX[side]
            keys = list(dict.fromkeys(k[10:].decode() for k in due if k[9:10] == prefix))
            if keys:
                out.append(self._expire_side(ctx, task, cache, side, keys, stream_time_ms))
        emitted = [f for f in out if f is not None and f.height]
        return pl.concat(emitted, how="diagonal_relaxed") if emitted else None

    def _expire_side(self, ctx: ProcessingContext, task: TaskId, cache: WriteBackCache,
                     side: Side, keys: list[str], stream_time_ms: int) -> pl.DataFrame | None:
        buffered = _Buffered.load(cache, side, keys, store=self.store, partition=task.partition)
        gone_keys, gone = [], []
        puts, values, deletes = [], [], []
        for k, entries in enumerate(buffered.entries):
            keep = entries["ts"] + self.window.retention_ms >= stream_time_ms
            if keep.all():
                continue
            name = _PREFIX[side] + keys[k].encode()
            if keep.any():
                puts.append(name)
                values.append(pack(entries[keep], [p for p, x in zip(buffered.payloads[k], keep)
                                                   if x]))
            else:
                deletes.append(name)
            if self.outer(side):
                for i in np.flatnonzero(~keep & (entries["matched"] == 0)).tolist():
                    gone_keys.append(k)
                    gone.append(i)
        if puts:
            cache.put_many(puts, values)
        if deletes:
            cache.delete_many(deletes)
        if not gone:
            return None
        order = sorted(range(len(gone)), key=lambda n: (
            int(buffered.entries[gone_keys[n]]["ts"][gone[n]]),
            int(buffered.entries[gone_keys[n]]["id"][gone[n]])))
        body = ctx.decode_avro([buffered.payloads[gone_keys[n]][gone[n]] for n in order])
        stamps = [int(buffered.entries[gone_keys[n]]["ts"][gone[n]]) for n in order]
        offsets = [int(buffered.entries[gone_keys[n]]["id"][gone[n]]) for n in order]
        names = [keys[gone_keys[n]] for n in order]
        placeholder = pl.DataFrame({"__n": np.zeros(len(names), np.int8)})
        rows = timer_rows(ctx, task, placeholder, keys=names, timestamp_ms=stamps,
                          offset=offsets).select(METADATA_COLUMNS)
        return self._unmatched(side, rows, body, ctx, None, cache)

    def _unmatched(self, side: Side, meta_rows: pl.DataFrame, body: pl.DataFrame | None,
                   ctx: ProcessingContext, partitions: pl.Series | None,
                   cache: WriteBackCache | None = None) -> pl.DataFrame:
        """Rows of ``side`` without a partner: the other side's columns are null."""
        meta = meta_rows.select([c for c in METADATA_COLUMNS if c in meta_rows.columns])
        if body is None:
            body = meta_rows.drop(meta.columns)
        other: Side = "right" if side == "left" else "left"
        if cache is None and partitions is not None and partitions.len():
            cache = ctx.state(self.store, int(partitions[0]))
        nulls = self._null_columns(cache, other, meta.height)
        left, right = (body, nulls) if side == "left" else (nulls, body)
        return self._assemble(meta, left, right)

    def _null_columns(self, cache: WriteBackCache | None, side: Side, n: int) -> pl.DataFrame:
        stored = None if cache is None else cache.get_many([_SCHEMA + _PREFIX[side]])[0]
        if stored is not None:
            text = JOIN_BUFFER_V1.decode(stored, store=self.store, partition=-1)
            schema = frame_schema(json.loads(text))
        elif side in self._seen:  # not in this partition yet, but in another one
            schema = self._seen[side]
        else:  # the other side never had a record: its columns are unknown
            return pl.DataFrame()
        return pl.DataFrame({c: pl.Series(c, [None] * n, dtype) for c, dtype in schema.items()})

    # --- side outputs -----------------------------------------------------------------------

    def take_side_outputs(self) -> dict[str, pl.DataFrame]:
        if not self._late:
            return {}
        late, self._late = pl.concat(self._late, how="diagonal_relaxed"), []
        return {"late": late}

    def unrouted_side_output(self, name: str, rows: pl.DataFrame, ctx: ProcessingContext) -> None:
        if name == "late":
            ctx.dead_letter(rows, LateRecordError(
                f"late for {self.window.describe()}: no on-time record of the other side can "
                "match it any more (route `.late` to keep late records as data)"), self.name)


@dataclass
class JoinInput(Operator):
    """One input of an :class:`IntervalJoin` (its two inputs share their output nodes)."""

    join: IntervalJoin
    side: Side
    name: str = "join"
    stateful: bool = True

    def store_names(self) -> list[str]:
        return [self.join.store]

    def prepare(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        """Stamp each row with the stream time it arrives at, once per batch (see windows)."""
        return frame if _OBSERVED in frame.columns else _with_observed_time(frame, ctx)

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        return self.join.process(self.side, self.prepare(frame, ctx), ctx)

    def take_side_outputs(self) -> dict[str, pl.DataFrame]:
        """The batch's late records (``late``)."""
        return self.join.take_side_outputs()

    def unrouted_side_output(self, name: str, rows: pl.DataFrame, ctx: ProcessingContext) -> None:
        """Late records nobody reads go to the DLQ as ``LateRecordError``."""
        self.join.unrouted_side_output(name, rows, ctx)


@dataclass
class TimedJoinInput(JoinInput, TimerOperator):
    """The left input, which also carries the join's stream-time timer (expiry)."""

    fires_on: ClassVar[TimerKind] = TimerKind.STREAM_TIME

    def on_time(self, ctx: ProcessingContext, task: TaskId, stream_time_ms: int | None,
                wall_ms: int) -> pl.DataFrame | None:
        return self.join.expire(ctx, task, stream_time_ms)
