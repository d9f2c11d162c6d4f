"""The public Avro serde facade: Confluent wire format through a Schema Registry, two paths.

>>> serde = AvroSerde("http://127.0.0.1:18081/apis/ccompat/v7", reader_schema=order_v2)
>>> batch = serde.decode_batch([msg.value() for msg in messages])
>>> batch.frame            # pl.DataFrame, layout of docs/serde.md section 1
>>> batch.positions        # input index of each row
>>> batch.rejected         # [Rejected(index, error)], error carries the raw bytes and reason
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import polars as pl

from headwater.schemas.columnar_decode import (
    DEFAULT_COLUMNAR_THRESHOLD,
    ColumnarDecoder,
    DecodedBatch,
)
from headwater.schemas.record_serde import RecordSerde
from headwater.schemas.registry import AvroSchema, RegistryClient, SchemaCache


class AvroSerde:
    """Decode and encode Avro records in Confluent wire format, per record or per batch.

    Both paths give the same results: ``decode_batch`` yields the same frame whether it decodes
    columnar (polars-avro) or per record (fastavro); ``encode_batch`` yields the bytes
    ``encode_one`` would. The registry is asked once per schema id (see :class:`SchemaCache`).
    """

    def __init__(
        self,
        registry: SchemaCache | RegistryClient | str,
        reader_schema: AvroSchema | None = None,
        *,
        columnar_threshold: int = DEFAULT_COLUMNAR_THRESHOLD,
        registry_conf: dict[str, Any] | None = None,
        reader_subject: str | None = None,
    ) -> None:
        """
        Args:
            registry: a :class:`SchemaCache` (share one per process), a registry client, or the
                registry URL.
            reader_schema: resolve every record to this Avro record schema (schema evolution);
                records whose writer schema cannot resolve to it (another record type, an
                incompatible change) are rejected with ``SchemaMismatch``. None decodes each
                record in its writer schema.
            columnar_threshold: batches (per schema id) smaller than this decode per record.
            registry_conf: extra ``SchemaRegistryClient`` settings when ``registry`` is a URL.
            reader_subject: the subject ``reader_schema`` came from, for error messages.
        """
        if isinstance(registry, str):
            registry = SchemaCache.from_url(registry, **(registry_conf or {}))
        elif not isinstance(registry, SchemaCache):
            registry = SchemaCache(registry)
        self.cache: SchemaCache = registry
        self.reader_schema = reader_schema
        self.reader_subject = reader_subject
        self._records = RecordSerde(registry, reader_schema, reader_subject=reader_subject)
        self._batches = ColumnarDecoder(registry, reader_schema, columnar_threshold=columnar_threshold,
                                        reader_subject=reader_subject)

    def decode_batch(self, payloads: Sequence[bytes]) -> DecodedBatch:
        """Decode framed payloads into one frame; bad payloads are returned, never raised.

        Returns:
            ``DecodedBatch(frame, positions, rejected)``: rows in input order, ``positions[i]`` the
            input index of row ``i``, ``rejected`` the typed errors with their input index.

        Raises:
            SchemaRegistryUnavailable: a writer schema had to be fetched and could not be.
        """
        return self._batches.decode(payloads)

    def decode_one(self, payload: bytes) -> dict[str, Any]:
        """Decode one framed payload to a dict (fastavro conventions; see :class:`RecordSerde`).

        Raises:
            MalformedFraming, UnknownSchemaId, SchemaMismatch, UndecodableDatum,
            SchemaResolutionError, SchemaRegistryUnavailable.
        """
        return self._records.decode(payload)

    def encode_one(self, record: dict[str, Any], schema_id: int) -> bytes:
        """Encode one dict with registered schema ``schema_id``, framed.

        Raises:
            UnknownSchemaId, UnencodableRecord.
        """
        return self._records.encode(record, schema_id)

    def schema_id(self, subject: str, schema: AvroSchema | None = None, *, register: bool = True) -> int:
        """The id to write with: ``schema`` registered (or looked up) under ``subject``, or the
        subject's latest version when ``schema`` is None. Cached except for "latest".

        Raises:
            SchemaRegistryRejected, SchemaRegistryUnavailable.
        """
        if schema is None:
            return self.cache.latest(subject).schema_id
        return self.cache.register(subject, schema) if register else self.cache.lookup(subject, schema)

    def encode_batch(self, frame: pl.DataFrame, schema_id: int) -> list[bytes]:
        """Encode every row of ``frame`` (decoder layout) with registered schema ``schema_id``.

        Uses the vectorized encoder (``headwater.schemas.columnar_encode``) when it is installed,
        else fastavro row by row (same bytes). Get ``schema_id`` from :meth:`schema_id`.

        Raises:
            UnknownSchemaId: no such schema.
            UnencodableRecord: (per-record path) a row does not conform to the schema.
            columnar_encode.UnsupportedSchema / UnencodableValue: (columnar path) likewise.
        """
        ws = self.cache.writer(schema_id)
        encoder = _columnar_encoder()
        if encoder is not None:
            return encoder.encode_frame(frame, ws.schema, schema_id)
        return [self._records.encode(row, schema_id) for row in frame.iter_rows(named=True)]


def _columnar_encoder() -> Any | None:
    try:
        return importlib.import_module("headwater.schemas.columnar_encode")
    except ImportError:
        return None
