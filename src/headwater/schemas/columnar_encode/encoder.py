"""The encoder's public face: :class:`ColumnarEncoder`, :func:`encode_frame`, :class:`EncodedBatch`."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from headwater.schemas.columnar_encode.compile import Names, compile_record
from headwater.schemas.columnar_encode.errors import UnencodableValue, UnsupportedSchema
from headwater.schemas.columnar_encode.kernels import I64, U8, identity
from headwater.schemas.columnar_encode.structure import Record


@dataclass(frozen=True)
class EncodedBatch:
    """A batch of encoded rows in one contiguous buffer.

    Attributes:
        buffer: every row's bytes, back to back (``uint8`` numpy array, no copy was made).
        offsets: ``int64`` array of ``len(rows) + 1`` offsets; row ``i`` is
            ``buffer[offsets[i]:offsets[i + 1]]``.
    """

    buffer: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def to_list(self) -> list[bytes]:
        """One ``bytes`` object per row (the only per-row allocation, done in C by Arrow)."""
        n = len(self)
        if n == 0:
            return []
        arr = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), n, [None, pa.py_buffer(self.offsets), pa.py_buffer(self.buffer)]
        )
        return arr.to_pylist()


class ColumnarEncoder:
    """Encodes Polars frames of one Avro record schema, compiled once per frame layout.

    Args:
        schema: the Avro writer schema, parsed (dict) or JSON text. Must be a record; each of its
            fields is taken from the frame column of the same name (a missing column is encoded as
            the field's default; without a default it raises :class:`UnsupportedSchema`).

    Thread-safe; keep one per schema and reuse it, the compiled plan is cached per frame schema.
    """

    def __init__(self, schema: dict[str, Any] | str) -> None:
        self.schema: dict[str, Any] = json.loads(schema) if isinstance(schema, str) else schema
        if not isinstance(self.schema, dict) or self.schema.get("type") != "record":
            raise UnsupportedSchema("<root>", "the top-level schema must be an Avro record")
        self._names = Names(self.schema)
        self._plans: dict[pa.Schema, Record] = {}
        self._lock = threading.Lock()

    def encode(self, frame: pl.DataFrame, schema_id: int | None = None) -> list[bytes]:
        """Encode every row of ``frame``; see :func:`encode_frame`."""
        return self.encode_buffer(frame, schema_id).to_list()

    def encode_buffer(self, frame: pl.DataFrame, schema_id: int | None = None) -> EncodedBatch:
        """Encode every row of ``frame`` into one contiguous buffer; see :func:`encode_frame_buffer`."""
        table = frame.to_arrow()
        if any(c.num_chunks != 1 for c in table.columns):
            table = table.combine_chunks()
        plan = self._plan(table.schema)
        n = table.num_rows
        cols = {name: _chunk(table.column(name)) for name in table.column_names}
        root = pa.StructArray.from_arrays(
            [cols[name] for name in table.column_names] or [pa.nulls(n)],
            names=table.column_names or ["_"],
        )
        prep = plan.measure(root, None, identity)
        header = 0 if schema_id is None else 5
        sizes = prep[0] + header
        offsets = np.zeros(n + 1, dtype=I64)
        np.cumsum(sizes, out=offsets[1:])
        out = np.zeros(int(offsets[-1]), dtype=U8)
        starts = offsets[:-1]
        if schema_id is not None:
            if not 0 <= schema_id < 2**32:
                raise UnencodableValue("<header>", None, schema_id, "schema id must fit 4 bytes")
            for k, b in enumerate(int(schema_id).to_bytes(4, "big"), start=1):
                if b:
                    out[starts + k] = b
            starts = starts + header
        plan.write(prep, starts, None, out)
        return EncodedBatch(out, offsets)

    def _plan(self, arrow_schema: pa.Schema) -> Record:
        plan = self._plans.get(arrow_schema)
        if plan is None:
            with self._lock:
                plan = compile_record(self.schema, pa.struct(list(arrow_schema)), self._names, "")
                self._plans[arrow_schema] = plan
        return plan


_ENCODERS: dict[str, ColumnarEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def _encoder_for(schema: dict[str, Any] | str) -> ColumnarEncoder:
    key = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True)
    enc = _ENCODERS.get(key)
    if enc is None:
        enc = ColumnarEncoder(schema)
        with _ENCODERS_LOCK:
            if len(_ENCODERS) > 256:
                _ENCODERS.clear()
            _ENCODERS[key] = enc
    return enc


def encode_frame(
    frame: pl.DataFrame, schema: dict[str, Any] | str, schema_id: int | None = None
) -> list[bytes]:
    """Avro-encode every row of ``frame`` with ``schema``, vectorized.

    Args:
        frame: rows to encode, in the columnar decoder's layout: record -> Struct, ``["null", T]``
            -> nullable T, array -> List, map -> Map or List(Struct{key, value}), enum -> String,
            Categorical or Enum, timestamp-millis/micros -> Datetime (any unit; naive means UTC) or
            Int64 epoch units, date -> Date or Int32, uuid -> String or 16-byte Binary, decimal ->
            Decimal (scale <= the schema's), int -> any integer type within int32, long -> Int64.
        schema: the Avro record schema (dict or JSON text). Columns are matched to fields by name;
            extra columns are ignored.
        schema_id: when given, each payload starts with the Confluent header ``b"\\x00"`` +
            ``schema_id`` as 4 bytes big-endian.

    Returns:
        One ``bytes`` per row, equal to ``fastavro.schemaless_writer`` on the row as a dict
        (with the header when ``schema_id`` is given).

    Raises:
        UnsupportedSchema: a schema construct or a column type the encoder cannot map (names the
            field path and why).
        UnencodableValue: a value that has no encoding (null in a non-nullable field, unknown enum
            symbol, int out of range...), with the field path, row index and value.
    """
    return _encoder_for(schema).encode(frame, schema_id)


def encode_frame_buffer(
    frame: pl.DataFrame, schema: dict[str, Any] | str, schema_id: int | None = None
) -> EncodedBatch:
    """Like :func:`encode_frame`, but returns one contiguous buffer plus row offsets (no per-row
    ``bytes`` objects): for producers that can send slices, or to write many rows at once."""
    return _encoder_for(schema).encode_buffer(frame, schema_id)


def _chunk(col: pa.ChunkedArray) -> pa.Array:
    return col.chunk(0) if col.num_chunks == 1 else pa.concat_arrays(col.chunks)
