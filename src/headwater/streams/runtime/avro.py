"""Avro through the Schema Registry for the runtime: source decoders and the output encoder.

One :class:`AvroCodec` per worker shares one schema cache, so every writer schema is fetched once
per process and every output subject is registered once.
"""

from __future__ import annotations

import polars as pl

from headwater.config import Settings
from headwater.schemas.registry import SchemaCache
from headwater.schemas.serde import AvroSerde
from headwater.streams.decode import Rejected, with_metadata
from headwater.streams.records import RecordBatch
from headwater.streams.topology import SourceSpec


class AvroSourceDecoder:
    """Decodes one source topic's batch column-wise; undecodable records become ``Rejected``."""

    def __init__(self, serde: AvroSerde) -> None:
        self._serde = serde

    def decode(self, batch: RecordBatch) -> tuple[pl.DataFrame, list[Rejected]]:
        values = batch.values
        decoded = self._serde.decode_batch(values if None not in values else
                                           [v or b"" for v in values])
        rejected = [
            Rejected(r.index, r.error.at(batch.topic, batch.partitions[r.index],
                                         batch.offsets[r.index]))
            for r in decoded.rejected
        ]
        rows = decoded.positions.tolist() if rejected else None
        return with_metadata(batch, decoded.frame, rows), rejected


class AvroCodec:
    """Registry-backed Avro for one worker."""

    def __init__(self, settings: Settings) -> None:
        conf = settings.schema_registry_config()
        url = conf.pop("url")
        self.cache = SchemaCache.from_url(url, **conf)
        self._writer = AvroSerde(self.cache)
        self._ids: dict[tuple[str, str], int] = {}

    def decoder(self, spec: SourceSpec) -> AvroSourceDecoder:
        """A decoder for ``spec`` (resolving to its reader schema, if it has one)."""
        return AvroSourceDecoder(AvroSerde(self.cache, spec.reader_schema))

    def encode(self, frame: pl.DataFrame, subject: str, schema: str) -> list[bytes]:
        """Encode ``frame`` with ``schema`` registered under ``subject`` (registered once)."""
        schema_id = self._ids.get((subject, schema))
        if schema_id is None:
            schema_id = self._ids[(subject, schema)] = self._writer.schema_id(subject, schema)
        return self._writer.encode_batch(frame, schema_id)
