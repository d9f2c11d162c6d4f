"""Variable-length window accumulators: exact distinct sets, HyperLogLog and KLL sketches
(Apache DataSketches), bounded lists and user-defined accumulators.

Each keeps one ``bytes`` value per window (``b""``: the window saw nothing) next to the
fixed-width row of :mod:`headwater.streams.accumulators`. Partials are still computed per group
of a batch in Polars (the group's unique values, or its values, as a list); the merge into the
stored value runs once per (window, batch), never per record, except where the library takes
one value per call (HLL, see :class:`_Hll`).

Values of the distinct counts are reduced to 64-bit fingerprints (:func:`fingerprints`) so
that sets are NumPy ``uint64`` arrays (union: ``np.union1d``) and the HLL sees one stable hash
input per value.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable
from typing import Any

import datasketches as ds
import numpy as np
import orjson
import polars as pl

from headwater.streams.aggregate import Agg, UdfStateError
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP

VAR_KINDS = frozenset({"count_distinct", "approx_count_distinct", "quantiles", "collect", "udf"})
"""The aggregate kinds kept as variable-length state."""

_U64 = np.dtype("<u8")
_FLOAT_SALT = np.uint64(0x5BD1E9955BD1E995)
_COUNT = struct.Struct("<I")


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijection of uint64 (so distinct inputs stay distinct)."""
    x = x.astype(np.uint64, copy=True)
    x += np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def fingerprints(values: pl.Series) -> np.ndarray:
    """One stable 64-bit fingerprint per value (``uint64``): integers, booleans and temporals
    through a bijection of their int64 value, whole floats like the equal integer, other floats
    through a bijection of their bits (salted), strings by BLAKE2b-64 of their UTF-8. Stable
    across processes and versions (unlike ``pl.Series.hash``).

    Raises:
        TypeError: values of another type (lists, structs, binary...).
    """
    dtype = values.dtype
    if not len(values):
        return np.empty(0, np.uint64)
    if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
        digest = hashlib.blake2b
        return np.fromiter(
            (int.from_bytes(digest(s.encode(), digest_size=8).digest(), "little")
             for s in values.cast(pl.String).to_list()), dtype=np.uint64, count=len(values))
    if dtype == pl.Boolean:
        values = values.cast(pl.Int64)
    elif dtype.is_temporal():
        values = values.to_physical()
    if values.dtype.is_integer():
        return _mix(values.to_numpy().astype(np.int64, copy=False).view(np.uint64))
    if values.dtype.is_float():
        f = values.cast(pl.Float64).to_numpy()
        whole = (f == np.trunc(f)) & (np.abs(f) < 2.0**63)
        out = _mix(f.view(np.uint64) ^ _FLOAT_SALT)
        out[whole] = _mix(f[whole].astype(np.int64).view(np.uint64))
        return out
    raise TypeError(f"distinct counts take numbers, strings, booleans or dates/times, "
                    f"not {dtype}")


def _flat(lists: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """The values of a list column (without nulls inside) and each row's bounds (n + 1)."""
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = lists.explode()
    if len(flat) != int(lengths.sum()):  # empty lists explode to a null on some versions
        flat = flat.drop_nulls()
    return flat, np.concatenate([[0], np.cumsum(lengths)])


def _without_nan(lists: pl.Series) -> pl.Series:
    """A list column without its NaN values (unchanged unless the values are floats)."""
    if lists.dtype.inner.is_float():  # type: ignore[attr-defined]
        return lists.list.eval(pl.element().filter(pl.element().is_not_nan()))
    return lists


class VarAccumulator:
    """One variable-length aggregate: its partials, and how its bytes fold, merge and show."""

    def __init__(self, name: str, agg: Agg) -> None:
        self.name, self.agg = name, agg
        self.partials: list[pl.Expr] = []

    def fold(self, old: list[bytes], partials: pl.DataFrame) -> list[bytes]:
        """Each stored value merged with its row of the batch partials."""
        raise NotImplementedError

    def merge(self, values: list[bytes]) -> bytes:
        """Several stored values (non-empty) merged into one."""
        raise NotImplementedError

    def column(self, values: list[bytes]) -> pl.Series:
        """The output column."""
        raise NotImplementedError

    def reduce(self, values: list[bytes], groups: np.ndarray, n: int) -> list[bytes]:
        """One value per group ``0..n-1``: the merge of the ``values`` of that group."""
        out = [b""] * n
        if not len(groups):
            return out
        order = np.argsort(groups, kind="stable")
        g = groups[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(g)], strict=True):
            parts = [values[i] for i in order[a:b].tolist() if values[i]]
            if parts:
                out[int(g[a])] = parts[0] if len(parts) == 1 else self.merge(parts)
        return out


