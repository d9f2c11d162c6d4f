"""A schema cache over a Confluent-compatible Schema Registry client.

The hot path never talks to the registry: a writer schema is fetched by id once, parsed once
(``fastavro.parse_schema``) and kept for the life of the process (ids are immutable in the registry).
Ids the registry does not know are remembered for ``negative_ttl_s`` seconds, so a stream of
garbage with random ids costs at most one registry call per id per TTL. Registrations and lookups
are cached per (subject, schema text).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from headwater.schemas.errors import (
    SchemaRegistryRejected,
    SchemaRegistryUnavailable,
    UnknownSchemaId,
)

AvroSchema = dict[str, Any] | str
"""An Avro schema as parsed JSON (a dict) or as JSON text."""


class RegistryClient(Protocol):
    """The part of ``confluent_kafka.schema_registry.SchemaRegistryClient`` the cache uses."""

    def get_schema(self, schema_id: int) -> Schema: ...
    def register_schema(self, subject_name: str, schema: Schema) -> int: ...
    def lookup_schema(self, subject_name: str, schema: Schema) -> Any: ...
    def get_latest_version(self, subject_name: str) -> Any: ...


@dataclass(frozen=True, eq=False)
class WriterSchema:
    """A registered Avro schema, parsed once.

    Attributes:
        schema_id: the registry id.
        schema: the schema as JSON (dict).
        parsed: ``fastavro.parse_schema(schema)``, ready for schemaless_reader/writer.
        text: canonical JSON text of ``schema`` (sorted keys, no spaces): a stable cache key.
    """

    schema_id: int
    schema: dict[str, Any]
    parsed: Any = field(repr=False)
    text: str = field(repr=False)


def schema_json(schema: AvroSchema) -> dict[str, Any]:
    """``schema`` as a dict (parsing JSON text)."""
    return json.loads(schema) if isinstance(schema, str) else schema


def schema_text(schema: AvroSchema) -> str:
    """Canonical JSON text of ``schema``: equal schemas give equal text."""
    return json.dumps(schema_json(schema), sort_keys=True, separators=(",", ":"))


def parse(schema: AvroSchema) -> Any:
    """``fastavro.parse_schema`` on a private copy (fastavro annotates the dict it parses)."""
    return fastavro.parse_schema(json.loads(schema_text(schema)))


class SchemaCache:
    """Writer schemas by id and subject registrations, each fetched from the registry once.

    Thread-safe. Construct from a client (``SchemaCache(client)``) or a URL (:meth:`from_url`).
    """

    def __init__(
        self,
        client: RegistryClient,
        *,
        negative_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            client: a ``SchemaRegistryClient`` or anything with the same methods.
            negative_ttl_s: how long an unknown id is answered from the cache.
            clock: monotonic seconds (injectable for tests).
        """
        self.client = client
        self.negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._by_id: dict[int, WriterSchema] = {}
        self._unknown: dict[int, tuple[float, str]] = {}
        self._ids: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **conf: Any) -> SchemaCache:
        """A cache over a new ``SchemaRegistryClient({"url": url, **conf})``."""
        return cls(SchemaRegistryClient({"url": url, **conf}))

    def writer(self, schema_id: int) -> WriterSchema:
        """The writer schema registered with ``schema_id``.

        Raises:
            UnknownSchemaId: the registry has no such id (cached for ``negative_ttl_s``), or the
                schema is not a valid Avro schema.
            SchemaRegistryUnavailable: the registry could not be asked (nothing cached).
        """
        found = self._by_id.get(schema_id)
        if found is not None:
            return found
        with self._lock:
            found = self._by_id.get(schema_id)
            if found is not None:
                return found
            miss = self._unknown.get(schema_id)
            if miss is not None and miss[0] > self._clock():
                raise UnknownSchemaId(miss[1], schema_id=schema_id)
            try:
                found = self._fetch(schema_id)
            except UnknownSchemaId as err:
                self._unknown[schema_id] = (self._clock() + self.negative_ttl_s, err.reason)
                raise
            self._unknown.pop(schema_id, None)
            self._by_id[schema_id] = found
            return found

    def add(self, schema_id: int, schema: AvroSchema) -> WriterSchema:
        """Seed the cache with a schema known to be registered under ``schema_id``."""
        ws = _writer(schema_id, schema)
        with self._lock:
            self._by_id[schema_id] = ws
        return ws

    def register(self, subject: str, schema: AvroSchema) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its id; cached.

        Raises:
            SchemaRegistryRejected: the registry refused it (e.g. incompatible with the subject).
            SchemaRegistryUnavailable: the registry could not be reached.
        """
        return self._subject_id("register", subject, schema)

    def lookup(self, subject: str, schema: AvroSchema) -> int:
        """The id of ``schema`` already registered under ``subject``; cached.

        Raises:
            SchemaRegistryRejected: not registered under that subject.
            SchemaRegistryUnavailable: the registry could not be reached.
        """
        return self._subject_id("lookup", subject, schema)

    def latest(self, subject: str) -> WriterSchema:
        """The latest version registered under ``subject`` (asks the registry every call)."""
        try:
            reg = self.client.get_latest_version(subject)
        except SchemaRegistryError as err:
            raise _refused(subject, err) from err
        except Exception as err:  # noqa: BLE001 - transport errors of any HTTP stack
            raise SchemaRegistryUnavailable(f"get latest of {subject}", str(err)) from err
        ws = self._by_id.get(reg.schema_id)
        return ws if ws is not None else self.add(reg.schema_id, reg.schema.schema_str)

    def _subject_id(self, op: str, subject: str, schema: AvroSchema) -> int:
        text = schema_text(schema)
        key = (op, subject, text)
        cached = self._ids.get(key)
        if cached is not None:
            return cached
        # sent as given: some registries (Apicurio) make a new version of reformatted text
        given = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
        request = Schema(given, "AVRO")
        try:
            if op == "register":
                schema_id = self.client.register_schema(subject, request)
            else:
                schema_id = self.client.lookup_schema(subject, request).schema_id
        except SchemaRegistryError as err:
            raise _refused(subject, err) from err
        except Exception as err:  # noqa: BLE001 - transport errors of any HTTP stack
            raise SchemaRegistryUnavailable(f"{op} subject {subject}", str(err)) from err
        with self._lock:
            self._ids[key] = schema_id
            if schema_id not in self._by_id:
                self._by_id[schema_id] = _writer(schema_id, text)
        return schema_id

    def _fetch(self, schema_id: int) -> WriterSchema:
        try:
            found = self.client.get_schema(schema_id)
        except SchemaRegistryError as err:
            if err.http_status_code is not None and 400 <= err.http_status_code < 500:
                raise UnknownSchemaId(f"registry: {err.error_message}", schema_id=schema_id) from err
            raise SchemaRegistryUnavailable(f"get schema {schema_id}", str(err)) from err
        except Exception as err:  # noqa: BLE001 - transport errors of any HTTP stack
            raise SchemaRegistryUnavailable(f"get schema {schema_id}", str(err)) from err
        kind = (getattr(found, "schema_type", None) or "AVRO").upper()
        if kind != "AVRO":
            raise UnknownSchemaId(f"schema id {schema_id} is a {kind} schema, not Avro",
                                  schema_id=schema_id)
        if getattr(found, "references", None):
            raise UnknownSchemaId(f"schema id {schema_id} has references, which are not supported",
                                  schema_id=schema_id)
        try:
            return _writer(schema_id, found.schema_str)
        except Exception as err:  # noqa: BLE001 - any parse failure means unusable
            raise UnknownSchemaId(f"schema id {schema_id} is not a valid Avro schema: {err}",
                                  schema_id=schema_id) from err


def _writer(schema_id: int, schema: AvroSchema) -> WriterSchema:
    as_json = json.loads(schema_text(schema))
    return WriterSchema(schema_id, as_json, parse(as_json), schema_text(as_json))


def _refused(subject: str, err: SchemaRegistryError) -> Exception:
    if err.http_status_code is not None and 400 <= err.http_status_code < 500:
        return SchemaRegistryRejected(subject, err.error_message, err.http_status_code,
                                      err.error_code)
    return SchemaRegistryUnavailable(f"subject {subject}", str(err))
