"""Schema Registry administration of the catalog: register, check compatibility, list.

Works against any Confluent-compatible registry through
``confluent_kafka.schema_registry.SchemaRegistryClient``. Quirks of Apicurio's ``ccompat/v7`` API
that this module accounts for (verified against Apicurio 3):

- Registration is idempotent only for byte-identical schema text: the same schema formatted
  differently becomes a new version with a new id (Confluent would normalise and return the
  existing id). The catalog therefore always registers :attr:`EventType.schema_str`, one compact
  rendering.
- Schema ids are global content ids: identical text under two subjects gets the same id.
- ``GET /config/{subject}`` answers ``NONE`` for a subject without its own setting even though the
  global level (BACKWARD) is what is enforced; read the global level instead.
- The verbose compatibility answer carries a single ``reason`` string where Confluent returns a
  ``messages`` list; both are read. ``SchemaRegistryClient.test_compatibility`` drops that text, so
  the check is posted through the client's REST session (same auth and TLS settings).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from headwater.errors import HeadwaterError
from headwater.schemas.catalog import DEFAULT_PREFIX, EventType, catalog

__all__ = [
    "IncompatibleSchema",
    "InvalidSchema",
    "RegistryError",
    "Registered",
    "SubjectInfo",
    "check_compatibility",
    "list_subjects",
    "register_catalog",
    "register_schema",
]


class RegistryError(HeadwaterError):
    """The Schema Registry refused or failed a request.

    Attributes:
        subject: the subject concerned, when there is one.
        status: HTTP status (-1 when the registry could not be reached).
        code: the registry's error code (e.g. 40401), -1 when unknown.
    """

    def __init__(self, subject: str | None, action: str, exc: SchemaRegistryError) -> None:
        self.subject = subject
        self.status = exc.http_status_code
        self.code = exc.error_code
        where = f" for subject '{subject}'" if subject else ""
        super().__init__(f"schema registry: {action}{where} failed: {exc.error_message}")


class IncompatibleSchema(HeadwaterError):
    """A schema the registry rejects under the subject's compatibility rule.

    Attributes:
        subject: the subject checked.
        reason: the registry's explanation, verbatim.
    """

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"schema is incompatible with subject '{subject}': {reason}")


class InvalidSchema(HeadwaterError):
    """Schema text that is not a valid Avro schema (rejected before contacting the registry).

    Attributes:
        source: where the text came from (a file name or a subject).
        reason: the parser's message.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"invalid Avro schema in {source}: {reason}")


@dataclass(frozen=True)
class Registered:
    """Result of registering one schema: ``subject``, ``schema_id``, ``version``."""

    subject: str
    schema_id: int
    version: int


@dataclass(frozen=True)
class SubjectInfo:
    """A subject, its versions (ascending) and the latest version's schema id."""

    subject: str
    versions: tuple[int, ...]
    latest_id: int


def register_schema(client: SchemaRegistryClient, subject: str, schema_str: str) -> Registered:
    """Register ``schema_str`` under ``subject`` (idempotent for identical text).

    Raises:
        InvalidSchema: the text does not parse as Avro.
        IncompatibleSchema: the registry's compatibility rule rejects it (HTTP 409).
        RegistryError: any other registry failure.
    """
    parse_avro(schema_str, subject)
    try:
        schema_id = client.register_schema(subject, Schema(schema_str, "AVRO"))
        version = client.lookup_schema(subject, Schema(schema_str, "AVRO")).version
    except SchemaRegistryError as exc:
        if exc.http_status_code == 409:
            raise IncompatibleSchema(subject, exc.error_message) from exc
        raise RegistryError(subject, "register", exc) from exc
    return Registered(subject, schema_id, int(version))


def register_catalog(
    client: SchemaRegistryClient,
    prefix: str = DEFAULT_PREFIX,
    types: Iterable[EventType] | None = None,
) -> dict[str, Registered]:
    """Register every catalog schema (or ``types``) under its subject; by event type name."""
    entries = list(types) if types is not None else list(catalog().values())
    return {t.name: register_schema(client, t.subject(prefix), t.schema_str) for t in entries}


def check_compatibility(client: SchemaRegistryClient, subject: str, schema_str: str) -> bool:
    """Check ``schema_str`` against the latest version of ``subject`` without registering it.

    Returns:
        True when compatible, False when the subject does not exist yet (nothing to check
        against: registering would create version 1).

    Raises:
        InvalidSchema: the text does not parse as Avro.
        IncompatibleSchema: incompatible; ``reason`` is the registry's own explanation.
        RegistryError: any other registry failure.
    """
    parse_avro(schema_str, subject)
    path = f"compatibility/subjects/{quote(subject, safe='')}/versions/latest?verbose=true"
    try:
        # test_compatibility() returns only the boolean; the reason needs the raw answer.
        answer = client._rest_client.post(path, body={"schema": schema_str, "schemaType": "AVRO"})
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:
            return False
        raise RegistryError(subject, "compatibility check", exc) from exc
    if answer.get("is_compatible"):
        return True
    raise IncompatibleSchema(subject, _reason(answer))


def list_subjects(client: SchemaRegistryClient, prefix: str | None = None) -> list[SubjectInfo]:
    """Subjects (sorted; only those starting with ``prefix`` + ``.`` when given) and versions."""
    try:
        subjects = sorted(client.get_subjects())
        if prefix:
            subjects = [s for s in subjects if s.startswith(f"{prefix}.")]
        out = []
        for subject in subjects:
            versions = tuple(sorted(client.get_versions(subject)))
            latest = client.get_latest_version(subject)
            out.append(SubjectInfo(subject, versions, latest.schema_id))
    except SchemaRegistryError as exc:
        raise RegistryError(None, "list subjects", exc) from exc
    return out


def parse_avro(schema_str: str, source: str) -> dict[str, Any]:
    """Parse and validate Avro schema text; raises :class:`InvalidSchema`."""
    try:
        schema = json.loads(schema_str)
        fastavro.parse_schema(schema)
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise InvalidSchema(source, str(exc)) from exc
    return schema


def _reason(answer: dict[str, Any]) -> str:
    messages = answer.get("messages") or answer.get("reason") or "no reason given"
    if isinstance(messages, list):
        return "; ".join(str(m) for m in messages)
    return str(messages)
