"""The generated stream: simulated flows -> rule violations -> disorder (out-of-order, late) ->
malformed-record choice, column-wise in chunks.

Each stage draws from its own seeded random source, so changing a fraction changes only what
that stage does: the same seed with ``invalid_fraction`` 0 and 0.1 gives the same flows.
:func:`generate_batches` is the stream as :class:`EventBatch` (flat Polars frames per type, what
the producer encodes); :func:`generate` is the same stream as one :class:`GeneratedEvent` (a dict)
per event, for tests and tools (~20x slower per event).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from headwater.generator import columns as C
from headwater.generator.events import nest, to_dicts
from headwater.generator.faults import MALFORMED_KINDS, violate
from headwater.generator.flows import TYPE_CODE, Emitted, FlowSimulator
from headwater.generator.model import GeneratedEvent, GeneratorConfig
from headwater.schemas.catalog import EVENT_TYPE_NAMES

_DELAYED = ("out-of-order", "late")


@dataclass
class EventBatch:
    """A run of the final stream.

    Attributes:
        frames: per event type, its flat rows (:mod:`headwater.generator.events`) in stream
            order, with the columns ``_pos`` (position in this batch), ``_invalid`` (violated rule
            or null), ``_delayed`` (``out-of-order``/``late`` or null), ``_lateness`` (ms),
            ``_malformed`` (kind or null) and ``_mseed`` (seed of the malformed bytes).
        size: number of events.
    """

    frames: dict[str, pl.DataFrame]
    size: int

    def __len__(self) -> int:
        return self.size

    def slices(self, size: int) -> Iterator[EventBatch]:
        """Consecutive sub-batches of at most ``size`` events (positions renumbered)."""
        if self.size <= size:
            yield self
            return
        pos = {name: f["_pos"].to_numpy() for name, f in self.frames.items()}
        for a in range(0, self.size, size):
            b = min(a + size, self.size)
            frames = {}
            for name, f in self.frames.items():
                lo, hi = np.searchsorted(pos[name], [a, b])
                if hi > lo:
                    frames[name] = f.slice(int(lo), int(hi - lo)).with_columns(pl.col("_pos") - a)
            yield EventBatch(frames, b - a)

    def events(self, environment: str) -> list[GeneratedEvent]:
        """The batch as :class:`GeneratedEvent` objects, in stream order."""
        out: list[GeneratedEvent | None] = [None] * self.size
        for name, frame in self.frames.items():
            dicts = to_dicts(name, nest(name, frame, environment))
            flags = frame.select("_pos", "_invalid", "_delayed", "_lateness", "_malformed").rows()
            for event, (pos, invalid, delayed, lateness, malformed) in zip(dicts, flags):
                g = GeneratedEvent(name, event)
                g.invalid, g.delayed, g.lateness_ms, g.malformed = invalid, delayed, lateness, malformed
                out[pos] = g
        return out  # type: ignore[return-value]


def generate_batches(config: GeneratorConfig, limit: int | None = None) -> Iterator[EventBatch]:
    """The full stream (exactly ``limit`` events, or endless) in batches, deterministic for
    ``config`` (batch boundaries included)."""
    invalid_rng = C.rng_for(config.seed, "invalid")
    malformed_rng = C.rng_for(config.seed, "malformed")
    disorder = _Disorder(config)
    for emitted in FlowSimulator(config).events(limit):
        if config.invalid_fraction:
            _invalidate(emitted, config.invalid_fraction, invalid_rng)
        batch = disorder.push(emitted)
        if batch.size:
            yield _malform(batch, config.malformed_fraction, malformed_rng)
    batch = disorder.flush()
    if batch.size:
        yield _malform(batch, config.malformed_fraction, malformed_rng)


def generate(config: GeneratorConfig, limit: int | None = None) -> Iterator[GeneratedEvent]:
    """The full stream as one :class:`GeneratedEvent` per event (same stream as
    :func:`generate_batches`)."""
    for batch in generate_batches(config, limit):
        yield from batch.events(config.environment)


def _invalidate(emitted: Emitted, fraction: float, rng: np.random.Generator) -> None:
    hit = rng.random(len(emitted)) < fraction
    for name, frame in emitted.frames.items():
        mine = emitted.types == TYPE_CODE[name]
        selected = np.zeros(len(frame), dtype=bool)
        selected[emitted.rows[mine]] = hit[mine]
        emitted.frames[name] = violate(name, frame, selected, rng)


def _malform(batch: EventBatch, fraction: float, rng: np.random.Generator) -> EventBatch:
    n = batch.size
    hit = rng.random(n) < fraction if fraction else np.zeros(n, dtype=bool)
    kinds = np.where(hit, rng.integers(3, size=n), -1) if fraction else np.full(n, -1)
    seeds = rng.integers(0, 2**62, size=n) if fraction else np.zeros(n, dtype=np.int64)
    for name, frame in batch.frames.items():
        pos = frame["_pos"].to_numpy()
        batch.frames[name] = frame.with_columns(
            C.labels(MALFORMED_KINDS, kinds[pos], "_malformed"), pl.Series("_mseed", seeds[pos], dtype=pl.Int64))
    return batch


class _Disorder:
    """Holds some events back until the stream's event time passed them by a delay.

    Out-of-order events wait 1..``max_disorder_ms`` of event time; late events ``late_by_ms``..1.5x
    that: a held event is released right after the first event that is not held and whose event
    time reaches its own plus the delay, so its ``lateness_ms`` is at least the delay unless the
    stream ends first (events still held then are flushed in release order). ``lateness_ms`` is the
    max event time emitted before the event minus its own.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        self._rng = C.rng_for(config.seed, "disorder")
        self._p_ooo, self._p_late = config.out_of_order_fraction, config.late_fraction
        self._ooo = (1, config.max_disorder_ms)
        self._late = (config.late_by_ms, config.late_by_ms * 3 // 2)
        self._held: dict[str, tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]] = {}  # frame, R, seq, late
        self._seq = 0
        self._high = -(2**63)

    def push(self, emitted: Emitted) -> EventBatch:
        n = len(emitted)
        ts = np.empty(n, dtype=np.int64)
        for name, frame in emitted.frames.items():
            mine = emitted.types == TYPE_CODE[name]
            ts[mine] = frame["timestamp"].to_numpy()[emitted.rows[mine]]
        if self._p_ooo or self._p_late:
            draw = self._rng.random(n)
            d_ooo = self._rng.integers(self._ooo[0], self._ooo[1] + 1, size=n)
            d_late = self._rng.integers(self._late[0], self._late[1] + 1, size=n)
        else:
            draw, d_ooo, d_late = np.ones(n), np.zeros(n, np.int64), np.zeros(n, np.int64)
        held = draw < self._p_ooo + self._p_late
        late = held & (draw >= self._p_ooo)
        release = ts + np.where(late, d_late, d_ooo)
        keep = ~held
        nh_t = ts[keep]
        if len(nh_t):
            self._high = max(self._high, int(nh_t[-1]))
        # candidates: previously held (per type) then newly held, as (type, source row, R, seq, late, t)
        new_idx = np.flatnonzero(held)
        seq_new = self._seq + np.arange(len(new_idx))
        self._seq += len(new_idx)
        # per type: a combined frame = previously held rows + this run's rows
        combined: dict[str, pl.DataFrame] = {}
        base: dict[str, int] = {}
        cand = []  # arrays per type: rows in combined, R, seq, late, t
        for name in EVENT_TYPE_NAMES:
            old = self._held.get(name)
            frame = emitted.frames.get(name)
            parts = [p for p in ((old[0] if old else None), frame) if p is not None and len(p)]
            if not parts:
                continue
            combined[name] = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
            base[name] = len(old[0]) if old else 0
            if old:
                cand.append((TYPE_CODE[name], np.arange(base[name]), old[1], old[2], old[3],
                             old[0]["timestamp"].to_numpy()))
        types_new = emitted.types[new_idx]
        rows_new = emitted.rows[new_idx] + np.array([base.get(EVENT_TYPE_NAMES[c], 0) for c in range(len(EVENT_TYPE_NAMES))])[types_new] \
            if len(new_idx) else np.zeros(0, np.int64)
        c_type = np.concatenate([np.full(len(c[1]), c[0], np.int8) for c in cand] + [types_new.astype(np.int8)])
        c_row = np.concatenate([c[1] for c in cand] + [rows_new])
        c_r = np.concatenate([c[2] for c in cand] + [release[new_idx]])
        c_seq = np.concatenate([c[3] for c in cand] + [seq_new])
        c_late = np.concatenate([c[4] for c in cand] + [late[new_idx]])
        c_t = np.concatenate([c[5] for c in cand] + [ts[new_idx]])
        k = np.searchsorted(nh_t, c_r, side="left")
        out = k < len(nh_t)
        # output: non-held j at key (2j, 0, 0); released held at (2k+1, R, seq)
        keep_idx = np.flatnonzero(keep)
        o_type = np.concatenate((emitted.types[keep_idx].astype(np.int8), c_type[out]))
        o_row = np.concatenate((emitted.rows[keep_idx] + np.array([base.get(EVENT_TYPE_NAMES[c], 0) for c in range(len(EVENT_TYPE_NAMES))])[emitted.types[keep_idx]]
                                if len(keep_idx) else np.zeros(0, np.int64), c_row[out]))
        key1 = np.concatenate((2 * np.arange(len(keep_idx)), 2 * k[out] + 1))
        key2 = np.concatenate((np.zeros(len(keep_idx), np.int64), c_r[out]))
        key3 = np.concatenate((np.zeros(len(keep_idx), np.int64), c_seq[out]))
        lateness = np.concatenate((np.zeros(len(keep_idx), np.int64),
                                   np.maximum(0, nh_t[np.minimum(k[out], max(len(nh_t) - 1, 0))] - c_t[out]) if out.any() else np.zeros(0, np.int64)))
        delayed = np.concatenate((np.zeros(len(keep_idx), np.int8), np.where(c_late[out], 2, 1).astype(np.int8)))
        order = np.lexsort((key3, key2, key1))
        batch = self._assemble(combined, o_type[order], o_row[order], lateness[order], delayed[order])
        # still held
        self._held = {}
        stay = ~out
        for name, frame in combined.items():
            mine = np.flatnonzero(stay & (c_type == TYPE_CODE[name]))
            if len(mine):
                self._held[name] = (frame[c_row[mine]], c_r[mine], c_seq[mine], c_late[mine])
        return batch

    def flush(self) -> EventBatch:
        """Release everything still held, in release order (the stream ended)."""
        names = [n for n in EVENT_TYPE_NAMES if n in self._held]
        if not names:
            return EventBatch({}, 0)
        c_type = np.concatenate([np.full(len(self._held[n][1]), TYPE_CODE[n], np.int8) for n in names])
        c_row = np.concatenate([np.arange(len(self._held[n][1])) for n in names])
        c_r = np.concatenate([self._held[n][1] for n in names])
        c_seq = np.concatenate([self._held[n][2] for n in names])
        c_late = np.concatenate([self._held[n][3] for n in names])
        c_t = np.concatenate([self._held[n][0]["timestamp"].to_numpy() for n in names])
        order = np.lexsort((c_seq, c_r))
        t = c_t[order]
        high = np.maximum.accumulate(np.concatenate(([self._high], t[:-1])))
        lateness = np.maximum(0, high - t)
        frames = {n: self._held[n][0] for n in names}
        self._held = {}
        return self._assemble(frames, c_type[order], c_row[order], lateness, np.where(c_late[order], 2, 1).astype(np.int8))

    @staticmethod
    def _assemble(frames: dict[str, pl.DataFrame], types: np.ndarray, rows: np.ndarray, lateness: np.ndarray,
                  delayed: np.ndarray) -> EventBatch:
        out = {}
        for name, frame in frames.items():
            mine = np.flatnonzero(types == TYPE_CODE[name])
            if not len(mine):
                continue
            out[name] = frame[rows[mine]].with_columns(
                pl.Series("_pos", mine, dtype=pl.Int64),
                C.labels(_DELAYED, delayed[mine].astype(np.int64) - 1, "_delayed"),
                pl.Series("_lateness", lateness[mine], dtype=pl.Int64),
            )
            if "_invalid" not in out[name].columns:
                out[name] = out[name].with_columns(pl.lit(None, dtype=pl.String).alias("_invalid"))
        return EventBatch(out, len(types))