class _Distinct(VarAccumulator):
    """Exact: the sorted unique fingerprints of the window's values."""

    def __init__(self, name: str, agg: Agg) -> None:
        super().__init__(name, agg)
        self.col = f"{name}.values"
        self.partials = [agg.expr.drop_nulls().unique().alias(self.col)]  # type: ignore[union-attr]

    def _fingerprints(self, partials: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        flat, bounds = _flat(_without_nan(partials.get_column(self.col)))
        try:
            return fingerprints(flat), bounds
        except TypeError as exc:
            raise TypeError(f"{self.agg.kind} {self.name!r}: {exc}") from None

    def fold(self, old: list[bytes], partials: pl.DataFrame) -> list[bytes]:
        fps, bounds = self._fingerprints(partials)
        out = []
        for i, before in enumerate(old):
            new = fps[bounds[i]:bounds[i + 1]]
            if before:
                new = np.union1d(np.frombuffer(before, _U64), new)
            elif len(new) > 1:
                new = np.unique(new)
            out.append(new.astype(_U64, copy=False).tobytes())
        return out

    def merge(self, values: list[bytes]) -> bytes:
        return np.unique(np.concatenate([np.frombuffer(v, _U64) for v in values])).tobytes()

    def column(self, values: list[bytes]) -> pl.Series:
        return pl.Series(self.name, [len(v) // 8 for v in values], pl.Int64)


class _Hll(_Distinct):
    """HyperLogLog (``datasketches.hll_sketch``), compact serialization.

    The binding's ``update`` takes one value per call (no array overload in 5.2.0), so the
    batch's unique values of a window are fed in a Python loop (~0.2 us per distinct value per
    (window, batch), measured; merges and estimates are native). Strings go in as they are,
    other values as their fingerprints, so an integer and the equal float count once."""

    def __init__(self, name: str, agg: Agg) -> None:
        super().__init__(name, agg)
        self.lg_k = int(agg.param("lg_k"))
        self.type = getattr(ds.tgt_hll_type, agg.param("hll_type"))

    def _inputs(self, partials: pl.DataFrame) -> tuple[list[Any], np.ndarray]:
        """What the sketch is fed: strings as they are (the library hashes their UTF-8 with
        MurmurHash3), other values as their fingerprints (int64)."""
        flat, bounds = _flat(_without_nan(partials.get_column(self.col)))
        if flat.dtype == pl.String or isinstance(flat.dtype, (pl.Categorical, pl.Enum)):
            return flat.cast(pl.String).to_list(), bounds
        fps, bounds = self._fingerprints(partials)
        return fps.view(np.int64).tolist(), bounds

    def fold(self, old: list[bytes], partials: pl.DataFrame) -> list[bytes]:
        ints, bounds = self._inputs(partials)
        out = []
        for i, before in enumerate(old):
            sketch = (ds.hll_sketch.deserialize(before) if before
                      else ds.hll_sketch(self.lg_k, self.type))
            update = sketch.update
            for v in ints[bounds[i]:bounds[i + 1]]:
                update(v)
            out.append(sketch.serialize_compact() if not sketch.is_empty() else b"")
        return out

    def merge(self, values: list[bytes]) -> bytes:
        union = ds.hll_union(self.lg_k)
        for v in values:
            union.update(ds.hll_sketch.deserialize(v))
        return union.get_result(self.type).serialize_compact()

    def column(self, values: list[bytes]) -> pl.Series:
        return pl.Series(self.name, [round(ds.hll_sketch.deserialize(v).get_estimate()) if v
                                     else 0 for v in values], pl.Int64)


class _Kll(VarAccumulator):
    """KLL quantiles (``datasketches.kll_doubles_sketch``), updated from NumPy per window."""

    def __init__(self, name: str, agg: Agg) -> None:
        super().__init__(name, agg)
        self.col = f"{name}.values"
        self.k = int(agg.param("k"))
        self.qs = list(agg.param("qs"))
        self.single = dict(agg.params).get("single", False)
        self.fields = [f"p{q * 100:.10g}" for q in self.qs]
        self.partials = [agg.expr.cast(pl.Float64).drop_nulls()  # type: ignore[union-attr]
                         .alias(self.col)]

    def fold(self, old: list[bytes], partials: pl.DataFrame) -> list[bytes]:
        flat, bounds = _flat(partials.get_column(self.col))
        values = np.array(flat.to_numpy(), dtype=np.float64)  # writable: the binding needs it
        out = []
        for i, before in enumerate(old):
            chunk = values[bounds[i]:bounds[i + 1]]
            if not before and not len(chunk):
                out.append(b"")
                continue
            sketch = (ds.kll_doubles_sketch.deserialize(before) if before
                      else ds.kll_doubles_sketch(self.k))
            if len(chunk):
                sketch.update(chunk)  # NaN is skipped by the sketch
            out.append(b"" if sketch.is_empty() else sketch.serialize())
        return out

    def merge(self, values: list[bytes]) -> bytes:
        sketch = ds.kll_doubles_sketch.deserialize(values[0])
        for v in values[1:]:
            sketch.merge(ds.kll_doubles_sketch.deserialize(v))
        return sketch.serialize()

    def column(self, values: list[bytes]) -> pl.Series:
        none = [None] * len(self.qs)
        rows = [ds.kll_doubles_sketch.deserialize(v).get_quantiles(self.qs, True) if v else none
                for v in values]
        if self.single:
            return pl.Series(self.name, [r[0] for r in rows], pl.Float64)
        return pl.DataFrame(rows, schema={f: pl.Float64 for f in self.fields},
                            orient="row").to_struct(self.name)


class _Collect(VarAccumulator):
    """The first/last ``limit`` values by (event time, offset): ``count (u32) + times (i8) +
    offsets (i8) + JSON list of the values`` (a NaN is kept, and shows as null: JSON has no
    NaN)."""

    def __init__(self, name: str, agg: Agg) -> None:
        super().__init__(name, agg)
        self.limit = int(agg.param("limit"))
        self.last = agg.param("keep") == "last"
        value = agg.expr  # type: ignore[union-attr]
        valid = value.is_not_null()
        order = [pl.col(TIMESTAMP).filter(valid), pl.col(OFFSET).filter(valid)]

        def kept(e: pl.Expr) -> pl.Expr:
            ordered = e.filter(valid).sort_by(order)
            return ordered.tail(self.limit) if self.last else ordered.head(self.limit)

        self.v, self.t, self.o = f"{name}.values", f"{name}.times", f"{name}.offsets"
        self.partials = [kept(value).alias(self.v), kept(pl.col(TIMESTAMP)).alias(self.t),
                         kept(pl.col(OFFSET)).alias(self.o)]

    @staticmethod
    def _decode(value: bytes) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        (n,) = _COUNT.unpack_from(value, 0)
        times = np.frombuffer(value, "<i8", n, 4)
        offsets = np.frombuffer(value, "<i8", n, 4 + 8 * n)
        return times, offsets, orjson.loads(value[4 + 16 * n:])

    def _keep(self, times: np.ndarray, offsets: np.ndarray, values: list[Any]) -> bytes:
        order = np.lexsort((offsets, times))
        order = order[-self.limit:] if self.last else order[:self.limit]
        return (_COUNT.pack(len(order)) + times[order].astype("<i8").tobytes()
                + offsets[order].astype("<i8").tobytes()
                + orjson.dumps([values[i] for i in order.tolist()]))

    def fold(self, old: list[bytes], partials: pl.DataFrame) -> list[bytes]:
        lists = partials.get_column(self.v)
        inner = lists.dtype.inner  # type: ignore[attr-defined]
        target = pl.Float64 if (inner.is_numeric() or inner == pl.Boolean) else pl.String
        flat, bounds = _flat(lists.cast(pl.List(target)))
        values = flat.to_list()
        times = _flat(partials.get_column(self.t))[0].to_numpy()
        offsets = _flat(partials.get_column(self.o))[0].to_numpy()
        out = []
        for i, before in enumerate(old):
            a, b = bounds[i], bounds[i + 1]
            t, o, v = times[a:b], offsets[a:b], values[a:b]
            if before:
                t0, o0, v0 = self._decode(before)
                t, o, v = np.concatenate([t0, t]), np.concatenate([o0, o]), v0 + v
            out.append(self._keep(t, o, v) if len(v) or before else b"")
        return out

    def merge(self, values: list[bytes]) -> bytes:
        parts = [self._decode(v) for v in values]
        return self._keep(np.concatenate([p[0] for p in parts]),
                          np.concatenate([p[1] for p in parts]),
                          [x for p in parts for x in p[2]])

    def column(self, values: list[bytes]) -> pl.Series:
        lists = [self._decode(v)[2] if v else [] for v in values]
        series = pl.Series(self.name, lists, strict=False)
        if series.dtype == pl.Null:
            series = series.cast(pl.List(pl.Null))
        return series  # all empty: List(Null), which concatenates with any list type


class _Udf(VarAccumulator):
    """User-defined: ``initializer``, ``accumulate(acc, rows)``, ``merge``, ``result``; the
    accumulator stored as orjson."""

    def __init__(self, name: str, agg: Agg) -> None:
        super().__init__(name, agg)
        self.init: Callable[[], Any] = agg.param("initializer")
        self.accumulate: Callable[[Any, pl.DataFrame], Any] = agg.param("accumulate")
        self.combine: Callable[[Any, Any], Any] = agg.param("merge")
        self.result: Callable[[Any], Any] = agg.param("result")
        columns = agg.param("columns")
        self.col = f"{name}.rows"
        grouping = ["^__.*$", KEY, PARTITION, "window_start", "window_end"]  # same for every window
        rows = pl.struct(*columns) if columns else pl.struct(pl.all().exclude(grouping))
        self.partials = [rows.sort_by([pl.col(TIMESTAMP), pl.col(OFFSET)]).alias(self.col)]

    def _dump(self, acc: Any) -> bytes:
        try:
            return orjson.dumps(acc)
        except TypeError as exc:
            raise UdfStateError(
                f"udf {self.name!r}: its accumulator ({type(acc).__name__}) cannot be stored as "
                f"JSON: {exc}; keep it to dicts with string keys, lists, strings, numbers, "
                "booleans and None") from None

    def fold(self, old: list[bytes], partials: pl.DataFrame) -> list[bytes]:
        flat, bounds = _flat(partials.get_column(self.col))
        records = flat.struct.unnest()
        out = []
        for i, before in enumerate(old):
            acc = orjson.loads(before) if before else self.init()
            rows = records.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))
            out.append(self._dump(self.accumulate(acc, rows)))
        return out

    def merge(self, values: list[bytes]) -> bytes:
        return self._dump(functools.reduce(self.combine, (orjson.loads(v) for v in values)))

    def column(self, values: list[bytes]) -> pl.Series:
        return pl.Series(self.name, [self.result(orjson.loads(v) if v else self.init())
                                     for v in values], strict=False)


def var_accumulator(name: str, agg: Agg) -> VarAccumulator:
    """The variable-length accumulator of ``agg`` (a kind in :data:`VAR_KINDS`)."""
    kinds: dict[str, type[VarAccumulator]] = {
        "count_distinct": _Distinct, "approx_count_distinct": _Hll, "quantiles": _Kll,
        "collect": _Collect, "udf": _Udf}
    return kinds[agg.kind](name, agg)
