"""Compiling an Avro schema and a frame's Arrow types into a tree of encoder nodes (once per layout).

Schema/column mismatches raise :class:`UnsupportedSchema` here, before any row is encoded. Named
types are resolved against the writer schema as written (not expanded), so that a missing field's
default can be encoded by fastavro itself with the schema's own named types.
"""

from __future__ import annotations

import io
from typing import Any, Callable

import fastavro
import numpy as np
import pyarrow as pa

from headwater.schemas.columnar_encode.errors import UnencodableValue, UnsupportedSchema
from headwater.schemas.columnar_encode.kernels import I64, fixed_view
from headwater.schemas.columnar_encode.nodes import (
    Bool,
    Bytes,
    Const,
    Decimal,
    Enum,
    Float,
    Long,
    Node,
    UuidFromBinary,
)
from headwater.schemas.columnar_encode.structure import Array, MapEntry, Record, Union
from headwater.schemas.layout import PRIMITIVE_TYPES, type_name


class Names(dict):
    """Full name -> definition of every named type in the writer schema ``root``."""

    def __init__(self, root: dict[str, Any]) -> None:
        super().__init__()
        self.root = root
        self._fastavro_named: dict[str, Any] | None = None
        _collect_names(root, None, self)

    def default_bytes(self, field: dict[str, Any], namespace: str | None) -> bytes:
        """fastavro's encoding of a field's default: exact by construction, computed once."""
        if self._fastavro_named is None:
            self._fastavro_named = {}
            fastavro.parse_schema(self.root, named_schemas=self._fastavro_named)
        wrapper = {"type": "record", "name": "_hw_default", "fields": [field]}
        if namespace:
            wrapper["namespace"] = namespace
        parsed = fastavro.parse_schema(wrapper, named_schemas=dict(self._fastavro_named))
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, {})
        return buf.getvalue()


def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect_names(schema: Any, namespace: str | None, names: Names) -> None:
    if isinstance(schema, list):
        for s in schema:
            _collect_names(s, namespace, names)
        return
    if not isinstance(schema, dict):
        return
    t = schema.get("type")
    if t in ("record", "error", "enum", "fixed"):
        full = _fullname(schema["name"], schema.get("namespace", namespace))
        names[full] = schema
        ns = full.rpartition(".")[0] or None
        for f in schema.get("fields", ()):
            _collect_names(f["type"], ns, names)
    elif t == "array":
        _collect_names(schema["items"], namespace, names)
    elif t == "map":
        _collect_names(schema["values"], namespace, names)
    elif isinstance(t, (dict, list)):
        _collect_names(t, namespace, names)


def _resolve(schema: Any, names: Names, namespace: str | None, path: str) -> tuple[Any, str | None]:
    """Named references -> their definition; returns (schema, namespace for nested names)."""
    if isinstance(schema, str):
        if schema in PRIMITIVE_TYPES:
            return schema, namespace
        for key in (_fullname(schema, namespace), schema):
            if key in names:
                return names[key], key.rpartition(".")[0] or None
        raise UnsupportedSchema(path, f"unknown named type {schema!r}")
    if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)) and "logicalType" not in schema:
        return _resolve(schema["type"], names, namespace, path)
    if isinstance(schema, dict) and schema.get("type") in ("record", "error", "enum", "fixed"):
        full = _fullname(schema["name"], schema.get("namespace", namespace))
        return schema, full.rpartition(".")[0] or None
    return schema, namespace


def compile_record(schema: dict[str, Any], arrow_type: pa.DataType, names: Names, path: str,
                   namespace: str | None = None) -> Record:
    """The node of a record whose fields are taken from the struct columns of ``arrow_type``."""
    if not pa.types.is_struct(arrow_type):
        raise UnsupportedSchema(path or "<root>", f"a record needs a Struct column, got {arrow_type}")
    ns = _fullname(schema["name"], schema.get("namespace", namespace)).rpartition(".")[0] or None
    index = {arrow_type.field(i).name: i for i in range(arrow_type.num_fields)}
    fields: list[tuple[int | None, Node]] = []
    for f in schema["fields"]:
        fpath = f"{path}.{f['name']}" if path else f["name"]
        if f["name"] in index:
            i = index[f["name"]]
            fields.append((i, compile_node(f["type"], arrow_type.field(i).type, names, fpath, ns)))
        elif "default" in f:
            fields.append((None, Const(fpath, names.default_bytes(f, ns))))
        else:
            raise UnsupportedSchema(fpath, "no column of that name and the field has no default")
    return Record(path, fields)


