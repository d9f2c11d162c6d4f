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

The running ``aggregate`` supports ``count``, ``sum``, ``min`` and ``max``. The other kinds
(``mean``, ``first``/``last``, ``count_distinct``, ``approx_count_distinct``, ``quantiles``/
``percentile``, ``collect``, ``udf``) are for window aggregates (``.window(...).aggregate``;
see docs/windows.md, "Aggregations"); a running ``aggregate`` declaring one fails when the
topology is built (``TopologyError``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
import polars as pl

from headwater.errors import HeadwaterError
from headwater.state.codec import AGG_ROWS_V1_ID, RowCodec
from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC


class MissingKeyError(HeadwaterError):
    """A record reached a keyed operator without a key (sent to the DLQ)."""


class UdfStateError(HeadwaterError):
    """A user-defined aggregate's accumulator cannot be stored (not JSON-serializable)."""


RUNNING_KINDS = frozenset({"count", "sum", "min", "max"})
"""The kinds a running (non-windowed) ``aggregate`` supports."""


@dataclass(frozen=True)
class Agg:
    """One mergeable aggregate. Build them with the functions of this module (:func:`count`,
    :func:`sum`, :func:`mean`, :func:`min`, :func:`max`, :func:`first`, :func:`last`,
    :func:`count_distinct`, :func:`approx_count_distinct`, :func:`quantiles`,
    :func:`percentile`, :func:`collect`, :func:`udf`)."""

    kind: str
    expr: pl.Expr | None = None
    params: tuple[tuple[str, Any], ...] = ()
    """Kind-specific settings (e.g. ``("lg_k", 12)``); see :meth:`param`."""

    def param(self, name: str) -> Any:
        """The value of setting ``name`` (``KeyError`` when the kind has none)."""
        return dict(self.params)[name]

    @property
    def signature(self) -> str:
        """What the stored state depends on: the kind plus the settings that shape the state
        (fingerprinted into stored values, so a store written with other settings fails
        clearly). Output-only settings (the quantiles asked for) are left out."""
        state = [f"{k}={v}" for k, v in self.params if k in _STATE_PARAMS]
        return f"{self.kind}({','.join(state)})" if state else self.kind

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


_STATE_PARAMS = frozenset({"lg_k", "hll_type", "k", "limit", "keep"})


def _col(expr: pl.Expr | str) -> pl.Expr:
    return pl.col(expr) if isinstance(expr, str) else expr


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


def first(expr: pl.Expr | str) -> Agg:
    """The value (as float64) of the window's record with the smallest event time
    (``_timestamp``), ties broken by the smallest offset; records whose value is null or NaN are
    skipped (null when none has one). Window aggregates only. For a string, use
    ``collect(expr, limit=1)``."""
    return Agg("first", _col(expr))


def last(expr: pl.Expr | str) -> Agg:
    """The value (as float64) of the window's record with the largest event time, ties broken
    by the largest offset; null and NaN values skipped. Window aggregates only. For a string,
    use ``collect(expr, limit=1, keep="last")``."""
    return Agg("last", _col(expr))


def count_distinct(expr: pl.Expr | str) -> Agg:
    """Exact number of distinct non-null values per window (numbers, strings, booleans,
    dates/times; NaN skipped; an integer and the equal float count once).

    State: the window's set as sorted unique 64-bit fingerprints (8 bytes per distinct value):
    integers (and whole floats) map one-to-one, so they never collide; strings (BLAKE2b-64) and
    other floats may, with probability about ``n**2 / 2**65`` for ``n`` distinct values (3e-8
    at a million). Memory grows with the cardinality: above ~10^5 distinct values per window,
    prefer :func:`approx_count_distinct`. Window aggregates only."""
    return Agg("count_distinct", _col(expr))


def approx_count_distinct(expr: pl.Expr | str, lg_k: int = 12,
                          hll_type: Literal["HLL_4", "HLL_6", "HLL_8"] = "HLL_8") -> Agg:
    """Approximate number of distinct non-null values per window: a HyperLogLog sketch from
    Apache DataSketches (``datasketches.hll_sketch``) with ``2**lg_k`` buckets, rounded to an
    integer. Exact while the sketch is in its list/set warm-up (up to roughly ``2**lg_k / 10``
    values, i.e. a few hundred at the default), then a relative standard error of about
    ``1.04 / sqrt(2**lg_k)``: 1.6% for ``lg_k=12`` (the library's a-priori bound: 1.29% for a
    single stream, 1.62% after unions, e.g. merged session windows); 3 standard deviations
    bound 99.7% of estimates. State: at most ``2**lg_k`` bytes (HLL_8; HLL_6 3/4 and HLL_4
    about 1/2 of that, slower) plus a small header; much less for small windows. Strings are
    hashed by the library, other values go in as their :func:`count_distinct` fingerprints (an
    integer and the equal float count once). Deterministic. The binding takes one value per
    call, so each batch's distinct values of a window cost ~0.2 us each in a Python loop.
    Window aggregates only."""
    if not 7 <= lg_k <= 21:
        raise ValueError(f"approx_count_distinct: lg_k must be between 7 and 21, got {lg_k}")
    if hll_type not in ("HLL_4", "HLL_6", "HLL_8"):
        raise ValueError(f"approx_count_distinct: hll_type must be HLL_4, HLL_6 or HLL_8, "
                         f"got {hll_type!r}")
    return Agg("approx_count_distinct", _col(expr), (("lg_k", lg_k), ("hll_type", hll_type)))


def quantiles(expr: pl.Expr | str, qs: Sequence[float] = (0.5, 0.95, 0.99), k: int = 200) -> Agg:
    """Approximate quantiles of the non-null, non-NaN values (as float64) per window: a KLL
    sketch from Apache DataSketches (``datasketches.kll_doubles_sketch``, accuracy ``k``).

    Output: one struct column named after the aggregate with a float64 field per quantile,
    named ``p`` + the percent (``0.5`` -> ``p50``, ``0.999`` -> ``p99.9``); null fields when
    the window saw no value. Quantile ``q`` is the nearest-rank one: the smallest value whose
    rank (share of values at or below it) is at least ``q`` (NumPy's ``inverted_cdf``). Exact
    while the window holds at most ``k`` values; beyond, the rank of the returned value is
    within the normalized rank error of ``q``: 1.33% for ``k=200`` (1.65% for the two-sided
    PMF bound), both at 99% confidence (the library's
    ``kll_doubles_sketch.get_normalized_rank_error``). KLL compacts at random, so beyond ``k``
    values two runs may differ (within that error). State: ~8 bytes per value up to ``k``,
    then a few KB (about 3-5 KB at ``k=200``). Window aggregates only."""
    qs = tuple(float(q) for q in qs)
    if not qs or not all(0.0 <= q <= 1.0 for q in qs):
        raise ValueError(f"quantiles: qs must be non-empty, each within [0, 1], got {qs}")
    if not 8 <= k <= 65535:
        raise ValueError(f"quantiles: k must be between 8 and 65535, got {k}")
    return Agg("quantiles", _col(expr), (("qs", qs), ("k", k)))


def percentile(expr: pl.Expr | str, q: float, k: int = 200) -> Agg:
    """One approximate quantile ``q`` (e.g. ``0.99``) per window as a float64 column; the same
    sketch, error and state as :func:`quantiles`."""
    agg = quantiles(expr, (q,), k)
    return Agg("quantiles", agg.expr, agg.params + (("single", True),))


def collect(expr: pl.Expr | str, limit: int = 100,
            keep: Literal["first", "last"] = "first") -> Agg:
    """The window's non-null values as a list, ordered by event time then offset, bounded to
    the first (``keep="first"``) or last (``keep="last"``) ``limit`` of them in that order;
    deterministic whatever the batch cuts. Numbers and booleans are kept as float64, other
    values as strings (a NaN shows as null). Output: a list column. State: 16 bytes (time,
    offset) per kept value plus the values as JSON. Window aggregates only."""
    if limit < 1:
        raise ValueError(f"collect: limit must be positive, got {limit}")
    if keep not in ("first", "last"):
        raise ValueError(f"collect: keep must be 'first' or 'last', got {keep!r}")
    return Agg("collect", _col(expr), (("limit", limit), ("keep", keep)))


def udf(initializer: Callable[[], Any], accumulate: Callable[[Any, pl.DataFrame], Any],
        merge: Callable[[Any, Any], Any], result: Callable[[Any], Any] = lambda acc: acc, *,
        columns: Sequence[str] | None = None) -> Agg:
    """A user-defined aggregate: the escape hatch, and the slow path (Python per window and
    batch, state as JSON).

    - ``initializer()`` gives the accumulator of an empty window;
    - ``accumulate(acc, rows)`` folds one batch's records of the window into it (``rows``: a
      Polars frame of ``columns``, default every column of the records but the grouping keys
      (``_key``, ``_partition``, the window bounds), ordered by event time then offset);
    - ``merge(a, b)`` combines two accumulators (session windows merge sessions);
    - ``result(acc)`` gives the output value (default: the accumulator itself).

    Accumulators are stored as JSON (orjson): dicts with string keys, lists, strings, numbers,
    booleans, ``None`` (a tuple comes back as a list). ``initializer()`` is checked when the
    aggregate is defined; an accumulator that cannot be stored raises :class:`UdfStateError`
    at the batch that produced it (handled by the operator's error policy). Window aggregates
    only.

    Raises:
        UdfStateError: ``initializer()`` does not give a JSON-serializable value.
    """
    try:
        orjson.dumps(initializer())
    except TypeError as exc:
        raise UdfStateError(f"udf: initializer() must return a JSON-serializable value "
                            f"(dict, list, str, number, bool, None): {exc}") from exc
    return Agg("udf", None, (("initializer", initializer), ("accumulate", accumulate),
                             ("merge", merge), ("result", result),
                             ("columns", tuple(columns) if columns is not None else None)))


@dataclass
class Aggregate(Operator):
    """Merge each key's batch partials into its running aggregate; emit the updated rows.

    Supports the kinds in :data:`RUNNING_KINDS` (count, sum, min, max); the others are for
    window aggregates and are rejected when the topology is built.

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
