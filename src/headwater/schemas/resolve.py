"""Vectorized reader-schema resolution: a frame in a writer schema's layout -> the reader's layout.

:func:`resolution_exprs` compiles a (writer, reader) pair once into Polars expressions (added fields
as default literals, removed fields dropped, promotions as casts, enum widening). Pairs whose
resolution depends on the data (a nullable writer field read as non-nullable, enum symbols the
reader lacks without a default) or that the frame cannot express raise :class:`NotVectorizable`;
the decoder then resolves those records one by one with fastavro, which rejects exactly the
records that do not resolve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from headwater.schemas.layout import (
    NoFrameLayout,
    default_value,
    frame_dtype,
    logical,
    nullable_branch,
    type_name,
)

_PROMOTIONS = {
    ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
    ("float", "double"), ("string", "bytes"), ("bytes", "string"),
}
_PHYSICAL = {"int": pl.Int32(), "long": pl.Int64(), "float": pl.Float32(), "double": pl.Float64(),
             "string": pl.String(), "bytes": pl.Binary(), "boolean": pl.Boolean(), "null": pl.Null()}
_RAW_LOGICAL = {None, "uuid", "timestamp-millis", "timestamp-micros", "local-timestamp-millis",
                "local-timestamp-micros", "date"}


class NotVectorizable(Exception):
    """This (writer, reader) pair must be resolved record by record."""


def resolution_exprs(writer: Any, reader: Any) -> list[pl.Expr] | None:
    """Expressions selecting the reader layout from a frame in the writer layout.

    Args:
        writer, reader: expanded record schemas (``layout.expanded``).

    Returns:
        None when the layouts are identical (nothing to do), else one expression per reader field.

    Raises:
        NotVectorizable: see the module docstring.
    """
    if writer == reader:
        return None
    exprs, same = _fields(writer, reader, pl.col)
    return None if same else exprs


def _fields(w: Any, r: Any, base: Callable[[str], pl.Expr]) -> tuple[list[pl.Expr], bool]:
    if type_name(w) not in ("record", "error") or _short(w["name"]) not in _names(r):
        raise NotVectorizable(f"record {w.get('name')} does not resolve to {r.get('name')}")
    by_name = {f["name"]: f for f in w["fields"]}
    exprs: list[pl.Expr] = []
    same = [f["name"] for f in w["fields"]] == [f["name"] for f in r["fields"]]
    for rf in r["fields"]:
        src = next((by_name[n] for n in (rf["name"], *rf.get("aliases", ())) if n in by_name), None)
        if src is None:
            if "default" not in rf:
                raise NotVectorizable(f"reader field {rf['name']} has no default")
            value = default_value(rf["type"], rf["default"])
            lit = pl.lit(pl.Series(rf["name"], [value], dtype=frame_dtype(rf["type"]))).first()
            exprs.append(lit.alias(rf["name"]))
            same = False
            continue
        resolved = _resolve(base(src["name"]), src["type"], rf["type"])
        same = same and resolved is None
        exprs.append((base(src["name"]) if resolved is None else resolved).alias(rf["name"]))
    return exprs, same


def _resolve(e: pl.Expr, w: Any, r: Any) -> pl.Expr | None:
    if w == r:
        return None
    wn, rn = type_name(w), type_name(r)
    try:
        if rn == "union":
            rb = nullable_branch(r)
            if wn == "union":
                return _resolve(e, nullable_branch(w), rb)
            if wn == "null":
                return pl.lit(None, dtype=frame_dtype(rb))
            return _resolve(e, w, rb)
        if wn == "union":
            raise NotVectorizable("a nullable writer field read as non-nullable")
    except NoFrameLayout as err:
        raise NotVectorizable(str(err)) from err
    if rn in ("record", "error"):
        fields, same = _fields(_node(w), _node(r), e.struct.field)
        return None if same else pl.when(e.is_null()).then(None).otherwise(pl.struct(fields))
    if rn == "array" and wn == "array":
        sub = _resolve(pl.element(), _node(w)["items"], _node(r)["items"])
        return None if sub is None else e.list.eval(sub)
    if rn == "map" and wn == "map":
        wv, rv = _node(w)["values"], _node(r)["values"]
        if _resolve(pl.element(), wv, rv) is None:
            return None
        if type_name(rv) in _PHYSICAL and type_name(wv) in _PHYSICAL and not logical(wv) and not logical(rv):
            return e.cast(pl.Map(pl.String(), frame_dtype(rv)))
        raise NotVectorizable("map values other than primitives change type")
    if rn == "enum" and wn == "enum":
        return _enum(e, _node(w), _node(r))
    if rn == "fixed" and wn == "fixed":
        if _node(w)["size"] != _node(r)["size"] or _short(_node(w)["name"]) not in _names(_node(r)):
            raise NotVectorizable("fixed types differ")
        return None
    return _primitive(e, w, r, wn, rn)


def _enum(e: pl.Expr, w: Any, r: Any) -> pl.Expr | None:
    if _short(w["name"]) not in _names(r):
        raise NotVectorizable("enum names differ")
    ws, rs = w["symbols"], r["symbols"]
    if ws == rs:
        return None
    text = e.cast(pl.String)
    if set(ws) <= set(rs):
        return text.cast(pl.Enum(rs))
    if "default" not in r:
        raise NotVectorizable("writer enum symbols the reader lacks, without a reader default")
    return pl.when(text.is_in(rs) | text.is_null()).then(text).otherwise(pl.lit(r["default"])).cast(pl.Enum(rs))


def _primitive(e: pl.Expr, w: Any, r: Any, wn: str, rn: str) -> pl.Expr | None:
    if wn not in _PHYSICAL or rn not in _PHYSICAL or (wn != rn and (wn, rn) not in _PROMOTIONS):
        raise NotVectorizable(f"{wn} does not resolve to {rn}")
    wl, rl = logical(w), logical(r)
    if wl not in _RAW_LOGICAL or rl not in _RAW_LOGICAL:
        raise NotVectorizable(f"logical types {wl} -> {rl}")
    target = frame_dtype(r)
    if wn == rn and frame_dtype(w) == target:
        return None
    raw = e.to_physical() if wl not in (None, "uuid") else e
    return raw.cast(_PHYSICAL[rn]).cast(target)


def _node(s: Any) -> Any:
    return s["type"] if isinstance(s, dict) and isinstance(s["type"], dict) else s


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _names(r: Any) -> set[str]:
    return {_short(r["name"]), *(_short(a) for a in r.get("aliases", ()))}