def compile_node(schema: Any, at: pa.DataType, names: Names, path: str, namespace: str | None) -> Node:
    schema, namespace = _resolve(schema, names, namespace, path)
    if isinstance(schema, list):
        return _compile_union(schema, at, names, path, namespace)
    t = type_name(schema)
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if pa.types.is_dictionary(at) and t != "enum":
        at = at.value_type  # Categorical string column for a string field: decoded below
    if t == "null":
        return Const(path, b"")
    if t == "boolean":
        if not pa.types.is_boolean(at):
            raise UnsupportedSchema(path, f"boolean needs a Boolean column, got {at}")
        return Bool(path)
    if t in ("int", "long"):
        unit = {"timestamp-millis": "ms", "timestamp-micros": "us", "local-timestamp-millis": "ms",
                "local-timestamp-micros": "us", "date": "day", "time-millis": "tms",
                "time-micros": "tus"}.get(logical or "")
        conv = _int_converter(at, path, unit)
        return Long(path, conv, t == "int" and not (pa.types.is_int32(at) or pa.types.is_int16(at)
                                                     or pa.types.is_int8(at) or pa.types.is_uint8(at)
                                                     or pa.types.is_uint16(at) or pa.types.is_date32(at)))
    if t in ("float", "double"):
        if not (pa.types.is_floating(at) or pa.types.is_integer(at)):
            raise UnsupportedSchema(path, f"{t} needs a float column, got {at}")
        return Float(path, np.float32 if t == "float" else np.float64)
    if t in ("string", "bytes", "fixed"):
        if logical == "decimal":
            return _compile_decimal(schema, at, path)
        if logical == "uuid" and (pa.types.is_binary(at) or pa.types.is_large_binary(at)
                                  or pa.types.is_fixed_size_binary(at)) and t == "string":
            return UuidFromBinary(path)
        if not (pa.types.is_string(at) or pa.types.is_large_string(at) or pa.types.is_binary(at)
                or pa.types.is_large_binary(at) or pa.types.is_fixed_size_binary(at)
                or pa.types.is_string_view(at) or pa.types.is_binary_view(at)):
            raise UnsupportedSchema(path, f"{t} needs a String/Binary column, got {at}")
        return Bytes(path, schema["size"] if t == "fixed" else None)
    if t == "enum":
        ok = pa.types.is_dictionary(at) or pa.types.is_string(at) or pa.types.is_large_string(at) \
            or pa.types.is_string_view(at)
        if not ok:
            raise UnsupportedSchema(path, f"enum needs a String/Categorical/Enum column, got {at}")
        return Enum(path, list(schema["symbols"]))
    if t == "array":
        if not (pa.types.is_list(at) or pa.types.is_large_list(at) or pa.types.is_fixed_size_list(at)):
            raise UnsupportedSchema(path, f"array needs a List column, got {at}")
        return Array(path, compile_node(schema["items"], at.value_type, names, f"{path}[]", namespace))
    if t == "map":
        if pa.types.is_map(at):
            key_t, val_t = at.key_type, at.item_type
        elif (pa.types.is_list(at) or pa.types.is_large_list(at)) and pa.types.is_struct(at.value_type) \
                and {at.value_type.field(i).name for i in range(at.value_type.num_fields)} >= {"key", "value"}:
            key_t, val_t = at.value_type.field("key").type, at.value_type.field("value").type
        else:
            raise UnsupportedSchema(path, f"map needs a Map or List(Struct{{key, value}}) column, got {at}")
        entry = MapEntry(path, compile_node("string", key_t, names, f"{path}{{key}}", namespace),
                          compile_node(schema["values"], val_t, names, f"{path}{{}}", namespace))
        return Array(path, entry)
    if t in ("record", "error"):
        return compile_record(schema, at, names, path, namespace)
    raise UnsupportedSchema(path, f"unsupported Avro type {t!r}")


