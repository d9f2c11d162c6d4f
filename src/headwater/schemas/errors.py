"""Typed serde errors: what went wrong with which bytes, and where they came from.

Every per-record error (:class:`SerdeError` subclasses except :class:`SchemaRegistryUnavailable`)
carries the raw payload, a short reason and, once known, the record's topic/partition/offset, so a
dead-letter writer can route it without re-parsing. ``str(error)`` shows at most
:data:`RAW_PREFIX` bytes of the payload in hex.
"""

from __future__ import annotations

from typing import Any

from headwater.errors import HeadwaterError

RAW_PREFIX = 32
"""How many leading payload bytes an error message shows (the full payload stays in ``raw``)."""


class SerdeError(HeadwaterError):
    """Base class of Avro serde errors about one record.

    Attributes:
        reason: why the record was rejected, one line.
        raw: the full raw payload (framed bytes), or ``None`` when not applicable (encoding).
        schema_id: the schema id involved, when known.
        topic, partition, offset: where the record came from, when the caller knows it (see
            :meth:`at`).
    """

    kind = "serde error"

    def __init__(
        self,
        reason: str,
        raw: bytes | None = None,
        *,
        schema_id: int | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.raw = raw
        self.schema_id = schema_id
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(reason)

    def at(self, topic: str | None, partition: int | None, offset: int | None) -> SerdeError:
        """Record where the payload came from; returns ``self`` for chaining."""
        self.topic, self.partition, self.offset = topic, partition, offset
        return self

    def __str__(self) -> str:
        parts = [f"{self.kind}: {self.reason}{self._detail()}"]
        if self.schema_id is not None:
            parts.append(f"schema id {self.schema_id}")
        if self.topic is not None:
            parts.append(f"at {self.topic}[{self.partition}]@{self.offset}")
        if self.raw is not None:
            more = "..." if len(self.raw) > RAW_PREFIX else ""
            parts.append(f"raw ({len(self.raw)} bytes) {self.raw[:RAW_PREFIX].hex()}{more}")
        return "; ".join(parts)

    def _detail(self) -> str:
        return ""

    def __reduce__(self):  # keep keyword context through pickling (worker processes)
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[SerdeError], state: dict) -> SerdeError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("reason"))
    err.__dict__.update(state)
    return err


class MalformedFraming(SerdeError):
    """The payload is not Confluent wire format: shorter than 5 bytes or magic byte not 0."""

    kind = "malformed framing"


class UnknownSchemaId(SerdeError):
    """The registry has no schema with the payload's schema id (or it is not an Avro schema)."""

    kind = "unknown schema id"


class UndecodableDatum(SerdeError):
    """The Avro datum after the header does not decode with its writer schema."""

    kind = "undecodable datum"


class SchemaResolutionError(SerdeError):
    """The datum decodes with its writer schema but cannot be resolved to the reader schema
    (incompatible types, an enum symbol unknown to the reader without default, a null where the
    reader's field is not nullable, a schema with no frame layout)."""

    kind = "schema resolution failed"


class SchemaMismatch(SerdeError):
    """The record's writer schema does not resolve to the source's declared schema: another
    record type (a different full name), or a same-named but incompatible schema. Decided once
    per writer schema id, so every record written with that id is rejected.

    Attributes:
        schema_id: the writer schema id.
        reader_subject: the subject the declared schema came from (``<topic>-value``), or ``None``
            when the source declared its reader schema explicitly.
        reader_name: full name of the declared record schema.
    """

    kind = "schema mismatch"

    def __init__(
        self,
        reason: str,
        raw: bytes | None = None,
        *,
        reader_subject: str | None = None,
        reader_name: str | None = None,
        **context: Any,
    ) -> None:
        self.reader_subject = reader_subject
        self.reader_name = reader_name
        super().__init__(reason, raw, **context)

    def _detail(self) -> str:
        declared = self.reader_name or "the declared schema"
        source = f"subject {self.reader_subject}" if self.reader_subject else "explicit reader schema"
        return f" (declared: {declared}, {source})"


class UnencodableRecord(SerdeError):
    """A record (dict or frame row) does not conform to the schema it is encoded with."""

    kind = "unencodable record"


class SchemaRegistryUnavailable(HeadwaterError):
    """The Schema Registry could not be reached or answered with a server error.

    Not a per-record error: nothing is cached, the caller should retry or stop.

    Attributes:
        operation: what was attempted (``get schema 42``, ``register subject X``).
        reason: the client's error text.
    """

    def __init__(self, operation: str, reason: str) -> None:
        self.operation, self.reason = operation, reason
        super().__init__(f"schema registry unavailable during {operation}: {reason}")


class SchemaRegistryRejected(HeadwaterError):
    """The registry refused a request about a subject (incompatible schema, invalid schema,
    unknown subject).

    Attributes:
        subject: the subject involved.
        reason: the registry's own message.
        http_status, error_code: the registry's status and error code.
    """

    def __init__(self, subject: str, reason: str, http_status: int, error_code: int) -> None:
        self.subject, self.reason = subject, reason
        self.http_status, self.error_code = http_status, error_code
        super().__init__(f"schema registry refused subject '{subject}': {reason} "
                         f"(HTTP {http_status}, code {error_code})")


class SubjectNotFound(SchemaRegistryRejected):
    """The subject does not exist in the registry (HTTP 404, e.g. code 40401)."""
