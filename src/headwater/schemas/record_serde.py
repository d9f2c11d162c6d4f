"""Per-record Avro serde in Confluent wire format, with fastavro.

Used for small batches, as the fallback that isolates bad records of a batch, and by tools.
Decoding is strict: the datum must use every byte after the header (fastavro alone ignores trailing
bytes), so both decode paths accept and reject exactly the same payloads.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError as _FastavroResolution

from headwater.schemas import wire
from headwater.schemas.errors import (
    SchemaMismatch,
    SchemaResolutionError,
    SerdeError,
    UndecodableDatum,
    UnencodableRecord,
)
from headwater.schemas.layout import expanded
from headwater.schemas.registry import AvroSchema, SchemaCache, parse, schema_text
from headwater.schemas.resolve import incompatibility, record_name


def read_datum(payload: bytes, schema_id: int, writer: Any, reader: Any | None) -> dict[str, Any]:
    """Decode the datum of a framed ``payload`` (header already validated by the caller).

    Args:
        payload: the framed payload.
        schema_id: its schema id (for error context).
        writer, reader: fastavro-parsed writer and reader schemas (``reader`` None: no resolution).

    Raises:
        UndecodableDatum: the bytes are not a datum of the writer schema, or leave bytes unused.
        SchemaResolutionError: the datum cannot be resolved to the reader schema.
    """
    bio = io.BytesIO(payload)
    bio.seek(wire.HEADER_SIZE)
    try:
        record = schemaless_reader(bio, writer, reader)
    except _FastavroResolution as err:
        raise SchemaResolutionError(str(err), payload, schema_id=schema_id) from err
    except Exception as err:  # noqa: BLE001 - fastavro raises many types on garbage
        raise UndecodableDatum(f"{type(err).__name__}: {err}", payload, schema_id=schema_id) from err
    if bio.tell() != len(payload):
        raise UndecodableDatum(f"{len(payload) - bio.tell()} trailing bytes after the datum",
                               payload, schema_id=schema_id)
    return record


class RecordSerde:
    """Encode and decode one record at a time (fastavro, schemas from a :class:`SchemaCache`).

    Decoded records follow fastavro's conventions (timestamp-millis -> aware ``datetime`` in UTC,
    uuid -> ``uuid.UUID``, enum -> ``str``, map -> ``dict``).
    """

    def __init__(self, cache: SchemaCache, reader_schema: AvroSchema | None = None,
                 *, reader_subject: str | None = None) -> None:
        """
        Args:
            cache: where writer schemas come from.
            reader_schema: resolve every record to this schema (schema evolution); records whose
                writer schema cannot resolve to it raise ``SchemaMismatch``. None keeps each
                record in its writer schema.
            reader_subject: the subject ``reader_schema`` came from (error context only).
        """
        self.cache = cache
        self.reader_schema = reader_schema
        self.reader_subject = reader_subject
        self._reader = parse(reader_schema) if reader_schema is not None else None
        self._reader_text = schema_text(reader_schema) if reader_schema is not None else None
        self._reader_expanded = expanded(reader_schema) if reader_schema is not None else None
        self._mismatch: dict[int, str | None] = {}

    def decode(self, payload: bytes) -> dict[str, Any]:
        """The record in framed ``payload``, resolved to the reader schema if one is set.

        Raises:
            MalformedFraming, UnknownSchemaId, SchemaMismatch, UndecodableDatum,
            SchemaResolutionError.
            SchemaRegistryUnavailable: the writer schema had to be fetched and could not be.
        """
        schema_id = wire.schema_id_of(payload)
        try:
            ws = self.cache.writer(schema_id)
        except SerdeError as err:
            err.raw = bytes(payload)
            raise
        reader = None if self._reader_text in (None, ws.text) else self._reader
        if reader is not None:
            if schema_id not in self._mismatch:
                self._mismatch[schema_id] = incompatibility(expanded(ws.schema),
                                                            self._reader_expanded)
            reason = self._mismatch[schema_id]
            if reason is not None:
                raise SchemaMismatch(reason, bytes(payload), schema_id=schema_id,
                                     reader_subject=self.reader_subject,
                                     reader_name=record_name(self._reader_expanded))
        return read_datum(payload, schema_id, ws.parsed, reader)

    def encode(self, record: dict[str, Any], schema_id: int) -> bytes:
        """``record`` encoded with the registered schema ``schema_id``, framed.

        Raises:
            UnknownSchemaId: no such schema.
            UnencodableRecord: the record does not conform to the schema.
        """
        ws = self.cache.writer(schema_id)
        bio = io.BytesIO()
        bio.write(wire.header(schema_id))
        try:
            schemaless_writer(bio, ws.parsed, record)
        except Exception as err:  # noqa: BLE001 - fastavro raises many types on bad values
            raise UnencodableRecord(f"{type(err).__name__}: {err}", schema_id=schema_id) from err
        return bio.getvalue()
