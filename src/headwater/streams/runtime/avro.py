"""Avro through the Schema Registry for the runtime: source decoders and the output encoder.

One :class:`AvroCodec` per worker shares one schema cache, so every writer schema is fetched once
per process and every output subject is registered once.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from headwater.config import Settings
from headwater.schemas.registry import SchemaCache
from headwater.schemas.serde import AvroSerde
from headwater.streams.decode import Rejected
from headwater.streams.records import RawRecord, metadata_frame
from headwater.streams.topology import SourceSpec


class AvroSourceDecoder:
    """Decodes one source topic's batch column-wise; undecodable records become ``Rejected``."""

    def __init__(self, serde: AvroSerde) -> None:
        self._serde = serde

    def decode(self, records: Sequence[RawRecord]) -> tuple[pl.DataFrame, list[Rejected]]:
        decoded = self._serde.decode_batch([r.value or b"" for r in records])
        rejected = [Rejected(records[r.index], r.error) for r in decoded.rejected]
        accepted = records if not rejected else [records[i] for i in decoded.positions]
        meta = metadata_frame(list(accepted))
        return pl.concat([meta, decoded.frame], how="horizontal"), rejected


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
