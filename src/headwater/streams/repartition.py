"""Repartitioning: after ``key_by``, a stateful operator needs each key in one partition.

The stream is written, keyed by the new key, to an internal topic ``<application_id>-<store>-
repartition`` (Avro with a schema derived from the frame, registered under ``<topic>-value``), and
the stateful operator reads it back as an internal source. The runtime creates the topic at start
(``runtime.topics``: infinite retention; consumed records are deleted after each checkpoint). Record timestamps are kept. Under
exactly-once the repartition records are part of the same transaction as everything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from headwater.errors import HeadwaterError
from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, TIMESTAMP, user_columns

REPARTITION_SUFFIX = "-repartition"


class UnsupportedColumnType(HeadwaterError):
    """A column's Polars type has no Avro counterpart for the repartition topic."""


@dataclass
class Repartition(Operator):
    """Produce every row, keyed by ``_key``, to the internal topic of ``store``."""

    store: str
    name: str = "repartition"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        if frame.height == 0:
            return frame
        body = storable(frame.select(user_columns(frame)))
        schema = json.dumps(avro_schema_of(body.schema, f"Repartition_{_avro_name(self.store)}"))
        topic = ctx.internal_topic(self.store)
        values = ctx.encode_avro(body, f"{topic}-value", schema)
        keys = [None if k is None else k.encode() for k in frame.get_column(KEY).to_list()]
        stamps = frame.get_column(TIMESTAMP).fill_null(0).clip(lower_bound=0).to_list()
        ctx.produce(topic, keys, values, stamps)
        return frame


def storable(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every column (or nested field) of Polars type ``Null`` cast to ``String``:
    a JSON field null in every row of a batch has no type, and Avro needs one. Call it before
    :func:`avro_schema_of` on frames about to be encoded."""
    casts = {c: _typed(d) for c, d in frame.schema.items() if _has_null(d)}
    return frame.cast(casts) if casts else frame  # type: ignore[arg-type]


def _has_null(dtype: pl.DataType) -> bool:
    base = dtype.base_type()
    if base == pl.Null:
        return True
    if base in (pl.List, pl.Array):
        return _has_null(dtype.inner)  # type: ignore[attr-defined]
    if base == pl.Struct:
        return any(_has_null(f.dtype) for f in dtype.fields)  # type: ignore[attr-defined]
    return False


def _typed(dtype: pl.DataType) -> pl.DataType:
    base = dtype.base_type()
    if base == pl.Null:
        return pl.String()
    if base == pl.List:
        return pl.List(_typed(dtype.inner))  # type: ignore[attr-defined]
    if base == pl.Array:
        return pl.Array(_typed(dtype.inner), dtype.size)  # type: ignore[attr-defined]
    if base == pl.Struct:
        return pl.Struct([pl.Field(f.name, _typed(f.dtype)) for f in dtype.fields])  # type: ignore[attr-defined]
    return dtype


def avro_schema_of(schema: pl.Schema, name: str) -> dict[str, Any]:
    """An Avro record schema whose frame layout (docs/serde.md) is ``schema``; all nullable."""
    names = iter(range(1_000_000))
    return _record(schema, name, names)


def _record(fields: Any, name: str, names: Any) -> dict[str, Any]:
    return {
        "type": "record",
        "name": name,
        "fields": [
            {"name": _field_name(col), "type": ["null", _avro_type(dtype, names)], "default": None}
            for col, dtype in fields.items()
        ],
    }


def _avro_type(dtype: pl.DataType, names: Any) -> Any:
    simple = {
        pl.Boolean: "boolean", pl.Int8: "int", pl.Int16: "int", pl.Int32: "int",
        pl.UInt8: "int", pl.UInt16: "int", pl.Int64: "long", pl.UInt32: "long",
        pl.Float32: "float", pl.Float64: "double", pl.String: "string", pl.Binary: "bytes",
    }
    base = dtype.base_type()
    if base in simple:
        return simple[base]
    if base == pl.Datetime:
        unit = "millis" if dtype.time_unit == "ms" else "micros"  # type: ignore[attr-defined]
        logical = f"timestamp-{unit}" if dtype.time_zone else f"local-timestamp-{unit}"  # type: ignore[attr-defined]
        if dtype.time_unit == "ns":  # type: ignore[attr-defined]
            raise UnsupportedColumnType("nanosecond datetimes cannot be repartitioned; cast to us")
        return {"type": "long", "logicalType": logical}
    if base == pl.Date:
        return {"type": "int", "logicalType": "date"}
    if base == pl.List:
        return {"type": "array", "items": ["null", _avro_type(dtype.inner, names)]}  # type: ignore[attr-defined]
    if base == pl.Struct:
        fields = {f.name: f.dtype for f in dtype.fields}  # type: ignore[attr-defined]
        return _record(fields, f"Struct{next(names)}", names)
    if base == pl.Map and dtype.key == pl.String:  # type: ignore[attr-defined]
        return {"type": "map", "values": ["null", _avro_type(dtype.value, names)]}  # type: ignore[attr-defined]
    if base == pl.Enum:
        return {"type": "enum", "name": f"Enum{next(names)}",
                "symbols": list(dtype.categories)}  # type: ignore[attr-defined]
    raise UnsupportedColumnType(f"no Avro type for Polars {dtype} in a repartition topic")


def _field_name(name: str) -> str:
    if _avro_name(name) != name:
        raise UnsupportedColumnType(
            f"column {name!r} is not a valid Avro name; rename it before key_by + a stateful step"
        )
    return name


def _avro_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"_{cleaned}"
