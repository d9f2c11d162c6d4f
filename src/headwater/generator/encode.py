"""The generator's encode step: events of one type -> Confluent-framed Avro payloads.

:meth:`WireEncoder.encode_frame` is what ``headwater produce`` uses: a frame in the schema layout
(:func:`headwater.generator.events.nest`) encoded by the vectorized columnar encoder
(``headwater.schemas.columnar_encode``, byte-identical to fastavro). :meth:`WireEncoder.encode`
encodes event dicts per record with fastavro (tools and benchmarks that hold dicts); its schema is
parsed with the ``logicalType`` annotations removed: the dicts hold timestamps as epoch millis and
uuids as strings, so the bytes are identical, and fastavro skips its logical-type conversions.
Nothing else in the generator touches Avro.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import fastavro
import numpy as np
import polars as pl

from headwater.schemas.catalog import event_type
from headwater.schemas.columnar_encode import ColumnarEncoder, EncodedBatch


class WireEncoder:
    """Encodes events of any catalog type with the schema ids they were registered under.

    Args:
        schema_ids: registry schema id by event type name.
    """

    def __init__(self, schema_ids: Mapping[str, int]) -> None:
        self._schemas = {
            name: fastavro.parse_schema(_strip_logical_types(event_type(name).schema))
            for name in schema_ids
        }
        self._headers = {name: b"\x00" + struct.pack(">I", sid) for name, sid in schema_ids.items()}
        self._ids = dict(schema_ids)
        self._columnar = {name: ColumnarEncoder(event_type(name).schema) for name in schema_ids}
        self._buffer = io.BytesIO()

    def encode_frame(self, name: str, frame: pl.DataFrame) -> list[bytes]:
        """Framed payloads of the rows of ``frame`` (schema layout), vectorized."""
        return self.encode_frame_buffer(name, frame).to_list()

    def encode_frame_buffer(self, name: str, frame: pl.DataFrame) -> EncodedBatch:
        """Like :meth:`encode_frame`, as one buffer plus row offsets."""
        if len(frame) == 0:
            return EncodedBatch(np.zeros(0, np.uint8), np.zeros(1, np.int64))
        return self._columnar[name].encode_buffer(frame, self._ids[name])

    def encode(self, name: str, events: Sequence[dict[str, Any]]) -> list[bytes]:
        """Framed payloads (magic 0, 4-byte big-endian schema id, Avro datum) of ``events``."""
        schema, header, buf = self._schemas[name], self._headers[name], self._buffer
        write, out = fastavro.schemaless_writer, []
        for event in events:
            buf.seek(0)
            buf.truncate()
            buf.write(header)
            write(buf, schema, event)
            out.append(buf.getvalue())
        return out


def _strip_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    return schema
