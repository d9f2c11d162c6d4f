"""Vectorized Avro encoding of a Polars frame: one framed payload per row, no per-row Python.

The encoder is the inverse of the columnar decoder: its input is a frame in the decoder's layout
(see docs/serde.md) and its output is, for every row, the Avro binary encoding of that row
byte-identical to ``fastavro.schemaless_writer`` on the equivalent dict, optionally prefixed with
the 5-byte Confluent header (``b"\\x00"`` + schema id as 4-byte big-endian).

How (details in docs/serde-encoder.md): the Avro schema and the frame's Arrow types are compiled
once into a tree of nodes. Encoding is two vectorized passes over that tree:

1. ``measure``: bottom-up, every node computes the encoded size of each of its items (zigzag
   varint lengths, string lengths from Arrow offsets, list sizes as segment sums of item sizes).
2. ``write``: top-down, row start offsets are the cumulative sum of row sizes; every node receives
   the start offset of each of its items and scatters its bytes straight into one zero-filled
   ``uint8`` buffer (records advance the offset field by field, lists compute item offsets from
   the cumulative item sizes). Every output byte is written once; zero bytes (array terminators,
   empty arrays, union branch 0) are not written at all.

Items that are not encoded (children of a null union branch, entries of null lists) are carried as
an ``active`` mask so that their garbage neither raises nor gets written.

Modules: ``encoder`` (the public API, re-exported here), ``compile`` (schema + Arrow types -> node tree),
``nodes`` (scalar types), ``structure`` (unions, records, arrays, maps), ``kernels`` (NumPy
varint/scatter/mask kernels), ``errors``. The frame layout itself is :mod:`headwater.schemas.layout`.
"""

from headwater.schemas.columnar_encode.encoder import (
    ColumnarEncoder,
    EncodedBatch,
    encode_frame,
    encode_frame_buffer,
)
from headwater.schemas.columnar_encode.errors import UnencodableValue, UnsupportedSchema

__all__ = [
    "ColumnarEncoder",
    "EncodedBatch",
    "UnencodableValue",
    "UnsupportedSchema",
    "encode_frame",
    "encode_frame_buffer",
]
