"""The mergeable state of a window's aggregates (the "logic" of the clock x windower x logic
split): batch partials computed in Polars, merged into stored accumulators in NumPy.

A window operator (tumbling/hopping, session, sliding) only deals with an :class:`Accumulators`
and its opaque rows (:class:`AccRows`): it never looks inside. The contract:

- :attr:`Accumulators.partials` are Polars aggregation expressions, one set per group of a
  ``group_by(...).agg(...)`` over a batch's records (the batch partials); the records carry
  ``_timestamp`` (event time), ``_offset`` and the user's columns;
- :meth:`Accumulators.identities` gives rows of windows that saw nothing;
- :meth:`Accumulators.load` decodes stored values (``None`` = nothing stored: the identities);
- :meth:`Accumulators.fold` merges a frame of batch partials (aligned row by row) into rows;
- :meth:`Accumulators.reduce` merges rows that share a group id into one row per group (two
  sessions bridged by a record become one);
- :meth:`Accumulators.take` selects rows by position, :meth:`Accumulators.put` overwrites
  rows in place, :meth:`Accumulators.concat` appends (``AccRows`` is not a NumPy array);
- :meth:`Accumulators.encode` gives one stored value per row, :meth:`Accumulators.offsets`
  the largest contributing offset per row, :meth:`Accumulators.columns` the output columns (one
  per aggregate, named after it).

Every row also carries the largest contributing source offset (``_offset``), merged by max.

Fixed-width aggregates (count, sum, min, max, mean, first, last) live in one NumPy structured
row per window; when every aggregate is fixed-width, stored values are those rows (format
``window rows v1``, see :mod:`headwater.state.codec`) and a batch of them decodes with one
``np.frombuffer``. Variable-length aggregates (distinct sets, sketches, bounded lists,
user-defined accumulators; :mod:`headwater.streams.var_accumulators`) add one bytes value per
row each, stored after the fixed row (``window rows v2``). Either way the fingerprint covers
the window definition and the aggregates (with the settings that shape their state), so a store
written by another definition fails clearly instead of being misread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from headwater.state.codec import WINDOW_ROWS_V1_ID, WINDOW_ROWS_V2_ID, RowCodec, VarRowCodec
from headwater.streams.aggregate import Agg
from headwater.streams.records import OFFSET, TIMESTAMP
from headwater.streams.var_accumulators import VAR_KINDS, VarAccumulator, var_accumulator

_I64_MIN, _I64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


class AccRows:
    """Decoded accumulators, one per window (opaque to the window operators: they take
    ``len()``, and hand rows back to :class:`Accumulators`' methods).

    Attributes:
        fixed: the fixed-width fields, a NumPy structured array (one row per window).
        var: per variable-length aggregate, one bytes value per window (``b""`` = nothing seen).
    """

    __slots__ = ("fixed", "var")

    def __init__(self, fixed: np.ndarray, var: list[list[bytes]]) -> None:
        self.fixed = fixed
        self.var = var

    def __len__(self) -> int:
        return len(self.fixed)


class _Fixed:
    """A fixed-width aggregate: its fields in the row, its partials, how they merge."""

    fields: list[tuple[str, str]]
    partials: list[pl.Expr]

    def identity(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def fold(self, old: np.ndarray, partials: pl.DataFrame, out: np.ndarray) -> None:
        raise NotImplementedError

    def reduce(self, rows: np.ndarray, groups: np.ndarray, n: int, out: np.ndarray) -> None:
        raise NotImplementedError

    def column(self, rows: np.ndarray) -> pl.Series:
        raise NotImplementedError


class _Simple(_Fixed):
    """count and sum (merged by addition), min and max (NaN = no value, ignored)."""

    def __init__(self, name: str, agg: Agg) -> None:
        self.name, self.agg = name, agg
        self.merge = "add" if agg.kind in ("count", "sum") else agg.kind
        self.fields = [(name, agg.numpy_type)]
        self.partials = [agg.partial(name)]

    def identity(self, rows: np.ndarray) -> None:
        rows[self.name] = 0 if self.merge == "add" else np.nan

    def fold(self, old: np.ndarray, partials: pl.DataFrame, out: np.ndarray) -> None:
        out[self.name] = _merge(self.merge, old[self.name],
                                partials.get_column(self.name).to_numpy())

    def reduce(self, rows: np.ndarray, groups: np.ndarray, n: int, out: np.ndarray) -> None:
        out[self.name] = _reduce(self.merge, rows[self.name], groups, n)

    def column(self, rows: np.ndarray) -> pl.Series:
        return pl.Series(self.name, rows[self.name], self.agg.polars_type,
                         nan_to_null=self.merge != "add")


class _Mean(_Fixed):
    """Sum and count of the non-null values; the mean is computed on output."""

    def __init__(self, name: str, agg: Agg) -> None:
        self.name = name
        value = agg.expr.cast(pl.Float64)  # type: ignore[union-attr]
        self.fields = [(f"{name}.sum", "<f8"), (f"{name}.n", "<i8")]
        self.partials = [value.sum().alias(f"{name}.sum"),
                         value.count().cast(pl.Int64).alias(f"{name}.n")]

    def identity(self, rows: np.ndarray) -> None:
        rows[f"{self.name}.sum"] = 0
        rows[f"{self.name}.n"] = 0

    def fold(self, old: np.ndarray, partials: pl.DataFrame, out: np.ndarray) -> None:
        for field, _ in self.fields:
            out[field] = old[field] + partials.get_column(field).to_numpy()

    def reduce(self, rows: np.ndarray, groups: np.ndarray, n: int, out: np.ndarray) -> None:
        for field, _ in self.fields:
            out[field] = _reduce("add", rows[field], groups, n)

    def column(self, rows: np.ndarray) -> pl.Series:
        n = rows[f"{self.name}.n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, rows[f"{self.name}.sum"] / np.maximum(n, 1), np.nan)
        return pl.Series(self.name, mean, pl.Float64, nan_to_null=True)


class _FirstLast(_Fixed):
    """The value of the record with the smallest (first) / largest (last) ``(event time,
    offset)`` among those with a value: fields value, time, offset."""

    def __init__(self, name: str, agg: Agg) -> None:
        self.name, self.last = name, agg.kind == "last"
        self.v, self.t, self.o = f"{name}.v", f"{name}.t", f"{name}.o"
        self.fields = [(self.v, "<f8"), (self.t, "<i8"), (self.o, "<i8")]
        value = agg.expr.cast(pl.Float64)  # type: ignore[union-attr]
        valid = value.is_not_null() & value.is_not_nan()
        order = [pl.col(TIMESTAMP).filter(valid), pl.col(OFFSET).filter(valid)]

        def pick(e: pl.Expr) -> pl.Expr:
            ordered = e.filter(valid).sort_by(order)
            return ordered.last() if self.last else ordered.first()

        self.partials = [pick(value).alias(self.v), pick(pl.col(TIMESTAMP)).alias(self.t),
                         pick(pl.col(OFFSET)).alias(self.o)]
        self.none = _I64_MIN if self.last else _I64_MAX  # time/offset of "no value seen"

    def identity(self, rows: np.ndarray) -> None:
        rows[self.v], rows[self.t], rows[self.o] = np.nan, self.none, self.none

    def _wins(self, t_new: np.ndarray, o_new: np.ndarray, t_old: np.ndarray,
              o_old: np.ndarray) -> np.ndarray:
        if self.last:
            return (t_new > t_old) | ((t_new == t_old) & (o_new > o_old))
        return (t_new < t_old) | ((t_new == t_old) & (o_new < o_old))

    def fold(self, old: np.ndarray, partials: pl.DataFrame, out: np.ndarray) -> None:
        t = partials.get_column(self.t).fill_null(self.none).to_numpy()
        o = partials.get_column(self.o).fill_null(self.none).to_numpy()
        v = partials.get_column(self.v).fill_null(np.nan).to_numpy()
        wins = self._wins(t, o, old[self.t], old[self.o])
        out[self.v] = np.where(wins, v, old[self.v])
        out[self.t] = np.where(wins, t, old[self.t])
        out[self.o] = np.where(wins, o, old[self.o])

    def reduce(self, rows: np.ndarray, groups: np.ndarray, n: int, out: np.ndarray) -> None:
        self.identity(out)
        if not len(rows):
            return
        order = np.lexsort((rows[self.o], rows[self.t], groups))
        g = groups[order]
        edge = np.r_[g[1:] != g[:-1], True] if self.last else np.r_[True, g[1:] != g[:-1]]
        chosen = order[edge]
        for field, _ in self.fields:
            out[field][groups[chosen]] = rows[field][chosen]

    def column(self, rows: np.ndarray) -> pl.Series:
        return pl.Series(self.name, rows[self.v], pl.Float64, nan_to_null=True)


def _merge(kind: str, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    if kind == "add":
        return old + new
    return np.fmin(old, new) if kind == "min" else np.fmax(old, new)


def _reduce(kind: str, values: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    if kind == "add":
        out = np.zeros(n, values.dtype)
        np.add.at(out, groups, values)
        return out
    out = np.full(n, np.nan, values.dtype)
    (np.fmin if kind == "min" else np.fmax).at(out, groups, values)
    return out


def _fixed(name: str, agg: Agg) -> _Fixed:
    if agg.kind == "mean":
        return _Mean(name, agg)
    if agg.kind in ("first", "last"):
        return _FirstLast(name, agg)
    if agg.kind in ("count", "sum", "min", "max"):
        return _Simple(name, agg)
    raise ValueError(f"aggregate {name!r}: unknown kind {agg.kind!r}")


class Accumulators:
    """The accumulators of ``aggs`` for one window operator (see the module docstring).

    Args:
        aggs: output column name -> aggregate.
        layout: the window definition, fingerprinted into every stored value with the aggregates.
    """

    def __init__(self, aggs: Mapping[str, Agg], layout: str) -> None:
        self.aggs = dict(aggs)
        self._fixed: dict[str, _Fixed] = {}
        self._var: dict[str, VarAccumulator] = {}
        for name, agg in self.aggs.items():
            if agg.kind in VAR_KINDS:
                self._var[name] = var_accumulator(name, agg)
            else:
                self._fixed[name] = _fixed(name, agg)
        fields = [f for acc in self._fixed.values() for f in acc.fields] + [(OFFSET, "<i8")]
        described = layout + "|" + ",".join(f"{n}:{a.signature}" for n, a in self.aggs.items())
        self._codec: RowCodec = (
            VarRowCodec(WINDOW_ROWS_V2_ID, fields, described, len(self._var)) if self._var
            else RowCodec(WINDOW_ROWS_V1_ID, fields, described))
        self.partials: list[pl.Expr] = [
            p for acc in [*self._fixed.values(), *self._var.values()] for p in acc.partials]
        self._identity = self._codec.empty(1)
        for acc in self._fixed.values():
            acc.identity(self._identity)
        self._identity[OFFSET] = -1

    def identities(self, n: int) -> AccRows:
        """``n`` rows of windows that saw nothing."""
        return AccRows(np.repeat(self._identity, n), [[b""] * n for _ in self._var])

    def load(self, values: Sequence[bytes | None], *, store: str, partition: int,
             keys: Sequence[bytes]) -> AccRows:
        """Decoded stored values, identities where ``None`` (a writable copy).

        Raises:
            StateError: a value of another format or layout (names store, partition and key).
        """
        rows = self.identities(len(values))
        if isinstance(self._codec, VarRowCodec):
            stored, parts, present = self._codec.decode_values(
                values, store=store, partition=partition, keys=keys)
            if present is None:
                rows.var = parts
            else:
                at = np.flatnonzero(present).tolist()
                for mine, theirs in zip(rows.var, parts, strict=True):
                    for i, value in zip(at, theirs, strict=True):
                        mine[i] = value
        else:
            stored, present = self._codec.decode_rows(values, store=store, partition=partition,
                                                      keys=keys)
        if len(stored):
            rows.fixed[present if present is not None else slice(None)] = stored
        return rows

    def fold(self, rows: AccRows, partials: pl.DataFrame) -> AccRows:
        """``rows`` merged with the batch partials in ``partials`` (same order; it holds the
        partial columns and ``_offset``)."""
        merged = self._codec.empty(len(rows))
        for acc in self._fixed.values():
            acc.fold(rows.fixed, partials, merged)
        merged[OFFSET] = np.maximum(rows.fixed[OFFSET], partials.get_column(OFFSET).to_numpy())
        var = [acc.fold(old, partials) for acc, old in zip(self._var.values(), rows.var,
                                                             strict=True)]
        return AccRows(merged, var)

    def reduce(self, rows: AccRows, groups: np.ndarray, n: int) -> AccRows:
        """One row per group ``0..n-1``: the merge of the ``rows`` whose ``groups`` entry is it
        (a group without rows holds the identities)."""
        groups = np.asarray(groups, dtype=np.int64)
        out = self._codec.empty(n)
        for acc in self._fixed.values():
            acc.reduce(rows.fixed, groups, n, out)
        out[OFFSET] = -1
        np.maximum.at(out[OFFSET], groups, rows.fixed[OFFSET])
        var = [acc.reduce(parts, groups, n) for acc, parts in zip(self._var.values(), rows.var,
                                                                  strict=True)]
        return AccRows(out, var)

    def take(self, rows: AccRows, indices: np.ndarray | Sequence[int]) -> AccRows:
        """The rows at positions ``indices`` (in that order; repeats allowed), as new rows."""
        at = np.asarray(indices, dtype=np.int64)
        picked = at.tolist()
        return AccRows(rows.fixed[at], [[part[i] for i in picked] for part in rows.var])

    def put(self, rows: AccRows, indices: np.ndarray | Sequence[int], values: AccRows) -> None:
        """Overwrite the rows at positions ``indices`` with ``values`` (aligned), in place."""
        at = np.asarray(indices, dtype=np.int64)
        rows.fixed[at] = values.fixed
        for mine, theirs in zip(rows.var, values.var, strict=True):
            for i, value in zip(at.tolist(), theirs, strict=True):
                mine[i] = value

    def concat(self, parts: Sequence[AccRows]) -> AccRows:
        """The rows of ``parts``, one after the other."""
        return AccRows(np.concatenate([p.fixed for p in parts]),
                       [[v for p in parts for v in p.var[i]] for i in range(len(self._var))])

    @property
    def fixed_width(self) -> bool:
        """Whether every stored value has the same length (no variable-length aggregate)."""
        return not self._var

    def encode(self, rows: AccRows) -> list[bytes]:
        """One stored value per row."""
        if isinstance(self._codec, VarRowCodec):
            return self._codec.encode_values(rows.fixed, rows.var)
        return self._codec.encode_rows(rows.fixed)

    def offsets(self, rows: AccRows) -> np.ndarray:
        """The largest contributing source offset per row (-1: none)."""
        return rows.fixed[OFFSET]

    def columns(self, rows: AccRows) -> list[pl.Series]:
        """One output column per aggregate, in declaration order (see each kind's docstring in
        :mod:`headwater.streams.aggregate` for its type and when it is null)."""
        var = dict(zip(self._var, rows.var, strict=True))
        return [self._fixed[name].column(rows.fixed) if name in self._fixed
                else self._var[name].column(var[name]) for name in self.aggs]