def _compile_union(branches: list[Any], at: pa.DataType, names: Names, path: str,
                   namespace: str | None) -> Node:
    resolved = [_resolve(b, names, namespace, path)[0] for b in branches]
    null_index = next((i for i, b in enumerate(resolved) if b == "null"), None)
    if pa.types.is_null(at):
        if null_index is None:
            raise UnsupportedSchema(path, "a Null column for a union without a null branch")
        return Union(path, null_index, null_index, Const(path, b""))
    candidates = [i for i, b in enumerate(resolved) if b != "null" and _arrow_fits(branches[i], at, names, namespace)]
    if len(candidates) != 1:
        names_ = [type_name(b) for b in resolved]
        why = "no branch matches" if not candidates else "several branches match"
        raise UnsupportedSchema(path, f"union {names_}: {why} the column type {at}; the frame cannot say "
                                      "which branch each row takes")
    i = candidates[0]
    return Union(path, i, null_index, compile_node(branches[i], at, names, path, namespace))


def _arrow_fits(schema: Any, at: pa.DataType, names: Names, namespace: str | None) -> bool:
    try:
        compile_node(schema, at, names, "", namespace)
        return True
    except UnsupportedSchema:
        return False


def _compile_decimal(schema: dict[str, Any], at: pa.DataType, path: str) -> Node:
    if not pa.types.is_decimal(at):
        raise UnsupportedSchema(path, f"decimal needs a Decimal column, got {at}")
    scale, precision = schema.get("scale", 0), schema["precision"]
    if at.scale > scale:
        raise UnsupportedSchema(path, f"column scale {at.scale} exceeds the schema's scale {scale}")
    if precision > 18:
        raise UnsupportedSchema(path, f"decimal precision {precision} > 18 is not supported (int64 path)")
    return Decimal(path, 10 ** (scale - at.scale), precision, schema.get("size") if type_name(schema) == "fixed" else None)


def _int_converter(arrow_type: pa.DataType, path: str, unit_to: str | None = None) -> Callable[[pa.Array], np.ndarray]:
    """Arrow array -> int64 numpy of the Avro value (timestamps/dates converted to Avro units)."""
    if pa.types.is_integer(arrow_type):
        if arrow_type == pa.uint64():
            def conv(a: pa.Array) -> np.ndarray:
                v = fixed_view(a, np.uint64)
                if len(v) and int(v.max()) >= 2**63:
                    raise UnencodableValue(path, None, int(v.max()), "out of range for Avro long")
                return v.astype(I64)
            return conv
        dt = np.dtype(arrow_type.to_pandas_dtype())
        return lambda a: fixed_view(a, dt).astype(I64, copy=False)
    if pa.types.is_timestamp(arrow_type) and unit_to in ("ms", "us"):
        per_s = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}
        src, dst = per_s[arrow_type.unit], per_s[unit_to]
        if src >= dst:
            div = src // dst
            return lambda a: fixed_view(a, I64) // div if div > 1 else fixed_view(a, I64)
        mul = dst // src
        return lambda a: fixed_view(a, I64) * mul
    if pa.types.is_date32(arrow_type) and unit_to == "day":
        return lambda a: fixed_view(a, np.int32).astype(I64)
    if pa.types.is_date64(arrow_type) and unit_to == "day":
        return lambda a: fixed_view(a, I64) // 86_400_000
    if (pa.types.is_time32(arrow_type) or pa.types.is_time64(arrow_type)) and unit_to in ("tms", "tus"):
        per_s = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}
        src, dst = per_s[arrow_type.unit], 1000 if unit_to == "tms" else 10**6
        width = np.int32 if pa.types.is_time32(arrow_type) else I64
        if src >= dst:
            return lambda a: fixed_view(a, width).astype(I64) // (src // dst)
        return lambda a: fixed_view(a, width).astype(I64) * (dst // src)
    raise UnsupportedSchema(path, f"column type {arrow_type} cannot be written as this Avro type")
