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
- **Unmatched** records of an outer side are emitted once stream time passes ``t + before +
  after + grace`` (from then on no on-time record can match them), rounded up to the next
  second (:data:`INDEX_BUCKET_MS`), by the stream-time timer.

State (one store, changelogged and restored like all state), keys:

- ``L | key`` and ``R | key``: the side's buffered records of ``key`` (``join buffer v1``,
  :mod:`headwater.state.codec`): one Confluent-framed Avro record ``{entries: [{ts, id,
  matched, row}]}`` (event time, source offset, matched flag, the row's columns), its schema
  derived from the frame and registered under ``<application_id>-<store>-<side>-value``. One
  value per key: a batch costs one ``get_many`` per side and partition and one columnar decode
  and encode, never a scan; Python runs per distinct key only to build state keys.
- ``X | bucket end | side | sequence``: the expiry index, one entry per batch and 1-second
  bucket of ``expiry = t + before + after + grace`` (big-endian sign-flipped time) listing the
  keys whose records expire in it; expiring is one range scan from the previous bound, never
  touches live keys, and costs one index write per batch, not per record.
- ``S | side``: the side's Avro row schema, so unmatched rows get the other side's columns (as
  nulls) after a restart too; ``Q``: the index's write sequence.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import orjson
import polars as pl

from headwater.schemas.layout import frame_schema
from headwater.state.codec import JOIN_BUFFER_V1_ID, ValueFormat
from headwater.streams.aggregate import MissingKeyError
from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, METADATA_COLUMNS, OFFSET, PARTITION, TIMESTAMP
from headwater.streams.repartition import avro_schema_of, storable
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
_PREFIX: dict[str, bytes] = {"left": b"L", "right": b"R"}
_INDEX, _SCHEMA, _SEQ = b"X", b"S", b"Q"
INDEX_BUCKET_MS = 1_000
"""Expiry-index granularity: records are dropped (and unmatched ones emitted) once stream time
passes the end of the bucket their expiry falls in, so at most this much (event time) late."""
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

_TS, _ID, _MATCHED, _BODY, _ENTRIES, _AT = "ts", "id", "matched", "row", "entries", "__at"


def _entries_of(part: pl.DataFrame, matched: pl.Series | bool) -> pl.DataFrame:
    """A batch's rows as buffer entries: ``_key``, ``ts``, ``id`` (source offset), ``matched``
    and the row's user columns as the struct ``row``."""
    body = [c for c in part.columns if c not in METADATA_COLUMNS and c != _ROW]
    part = storable(part)
    return part.select(
        KEY, pl.col(TIMESTAMP).alias(_TS), pl.col(OFFSET).alias(_ID),
        (pl.lit(matched) if isinstance(matched, bool) else matched).alias(_MATCHED),
        pl.struct(body).alias(_BODY) if body else pl.lit(None, pl.Struct({})).alias(_BODY))


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

    # --- buffers ----------------------------------------------------------------------------

    def _load(self, ctx: ProcessingContext, cache: WriteBackCache, side: Side, keys: list[str],
              partition: int) -> pl.DataFrame | None:
        """The buffered entries of ``keys`` on ``side`` (one row per entry, ``__at`` its position
        in the result), or ``None`` when none of them has any."""
        blobs = cache.get_many([_PREFIX[side] + k.encode() for k in keys])
        found = [(k, b) for k, b in zip(keys, blobs) if b is not None]
        if not found:
            return None
        decode = JOIN_BUFFER_V1.decode
        values = [decode(b, store=self.store, partition=partition) for _, b in found]
        buckets = ctx.decode_avro(values).with_columns(
            pl.Series(KEY, [k for k, _ in found], pl.String))
        return (buckets.select(KEY, _ENTRIES).explode(_ENTRIES).unnest(_ENTRIES)
                .with_row_index(_AT))

    def _store(self, ctx: ProcessingContext, cache: WriteBackCache, side: Side,
               entries: pl.DataFrame) -> None:
        """Write the entries of each key in ``entries`` as that key's whole buffer."""
        if not entries.height:
            return
        buckets = (entries.sort(KEY, _TS, _ID)
                   .group_by(KEY, maintain_order=True)
                   .agg(pl.struct(_TS, _ID, _MATCHED, _BODY).alias(_ENTRIES)))
        body = buckets.select(_ENTRIES)
        schema = json.dumps(avro_schema_of(body.schema, f"JoinBuffer_{side}"))
        payloads = ctx.encode_avro(body, ctx.row_subject(f"{self.store}-{side}"), schema)
        header = JOIN_BUFFER_V1.header
        cache.put_many([_PREFIX[side] + k.encode() for k in buckets.get_column(KEY).to_list()],
                       [header + p for p in payloads])

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
            cache = ctx.state(self.store, int(keyless.get_column(PARTITION)[0]))
            meta = keyless.select([c for c in METADATA_COLUMNS if c in keyless.columns])
            out.append(self._unmatched(side, meta, keyless.drop(meta.columns), cache))
        joined = pl.concat(out, how="diagonal_relaxed") if out else None
        # side effects last: a failed attempt (re-run row by row) dead-letters and stashes nothing
        if keyless.height and not self.outer(side):
            ctx.dead_letter(keyless, MissingKeyError(
                f"an inner {side} side of a join needs a key"), self.name)
        if late.height:
            self.late_records += late.height
            self._late.append(late.with_columns(
                pl.col(_OBSERVED).alias(STREAM_TIME),
                (pl.col(_OBSERVED) - closes).alias(LATE_BY_MS)).drop(_OBSERVED))
        return joined if joined is not None else self._no_rows(side, frame.drop(_OBSERVED), None)

    def _no_rows(self, side: Side, part: pl.DataFrame, cache: WriteBackCache | None
                 ) -> pl.DataFrame:
        """An empty output with every column known so far (both sides' when known), so what
        follows the join sees one schema whether or not a batch paired anything."""
        meta = part.select([c for c in METADATA_COLUMNS if c in part.columns]).clear()
        body = part.drop([c for c in (*METADATA_COLUMNS, _ROW) if c in part.columns]).clear()
        other: Side = "right" if side == "left" else "left"
        theirs = self._null_columns(cache, other, 0)
        left, right = (body, theirs) if side == "left" else (theirs, body)
        return self._assemble(meta, left, right)

    def _join_partition(self, side: Side, partition: int, part: pl.DataFrame,
                        ctx: ProcessingContext) -> pl.DataFrame:
        other: Side = "right" if side == "left" else "left"
        cache = ctx.state(self.store, partition)
        part = part.with_row_index(_ROW)
        keys = part.get_column(KEY).unique(maintain_order=True).to_list()
        theirs = self._load(ctx, cache, other, keys, partition)
        lo, hi = ((self.window.before_ms, self.window.after_ms) if side == "left"
                  else (self.window.after_ms, self.window.before_ms))
        pairs = None
        if theirs is not None:
            pairs = (part.select(_ROW, KEY, TIMESTAMP)
                     .join(theirs.select(KEY, _TS, _ID, _AT), on=KEY, how="inner")
                     .filter(pl.col(_TS).is_between(pl.col(TIMESTAMP) - lo,
                                                    pl.col(TIMESTAMP) + hi))
                     .sort(_ROW, _TS, _ID))
        joined = (self._pairs(side, part, pairs, theirs) if pairs is not None and pairs.height
                  else self._no_rows(side, part, cache))
        if pairs is not None and pairs.height and self.outer(other):
            hit = theirs.get_column(_AT).is_in(pairs.get_column(_AT).implode())  # type: ignore[union-attr]
            if (hit & ~theirs.get_column(_MATCHED)).any():  # type: ignore[union-attr]
                marked = theirs.with_columns(pl.col(_MATCHED) | hit)  # type: ignore[union-attr]
                touched = marked.filter(hit & ~theirs.get_column(_MATCHED)).get_column(KEY)  # type: ignore[union-attr]
                self._store(ctx, cache, other,
                            marked.filter(pl.col(KEY).is_in(touched.implode())).drop(_AT))
        matched = (part.get_column(_ROW).is_in(pairs.get_column(_ROW).implode())
                   if self.outer(side) and pairs is not None else False)
        self._buffer(ctx, cache, side, part, keys, matched, partition)
        return joined

    def _pairs(self, side: Side, part: pl.DataFrame, pairs: pl.DataFrame,
               theirs: pl.DataFrame) -> pl.DataFrame:
        """The joined rows of ``pairs`` (metadata of this side's row, ``_timestamp`` the later
        of the two event times)."""
        mine = part.drop(_ROW).gather(pairs.get_column(_ROW))
        their_rows = theirs.get_column(_BODY).gather(pairs.get_column(_AT)).struct.unnest()
        meta = mine.select([c for c in METADATA_COLUMNS if c in mine.columns]).with_columns(
            pl.max_horizontal(pl.col(TIMESTAMP), pairs.get_column(_TS)).alias(TIMESTAMP))
        body = mine.drop(meta.columns)
        left, right = (body, their_rows) if side == "left" else (their_rows, body)
        return self._assemble(meta, left, right)

    def _assemble(self, meta: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame
                  ) -> pl.DataFrame:
        taken = set(left.columns) | set(METADATA_COLUMNS)
        right = right.rename({c: c + self.suffix for c in right.columns if c in taken})
        return pl.concat([f for f in (meta, left, right) if f.width], how="horizontal")

    def _buffer(self, ctx: ProcessingContext, cache: WriteBackCache, side: Side,
                part: pl.DataFrame, keys: list[str], matched: pl.Series | bool,
                partition: int) -> None:
        new = _entries_of(part, matched)
        body_schema = pl.Schema(dict(new.schema[_BODY].to_schema()))  # type: ignore[attr-defined]
        self._seen[side] = body_schema
        row_schema = JOIN_BUFFER_V1.encode(json.dumps(
            avro_schema_of(body_schema, f"Join_{side}")).encode())
        if cache.get_many([_SCHEMA + _PREFIX[side]])[0] != row_schema:
            cache.put_many([_SCHEMA + _PREFIX[side]], [row_schema])
        mine = self._load(ctx, cache, side, keys, partition)
        entries = new if mine is None else pl.concat([mine.drop(_AT), new],
                                                      how="vertical_relaxed")
        self._store(ctx, cache, side, entries)
        self._index(cache, side, new)

    def _index(self, cache: WriteBackCache, side: Side, new: pl.DataFrame) -> None:
        """One expiry-index entry per due-time bucket of the batch: ``X | bucket end | side |
        write sequence`` -> the keys whose entries expire in the bucket (JSON). The sequence
        (``Q``, per store partition, in the same cache) makes every write a new index key
        whatever the rows' offsets (a join's input may carry offsets of several topics)."""
        due = (new.select(KEY, ((pl.col(_TS) + self.window.retention_ms) // INDEX_BUCKET_MS + 1)
                          * INDEX_BUCKET_MS)
               .group_by(_TS, maintain_order=True).agg(pl.col(KEY).unique(maintain_order=True)))
        stored = cache.get_many([_SEQ])[0]
        seq = 0 if stored is None else int.from_bytes(
            JOIN_BUFFER_V1.decode(stored, store=self.store, partition=-1), "big")
        cache.put_many([_SEQ], [JOIN_BUFFER_V1.encode((seq + due.height).to_bytes(8, "big"))])
        ends = _time_bytes(due.get_column(_TS).to_numpy()).tobytes()
        prefix = _PREFIX[side]
        keys = [_INDEX + ends[8 * n: 8 * n + 8] + prefix + (seq + n).to_bytes(8, "big")
                for n in range(due.height)]
        header = JOIN_BUFFER_V1.header
        cache.put_many(keys, [header + orjson.dumps(names)
                              for names in due.get_column(KEY).to_list()])

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
        due = list(cache.range(floor, bound))
        self._floors[cache] = bound
        if not due:
            return None
        cache.delete_many([k for k, _ in due])
        out = []
        for side in ("left", "right"):
            prefix = _PREFIX[side]
            keys = list(dict.fromkeys(
                name for k, v in due if k[9:10] == prefix
                for name in orjson.loads(JOIN_BUFFER_V1.decode(
                    v, store=self.store, partition=task.partition))))
            if keys:
                out.append(self._expire_side(ctx, task, cache, side, keys, stream_time_ms))
        emitted = [f for f in out if f is not None and f.height]
        return pl.concat(emitted, how="diagonal_relaxed") if emitted else None

    def _expire_side(self, ctx: ProcessingContext, task: TaskId, cache: WriteBackCache,
                     side: Side, keys: list[str], stream_time_ms: int) -> pl.DataFrame | None:
        entries = self._load(ctx, cache, side, keys, task.partition)
        if entries is None:
            return None
        entries = entries.drop(_AT)
        keep = pl.col(_TS) + self.window.retention_ms >= stream_time_ms
        kept = entries.filter(keep)
        self._store(ctx, cache, side, kept)
        emptied = set(keys) - set(kept.get_column(KEY).to_list())
        if emptied:
            cache.delete_many([_PREFIX[side] + k.encode() for k in emptied])
        if not self.outer(side):
            return None
        gone = entries.filter(~keep & ~pl.col(_MATCHED)).sort(_TS, _ID)
        if not gone.height:
            return None
        placeholder = pl.DataFrame({"__n": np.zeros(gone.height, np.int8)})
        meta = timer_rows(ctx, task, placeholder, keys=gone.get_column(KEY),
                          timestamp_ms=gone.get_column(_TS).to_list(),
                          offset=gone.get_column(_ID).to_list()).select(METADATA_COLUMNS)
        return self._unmatched(side, meta, gone.get_column(_BODY).struct.unnest(), cache)

    def _unmatched(self, side: Side, meta: pl.DataFrame, body: pl.DataFrame,
                   cache: WriteBackCache) -> pl.DataFrame:
        """Rows of ``side`` without a partner: the other side's columns are null."""
        other: Side = "right" if side == "left" else "left"
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
