"""Keyed stateful aggregation: per-batch partial aggregates merged into state, vectorized.

A batch is grouped by (input partition, key) in Polars; each group's partial aggregate is merged
with the key's stored aggregate in NumPy. Stored values are fixed-width rows of the aggregate
columns (int64 counts, float64 sums/minima/maxima) behind a versioned header (format
``aggregate rows v1`` + a fingerprint of the aggregate definition, see ``headwater.state.codec``),
so a batch of stored values decodes with one ``np.frombuffer`` instead of one parse per key, and a
store written by another aggregate definition fails clearly instead of being misread.

Nulls: ``count`` counts records (null values included); ``sum`` ignores nulls (a key whose values
were all null sums to 0); ``min``/``max`` ignore nulls and NaN, and are null until the key saw a
non-null value (an all-null batch leaves the stored value unchanged). A NaN in a ``sum`` makes it
NaN (IEEE).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from headwater.errors import HeadwaterError
from headwater.state.codec import AGG_ROWS_V1_ID, RowCodec
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
        """The per-batch, per-key partial (Polars skips nulls: all-null sum 0, min/max null)."""
        if self.kind == "count":
            return pl.len().cast(pl.Int64).alias(alias)
        assert self.expr is not None
        value = self.expr.cast(pl.Float64)
        return getattr(value, self.kind)().alias(alias)

    def merge(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Stored value merged with a batch partial; for min/max NaN (no value) is ignored."""
        if self.kind in ("count", "sum"):
            return old + new
        return np.fmin(old, new) if self.kind == "min" else np.fmax(old, new)

    def identity(self) -> float | int:
        """The value of a key that has seen nothing: 0, or NaN (= null) for min/max."""
        return {"count": 0, "sum": 0.0, "min": np.nan, "max": np.nan}[self.kind]


def count() -> Agg:
    """Number of records per key."""
    return Agg("count")


def sum(expr: pl.Expr | str) -> Agg:  # noqa: A001 - mirrors the Polars/SQL name
    """Sum of an expression per key (as float64)."""
    return Agg("sum", pl.col(expr) if isinstance(expr, str) else expr)


def mean(expr: pl.Expr | str) -> Agg:
    """Mean of an expression per window (as float64; nulls ignored, null when none);
    window aggregates only (keep ``sum`` and ``count`` for a running mean)."""
    return Agg("mean", pl.col(expr) if isinstance(expr, str) else expr)


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
    _codec: RowCodec = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._codec = RowCodec(
            AGG_ROWS_V1_ID,
            [(n, a.numpy_type) for n, a in self.aggs.items()],
            ",".join(f"{n}:{a.kind}" for n, a in self.aggs.items()),
        )

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
        old = self._decode(cache.get_many(keys), partition, keys)
        merged = self._codec.empty(len(keys))
        for name, agg in self.aggs.items():
            merged[name] = agg.merge(old[name], group.get_column(name).to_numpy())
        cache.put_many(keys, self._codec.encode_rows(merged))
        return group.with_columns(
            pl.Series(name, merged[name], dtype=agg.polars_type, nan_to_null=agg.kind in ("min", "max"))
            for name, agg in self.aggs.items()
        ).select(KEY, TOPIC, PARTITION, OFFSET, TIMESTAMP, *self.aggs)

    def _decode(
        self, stored: list[bytes | None], partition: int, keys: list[bytes] | None = None
    ) -> np.ndarray:
        """Stored rows of the keys, identities where a key has no stored value."""
        rows, present = self._codec.decode_rows(
            stored, store=self.store, partition=partition, keys=keys
        )
        if present is None:
            return rows
        old = self._codec.empty(len(stored))
        for name, agg in self.aggs.items():
            old[name] = agg.identity()
        if len(rows):
            old[present] = rows
        return old
