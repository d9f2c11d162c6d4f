"""Keyed stateful aggregation: per-batch partial aggregates merged into state, vectorized.

A batch is grouped by (input partition, key) in Polars; each group's partial aggregate is merged
with the key's stored aggregate in NumPy. Stored values are fixed-width rows of the aggregate
columns (int64 counts, float64 sums/minima/maxima), so a batch of stored values decodes with one
``np.frombuffer`` instead of one parse per key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from headwater.errors import HeadwaterError
from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC


class MissingKeyError(HeadwaterError):
    """A record reached a keyed operator without a key (sent to the DLQ)."""


@dataclass(frozen=True)
class Agg:
    """One mergeable aggregate. Build them with :func:`count`, :func:`sum`, :func:`min`, :func:`max`."""

    kind: str
    expr: pl.Expr | None = None

    @property
    def numpy_type(self) -> str:
        return "<i8" if self.kind == "count" else "<f8"

    @property
    def polars_type(self) -> pl.DataType:
        return pl.Int64() if self.kind == "count" else pl.Float64()

    def partial(self, alias: str) -> pl.Expr:
        if self.kind == "count":
            return pl.len().cast(pl.Int64).alias(alias)
        assert self.expr is not None
        value = self.expr.cast(pl.Float64)
        return getattr(value, self.kind)().alias(alias)

    def merge(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        if self.kind in ("count", "sum"):
            return old + new
        return np.minimum(old, new) if self.kind == "min" else np.maximum(old, new)

    def identity(self) -> float | int:
        return {"count": 0, "sum": 0.0, "min": np.inf, "max": -np.inf}[self.kind]


def count() -> Agg:
    """Number of records per key."""
    return Agg("count")


def sum(expr: pl.Expr | str) -> Agg:  # noqa: A001 - mirrors the Polars/SQL name
    """Sum of an expression per key (as float64)."""
    return Agg("sum", pl.col(expr) if isinstance(expr, str) else expr)


def min(expr: pl.Expr | str) -> Agg:  # noqa: A001
    """Minimum of an expression per key (as float64)."""
    return Agg("min", pl.col(expr) if isinstance(expr, str) else expr)


def max(expr: pl.Expr | str) -> Agg:  # noqa: A001
    """Maximum of an expression per key (as float64)."""
    return Agg("max", pl.col(expr) if isinstance(expr, str) else expr)


@dataclass
class Aggregate(Operator):
    """Merge each key's batch partials into its running aggregate; emit the updated rows.

    Output columns: the metadata columns (``_key``, ``_partition``, the group's last ``_offset``
    and ``_timestamp``) and one column per aggregate.
    """

    store: str
    aggs: Mapping[str, Agg]
    name: str = "aggregate"
    stateful: bool = True
    _row_type: np.dtype = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._row_type = np.dtype([(n, a.numpy_type) for n, a in self.aggs.items()])

    def store_names(self) -> list[str]:
        return [self.store]

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        keyless = frame.filter(pl.col(KEY).is_null())
        if keyless.height:
            ctx.dead_letter(keyless, MissingKeyError("aggregate needs a key; record has none"), self.name)
        partials = (
            frame.filter(pl.col(KEY).is_not_null())
            .group_by(PARTITION, KEY, maintain_order=True)
            .agg(
                pl.col(TOPIC).last(),
                pl.col(OFFSET).max(),
                pl.col(TIMESTAMP).max(),
                *(agg.partial(n) for n, agg in self.aggs.items()),
            )
        )
        outputs = []
        for (partition,), group in partials.group_by(PARTITION, maintain_order=True):
            outputs.append(self._merge_partition(int(partition), group, ctx))
        if not outputs:
            return partials.select(KEY, TOPIC, PARTITION, OFFSET, TIMESTAMP, *self.aggs)
        return pl.concat(outputs)

    def _merge_partition(
        self, partition: int, group: pl.DataFrame, ctx: ProcessingContext
    ) -> pl.DataFrame:
        cache = ctx.state(self.store, partition)
        keys = [k.encode() for k in group.get_column(KEY).to_list()]
        stored = cache.get_many(keys)
        old = np.zeros(len(keys), dtype=self._row_type)
        for name, agg in self.aggs.items():
            old[name] = agg.identity()
        present = np.fromiter((v is not None for v in stored), dtype=bool, count=len(keys))
        if present.any():
            old[present] = np.frombuffer(
                b"".join(v for v in stored if v is not None), dtype=self._row_type
            )
        merged = np.empty(len(keys), dtype=self._row_type)
        for name, agg in self.aggs.items():
            merged[name] = agg.merge(old[name], group.get_column(name).to_numpy())
        raw = merged.tobytes()
        width = self._row_type.itemsize
        cache.put_many(keys, [raw[i * width : (i + 1) * width] for i in range(len(keys))])
        return group.with_columns(
            pl.Series(name, merged[name], dtype=agg.polars_type) for name, agg in self.aggs.items()
        ).select(KEY, TOPIC, PARTITION, OFFSET, TIMESTAMP, *self.aggs)
