"""Avro through the Schema Registry for the runtime: source decoders and the output encoder.

One :class:`AvroCodec` per worker shares one schema cache, so every writer schema is fetched once
per process and every output subject is registered once.

Every Avro source has a *declared* value schema: the source's explicit ``reader_schema``, else
the latest schema of its subject ``<topic>-value``, fetched once when the decoder is created.
Records are resolved to it; records whose writer schema cannot resolve to it (another event type
on the wrong topic, an incompatible schema) are rejected with ``SchemaMismatch`` and so
dead-lettered. When the subject does not exist, records are decoded in their writer schemas (as
logged) and nothing can be recognised as foreign. Registry outages raise
``SchemaRegistryUnavailable`` after the retry budget: they never reject records.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import polars as pl

from headwater.config import Settings
from headwater.errors import HeadwaterError
from headwater.schemas.errors import SubjectNotFound
from headwater.schemas.registry import AvroSchema, SchemaCache
from headwater.schemas.serde import AvroSerde
from headwater.state.errors import StateError
from headwater.streams.decode import EmptyValueError, Rejected, with_metadata
from headwater.streams.records import RecordBatch
from headwater.streams.topology import SourceSpec

log = logging.getLogger("headwater.avro")


class DecodeAccountingError(HeadwaterError):
    """A decoder returned fewer rows + rejections than records (a bug: records would vanish)."""


class UndecodableStateRows(StateError):
    """Rows the engine kept in state (framed Avro) no longer decode."""


class AvroSourceDecoder:
    """Decodes one source topic's batch column-wise; every record becomes a row or a ``Rejected``.

    A null value (tombstone) is rejected with ``EmptyValueError``; anything else the serde
    rejects keeps its typed ``SerdeError`` (``MalformedFraming``, ``UnknownSchemaId``,
    ``SchemaMismatch``, ``UndecodableDatum``, ``SchemaResolutionError``), located at its
    topic/partition/offset.
    """

    def __init__(self, serde: AvroSerde) -> None:
        self._serde = serde

    @property
    def serde(self) -> AvroSerde:
        """The serde (its ``reader_schema`` is the declared schema, None when undeclared)."""
        return self._serde

    def decode(self, batch: RecordBatch) -> tuple[pl.DataFrame, list[Rejected]]:
        """The frame of the decodable records (metadata first) and the rejected ones.

        Raises:
            SchemaRegistryUnavailable: a writer schema could not be fetched (nothing rejected).
            DecodeAccountingError: rows + rejected != records (never expected).
        """
        values = batch.values
        index: list[int] | None = None
        rejected: list[Rejected] = []
        if values.count(None):
            index = [i for i, v in enumerate(values) if v is not None]
            rejected = [
                Rejected(i, EmptyValueError(
                    f"null value (tombstone) at {batch.topic}[{batch.partitions[i]}]@{batch.offsets[i]}"))
                for i, v in enumerate(values) if v is None
            ]
        decoded = self._serde.decode_batch(values if index is None else [values[i] for i in index])
        for r in decoded.rejected:
            i = r.index if index is None else index[r.index]
            rejected.append(Rejected(i, r.error.at(batch.topic, batch.partitions[i],
                                                   batch.offsets[i])))
        if decoded.frame.height + len(rejected) != len(values):
            raise DecodeAccountingError(
                f"{batch.topic}: {len(values)} record(s) decoded into {decoded.frame.height} "
                f"row(s) and {len(rejected)} rejection(s)")
        if not rejected:
            return with_metadata(batch, decoded.frame, None), rejected
        rejected.sort(key=lambda r: r.index)
        positions = decoded.positions.tolist()
        rows = positions if index is None else [index[p] for p in positions]
        return with_metadata(batch, decoded.frame, rows), rejected


def declared_schema(cache: SchemaCache, spec: SourceSpec) -> tuple[AvroSchema | None, str | None]:
    """The declared value schema of an Avro source and the subject it came from.

    ``(spec.reader_schema, None)`` when the source declares one; ``(None, None)`` for internal
    (repartition) sources, which hold only the engine's own records; else the latest schema of
    ``<topic>-value``, or ``(None, subject)`` when that subject does not exist (logged).

    Raises:
        SchemaRegistryUnavailable: the registry did not answer within the cache's retry budget.
        SchemaRegistryRejected: the registry refused the request (other than "not found").
    """
    if spec.reader_schema is not None:
        return spec.reader_schema, None
    if spec.internal:
        return None, None
    subject = f"{spec.topic}-value"
    try:
        latest = cache.latest(subject)
    except SubjectNotFound:
        log.warning("source %s: subject %s does not exist: records are decoded in their own "
                    "writer schemas, and records of another type cannot be told apart",
                    spec.topic, subject)
        return None, subject
    log.info("source %s: declared value schema %s (subject %s, id %d)", spec.topic,
             latest.schema.get("name"), subject, latest.schema_id)
    return latest.schema, subject


class AvroCodec:
    """Registry-backed Avro for one worker."""

    def __init__(self, settings: Settings, cache: SchemaCache | None = None) -> None:
        """
        Args:
            settings: registry endpoint and ``transient_retry_ms`` (the registry retry budget).
            cache: use this schema cache instead of one over ``settings``' registry (tests).
        """
        if cache is None:
            conf = settings.schema_registry_config()
            url = conf.pop("url")
            cache = SchemaCache.from_url(url, transient_retry_ms=settings.transient_retry_ms, **conf)
        self.cache = cache
        self._writer = AvroSerde(self.cache)
        self._rows = AvroSerde(self.cache)
        self._ids: dict[tuple[str, str], int] = {}

    def decoder(self, spec: SourceSpec) -> AvroSourceDecoder:
        """A decoder for ``spec`` resolving to its declared schema (see :func:`declared_schema`).

        Raises:
            SchemaRegistryUnavailable: the declared schema could not be fetched.
        """
        reader, subject = declared_schema(self.cache, spec)
        return AvroSourceDecoder(AvroSerde(self.cache, reader, reader_subject=subject))

    def decode_rows(self, values: Sequence[bytes]) -> pl.DataFrame:
        """Decode framed payloads this worker's engine wrote (state rows) in writer layout.

        Raises:
            UndecodableStateRows: a payload does not decode (corrupt state: never a record's
                fault, so it fails the worker).
            SchemaRegistryUnavailable: a writer schema could not be fetched.
        """
        decoded = self._rows.decode_batch(list(values))
        if decoded.rejected:
            first = decoded.rejected[0]
            raise UndecodableStateRows(
                f"{len(decoded.rejected)} state row(s) do not decode, e.g. #{first.index}: "
                f"{first.error}")
        return decoded.frame

    def encode(self, frame: pl.DataFrame, subject: str, schema: str) -> list[bytes]:
        """Encode ``frame`` with ``schema`` registered under ``subject`` (registered once)."""
        schema_id = self._ids.get((subject, schema))
        if schema_id is None:
            schema_id = self._ids[(subject, schema)] = self._writer.schema_id(subject, schema)
        return self._writer.encode_batch(frame, schema_id)
