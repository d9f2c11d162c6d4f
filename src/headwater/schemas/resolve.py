"""Vectorized reader-schema resolution: a frame in a writer schema's layout -> the reader's layout.

:func:`resolution_exprs` compiles a (writer, reader) pair once into Polars expressions (added fields
as default literals, removed fields dropped, promotions as casts, enum widening). Pairs whose
resolution depends on the data (a nullable writer field read as non-nullable, enum symbols the
reader lacks without a default) or that the frame cannot express raise :class:`NotVectorizable`;
the decoder then resolves those records one by one with fastavro, which rejects exactly the
records that do not resolve.

:func:`incompatibility` is the schema-level verdict taken before any of that: a writer schema
that can never resolve to the reader (another record type, an incompatible change) is a
``SchemaMismatch`` for every record written with it.
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


def incompatibility(writer: Any, reader: Any) -> str | None:
    """Why records of ``writer`` can never be read as ``reader``; None when the pair resolves.

    The check is per schema, not per datum: a pair that resolves only for some data (a nullable
    writer field read as required, enum symbols the reader lacks without a default, a writer
    union some of whose branches resolve) counts as resolving; those records are resolved, or
    rejected one by one, by the decoder. At the top level the record full names must be equal
    (or the writer's name one of the reader's aliases): another event type never resolves, even
    when its fields happen to fit. Nested named types match by unqualified name, as in Avro.

    Args:
        writer, reader: expanded schemas (``layout.expanded``).
    """
    w, r = _unwrap(writer), _unwrap(reader)
    if type_name(r) not in ("record", "error"):
        return f"the declared schema is a {type_name(r)}, not a record"
    if type_name(w) not in ("record", "error"):
        return f"the writer schema is a {type_name(w)}, not a record"
    wname, rname = _full_name(w), _full_name(r)
    aliases = {_qualify(a, r.get("namespace") or _namespace(rname)) for a in r.get("aliases", ())}
    if wname != rname and wname not in aliases:
        return f"writer record {wname} is not the declared record {rname}"
    return _incompatible(w, r, "")


def _incompatible(w: Any, r: Any, path: str) -> str | None:
    w, r = _unwrap(w), _unwrap(r)
    where = path or "the record"
    if isinstance(r, list):
        branches = w if isinstance(w, list) else [w]
        if any(_incompatible(wb, rb, path) is None for wb in branches for rb in r):
            return None
        return f"{where}: writer {_describe(w)} matches no branch of the reader union {_describe(r)}"
    if isinstance(w, list):
        if any(_incompatible(wb, r, path) is None for wb in w):
            return None
        return f"{where}: no branch of the writer union {_describe(w)} resolves to {_describe(r)}"
    wn, rn = type_name(w), type_name(r)
    if wn in _PHYSICAL and rn in _PHYSICAL:
        if wn == rn or (wn, rn) in _PROMOTIONS:
            return None
        return f"{where}: {wn} does not resolve to {rn}"
    if wn != rn:
        return f"{where}: {wn} does not resolve to {rn}"
    if wn in ("record", "error", "enum", "fixed") and _short(w["name"]) not in _names(r):
        return f"{where}: {wn} {w['name']} does not resolve to {r['name']}"
    if wn == "fixed" and w["size"] != r["size"]:
        return f"{where}: fixed size {w['size']} does not resolve to {r['size']}"
    if wn == "array":
        return _incompatible(w["items"], r["items"], f"{path}[]")
    if wn == "map":
        return _incompatible(w["values"], r["values"], f"{path}{{}}")
    if wn in ("record", "error"):
        by_name = {f["name"]: f for f in w["fields"]}
        for rf in r["fields"]:
            sub = f"{path}.{rf['name']}" if path else rf["name"]
            src = next((by_name[n] for n in (rf["name"], *rf.get("aliases", ())) if n in by_name), None)
            if src is None:
                if "default" not in rf:
                    return f"{sub}: the writer lacks this field and the reader has no default"
                continue
            reason = _incompatible(src["type"], rf["type"], sub)
            if reason is not None:
                return reason
    return None  # enums: unknown symbols are a per-record matter


def _unwrap(s: Any) -> Any:
    while isinstance(s, dict) and isinstance(s.get("type"), (dict, list)):
        s = s["type"]
    return s


def _describe(s: Any) -> str:
    if isinstance(s, list):
        return "[" + ", ".join(_describe(_unwrap(b)) for b in s) + "]"
    name = type_name(s)
    return f"{name} {s['name']}" if isinstance(s, dict) and "name" in s else name


def _namespace(full: str) -> str:
    return full.rpartition(".")[0]


def _qualify(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _full_name(s: dict[str, Any]) -> str:
    return _qualify(s["name"], s.get("namespace"))


def record_name(schema: Any) -> str | None:
    """The full name of a record schema (JSON dict), None when it has none."""
    return _full_name(schema) if isinstance(schema, dict) and "name" in schema else None
