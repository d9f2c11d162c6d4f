"""Avro schemas of the domain, the registry cache and the serde (see docs/serde.md, docs/catalog.md)."""

from headwater.schemas.columnar_decode import ColumnarDecoder, DecodedBatch, Rejected
from headwater.schemas.errors import (
    MalformedFraming,
    SchemaMismatch,
    SchemaRegistryRejected,
    SchemaRegistryUnavailable,
    SchemaResolutionError,
    SerdeError,
    SubjectNotFound,
    UndecodableDatum,
    UnencodableRecord,
    UnknownSchemaId,
)
from headwater.schemas.layout import NoFrameLayout, frame_schema
from headwater.schemas.record_serde import RecordSerde
from headwater.schemas.registry import SchemaCache, WriterSchema
from headwater.schemas.serde import AvroSerde

__all__ = [
    "AvroSerde",
    "ColumnarDecoder",
    "DecodedBatch",
    "MalformedFraming",
    "NoFrameLayout",
    "RecordSerde",
    "Rejected",
    "SchemaCache",
    "SchemaMismatch",
    "SchemaRegistryRejected",
    "SchemaRegistryUnavailable",
    "SchemaResolutionError",
    "SerdeError",
    "SubjectNotFound",
    "UndecodableDatum",
    "UnencodableRecord",
    "UnknownSchemaId",
    "WriterSchema",
    "frame_schema",
]
