"""The frame layout of Avro records (docs/serde.md section 1) and Avro-schema walking helpers.

``frame_schema(avro_schema)`` is the contract between the decoder (its output) and the columnar
encoder (its input). Helpers here work on *expanded* schemas (``fastavro.schema.expand_schema``:
every named type inlined, names fully qualified).
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import polars as pl
from fastavro.schema import expand_schema

from headwater.schemas.registry import AvroSchema, schema_json

_PRIMITIVE: dict[str, pl.DataType] = {
    "null": pl.Null(), "boolean": pl.Boolean(), "int": pl.Int32(), "long": pl.Int64(),
    "float": pl.Float32(), "double": pl.Float64(), "bytes": pl.Binary(), "string": pl.String(),
}
PRIMITIVE_TYPES = frozenset(_PRIMITIVE)
"""The names of Avro's primitive types."""
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class NoFrameLayout(ValueError):
    """The schema has no column layout (a union of several non-null branches, a non-record root)."""


def expanded(schema: AvroSchema) -> Any:
    """``schema`` with every named type reference inlined (a new object)."""
    return expand_schema(schema_json(schema))


def type_name(s: Any) -> str:
    """The Avro type name of an expanded schema node (``"union"`` for lists)."""
    if isinstance(s, list):
        return "union"
    return s if isinstance(s, str) else type_name(s["type"]) if isinstance(s["type"], (dict, list)) else s["type"]


def logical(s: Any) -> str | None:
    """The logical type of an expanded schema node, if any."""
    return s.get("logicalType") if isinstance(s, dict) else None


def nullable_branch(s: list[Any]) -> Any:
    """The non-null branch of a ``["null", T]`` / ``[T, "null"]`` union.

    Raises:
        NoFrameLayout: the union has several non-null branches.
    """
    other = [b for b in s if b != "null"]
    if len(other) != 1:
        raise NoFrameLayout(f"union {[type_name(b) for b in s]} has several non-null branches")
    return other[0]


def frame_dtype(s: Any) -> pl.DataType:
    """The Polars dtype of an expanded Avro schema node (see docs/serde.md section 1)."""
    if isinstance(s, list):
        return frame_dtype(nullable_branch(s)) if any(b != "null" for b in s) else pl.Null()
    if isinstance(s, str):
        return _PRIMITIVE[s]
    if isinstance(s["type"], (dict, list)):
        return frame_dtype(s["type"])
    t, lt = s["type"], s.get("logicalType")
    if t == "long" and lt in ("timestamp-millis", "timestamp-micros"):
        return pl.Datetime("ms" if lt == "timestamp-millis" else "us", "UTC")
    if t == "long" and lt in ("local-timestamp-millis", "local-timestamp-micros"):
        return pl.Datetime("ms" if lt == "local-timestamp-millis" else "us")
    if t == "int" and lt == "date":
        return pl.Date()
    if (t, lt) in (("int", "time-millis"), ("long", "time-micros")):
        return pl.Time()
    if t in ("bytes", "fixed") and lt == "decimal":
        return pl.Decimal(s["precision"], s.get("scale", 0))
    if t in ("record", "error"):
        return pl.Struct({f["name"]: frame_dtype(f["type"]) for f in s["fields"]})
    if t == "enum":
        return pl.Enum(s["symbols"])
    if t == "fixed":
        return pl.Binary()
    if t == "array":
        return pl.List(frame_dtype(s["items"]))
    if t == "map":
        return pl.Map(pl.String(), frame_dtype(s["values"]))
    return _PRIMITIVE[t]


def frame_schema(schema: AvroSchema) -> pl.Schema:
    """The Polars schema of a frame of records of the Avro record ``schema``.

    Raises:
        NoFrameLayout: the schema is not a record or contains a union with several non-null
            branches.
    """
    root = expanded(schema)
    if type_name(root) not in ("record", "error"):
        raise NoFrameLayout(f"top-level schema is a {type_name(root)}, not a record")
    return pl.Schema({f["name"]: frame_dtype(f["type"]) for f in root["fields"]})


def strip_uuid(schema: Any) -> Any:
    """A copy of a (not expanded) schema with ``logicalType: uuid`` removed: uuids stay text."""
    if isinstance(schema, list):
        return [strip_uuid(b) for b in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strip_uuid(v) if k in ("type", "items", "values") else v
           for k, v in schema.items() if not (k == "logicalType" and v == "uuid")}
    if isinstance(schema.get("fields"), list):
        out["fields"] = [{**f, "type": strip_uuid(f["type"])} for f in schema["fields"]]
    if len(out) == 1 and "type" in out and isinstance(out["type"], str):
        return out["type"]
    return out


def zero_datum(s: Any) -> bytes:
    """The shortest valid Avro encoding of a value of the expanded schema node ``s``."""
    if isinstance(s, list):
        return b"\x00" + zero_datum(s[0])
    if isinstance(s, str):
        return {"null": b"", "float": b"\x00" * 4, "double": b"\x00" * 8}.get(s, b"\x00")
    if isinstance(s["type"], (dict, list)):
        return zero_datum(s["type"])
    t = s["type"]
    if t in ("record", "error"):
        return b"".join(zero_datum(f["type"]) for f in s["fields"])
    if t == "fixed":
        return b"\x00" * s["size"]
    if t == "bytes" and s.get("logicalType") == "decimal":
        return b"\x02\x00"
    return zero_datum(t)


def default_value(s: Any, value: Any) -> Any:
    """The frame-ready Python value of an Avro JSON ``default`` for the expanded node ``s``."""
    if isinstance(s, list):
        return None if value is None else default_value(s[0], value)
    if isinstance(s, str):
        s = {"type": s}
    if isinstance(s["type"], (dict, list)):
        return default_value(s["type"], value)
    t, lt = s["type"], s.get("logicalType")
    if t in ("record", "error"):
        return {f["name"]: default_value(f["type"], value.get(f["name"], f.get("default")))
                for f in s["fields"]}
    if t == "array":
        return [default_value(s["items"], v) for v in value]
    if t == "map":
        return {k: default_value(s["values"], v) for k, v in value.items()}
    if t in ("bytes", "fixed"):
        raw = value.encode("latin-1")
        if lt == "decimal":
            return decimal.Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-s.get("scale", 0))
        return raw
    if t in ("float", "double"):
        return float(value)
    if t == "long" and lt and "timestamp" in lt:
        step = dt.timedelta(milliseconds=value) if lt.endswith("millis") else dt.timedelta(microseconds=value)
        return _EPOCH + step if not lt.startswith("local") else _EPOCH.replace(tzinfo=None) + step
    if t == "int" and lt == "date":
        return dt.date(1970, 1, 1) + dt.timedelta(days=value)
    if lt in ("time-millis", "time-micros"):
        us = value * 1000 if lt == "time-millis" else value
        return (dt.datetime.min + dt.timedelta(microseconds=us)).time()
    return value
