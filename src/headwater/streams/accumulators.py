"""The mergeable state of a window's aggregates (the "logic" of the clock x windower x logic
split): batch partials computed in Polars, merged into stored accumulators in NumPy.

A window operator (tumbling/hopping, session, sliding) only deals with an :class:`Accumulators`
and its opaque rows (:class:`AccRows`): it never looks inside. The contract:

- :attr:`Accumulators.partials` are Polars aggregation expressions, one set per group of a
  ``group_by(...).agg(...)`` over a batch's records (the batch partials);
- :meth:`Accumulators.load` decodes stored values (``None`` = nothing stored: the identities);
- :meth:`Accumulators.fold` merges a frame of batch partials (aligned row by row) into rows;
- :meth:`Accumulators.reduce` merges rows that share a group id into one row per group (two
  sessions bridged by a record become one);
- :meth:`Accumulators.encode` gives one stored value per row, :meth:`Accumulators.columns` the
  output columns (one per aggregate, named after it).

Every row also carries the largest contributing source offset (``_offset``), merged by max.

Stored values are fixed-width rows (format ``window rows v1``, see :mod:`headwater.state.codec`)
whose fingerprint covers the window definition and the aggregates, so a store written by another
definition fails clearly instead of being misread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from headwater.state.codec import WINDOW_ROWS_V1_ID, RowCodec
from headwater.streams.aggregate import Agg
from headwater.streams.records import OFFSET

AccRows = np.ndarray
"""Decoded accumulators, one per window (opaque to the window operators)."""


@dataclass(frozen=True)
class _Field:
    name: str
    numpy_type: str
    partial: pl.Expr
    kind: str  # how two stored values merge: add, min, max


def _fields(aggs: Mapping[str, Agg]) -> list[_Field]:
    out = []
    for name, agg in aggs.items():
        if agg.kind == "mean":
            value = agg.expr.cast(pl.Float64)  # type: ignore[union-attr]
            out.append(_Field(f"{name}.sum", "<f8", value.sum(), "add"))
            out.append(_Field(f"{name}.n", "<i8", value.count().cast(pl.Int64), "add"))
        else:
            kind = "add" if agg.kind in ("count", "sum") else agg.kind
            out.append(_Field(name, agg.numpy_type, agg.partial(name), kind))
    return out


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


class Accumulators:
    """The accumulators of ``aggs`` for one window operator (see the module docstring).

    Args:
        aggs: output column name -> aggregate.
        layout: the window definition, fingerprinted into every stored value with the aggregates.
    """

    def __init__(self, aggs: Mapping[str, Agg], layout: str) -> None:
        self.aggs = dict(aggs)
        self._fields = _fields(self.aggs)
        self._codec = RowCodec(
            WINDOW_ROWS_V1_ID,
            [(f.name, f.numpy_type) for f in self._fields] + [(OFFSET, "<i8")],
            layout + "|" + ",".join(f"{n}:{a.kind}" for n, a in self.aggs.items()),
        )
        self.partials: list[pl.Expr] = [f.partial.alias(f.name) for f in self._fields]

    def identities(self, n: int) -> AccRows:
        """``n`` rows of windows that saw nothing."""
        rows = self._codec.empty(n)
        for f in self._fields:
            rows[f.name] = np.nan if f.kind in ("min", "max") else 0
        rows[OFFSET] = -1
        return rows

    def load(self, values: Sequence[bytes | None], *, store: str, partition: int,
             keys: Sequence[bytes]) -> AccRows:
        """Decoded stored values, identities where ``None`` (a writable copy).

        Raises:
            StateError: a value of another format or layout (names store, partition and key).
        """
        stored, present = self._codec.decode_rows(values, store=store, partition=partition,
                                                  keys=keys)
        rows = self.identities(len(values))
        if len(stored):
            rows[present if present is not None else slice(None)] = stored
        return rows

    def fold(self, rows: AccRows, partials: pl.DataFrame) -> AccRows:
        """``rows`` merged with the batch partials in ``partials`` (same order; it holds the
        partial columns and ``_offset``)."""
        merged = self._codec.empty(len(rows))
        for f in self._fields:
            merged[f.name] = _merge(f.kind, rows[f.name], partials.get_column(f.name).to_numpy())
        merged[OFFSET] = np.maximum(rows[OFFSET], partials.get_column(OFFSET).to_numpy())
        return merged

    def reduce(self, rows: AccRows, groups: np.ndarray, n: int) -> AccRows:
        """One row per group ``0..n-1``: the merge of the ``rows`` whose ``groups`` entry is it
        (a group without rows holds the identities)."""
        out = self._codec.empty(n)
        for f in self._fields:
            out[f.name] = _reduce(f.kind, rows[f.name], groups, n)
        out[OFFSET] = -1
        np.maximum.at(out[OFFSET], groups, rows[OFFSET])
        return out

    def encode(self, rows: AccRows) -> list[bytes]:
        """One stored value per row."""
        return self._codec.encode_rows(rows)

    def offsets(self, rows: AccRows) -> np.ndarray:
        """The largest contributing source offset per row (-1: none)."""
        return rows[OFFSET]

    def columns(self, rows: AccRows) -> list[pl.Series]:
        """One output column per aggregate (min/max/mean null where no value was seen)."""
        out = []
        for name, agg in self.aggs.items():
            if agg.kind == "mean":
                n = rows[f"{name}.n"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = np.where(n > 0, rows[f"{name}.sum"] / np.maximum(n, 1), np.nan)
                out.append(pl.Series(name, mean, pl.Float64, nan_to_null=True))
            else:
                out.append(pl.Series(name, rows[name], agg.polars_type,
                                     nan_to_null=agg.kind in ("min", "max")))
        return out
