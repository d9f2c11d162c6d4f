"""A schema cache over a Confluent-compatible Schema Registry client.

The hot path never talks to the registry: a writer schema is fetched by id once, parsed once
(``fastavro.parse_schema``) and kept for the life of the process (ids are immutable in the registry).
Ids the registry does not know are remembered for ``negative_ttl_s`` seconds, so a stream of
garbage with random ids costs at most one registry call per id per TTL. Registrations and lookups
are cached per (subject, schema text).

Transient failures (transport errors, timeouts, HTTP 5xx/408/429) are not facts about a record:
every call is retried with bounded exponential backoff for up to ``transient_retry_ms``, then
raises :class:`SchemaRegistryUnavailable`; nothing about them is cached. Only a real "not found"
(HTTP 404) makes an id unknown (:class:`UnknownSchemaId`) or a subject missing
(:class:`SubjectNotFound`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from headwater.schemas.errors import (
    SchemaRegistryRejected,
    SchemaRegistryUnavailable,
    SubjectNotFound,
    UnknownSchemaId,
)

AvroSchema = dict[str, Any] | str
"""An Avro schema as parsed JSON (a dict) or as JSON text."""

DEFAULT_TRANSIENT_RETRY_MS = 30_000
"""How long transient registry failures are retried by default (``settings.transient_retry_ms``)."""
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
_TRANSIENT_STATUS = {408, 429}
T = TypeVar("T")


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
        transient_retry_ms: int = DEFAULT_TRANSIENT_RETRY_MS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """
        Args:
            client: a ``SchemaRegistryClient`` or anything with the same methods.
            negative_ttl_s: how long an unknown id is answered from the cache.
            transient_retry_ms: budget for retrying one call through transient failures
                (backoff from 50 ms doubling to 2 s); 0 tries once.
            clock: monotonic seconds (injectable for tests).
            sleep: waits between retries (injectable for tests).
        """
        self.client = client
        self.negative_ttl_s = negative_ttl_s
        self.transient_retry_ms = transient_retry_ms
        self._clock = clock
        self._sleep = sleep
        self._by_id: dict[int, WriterSchema] = {}
        self._unknown: dict[int, tuple[float, str]] = {}
        self._ids: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(
        cls, url: str, *, transient_retry_ms: int = DEFAULT_TRANSIENT_RETRY_MS, **conf: Any
    ) -> SchemaCache:
        """A cache over a new ``SchemaRegistryClient({"url": url, **conf})``.

        The client's own retries are off (``max.retries: 0`` unless ``conf`` sets it): the
        cache's ``transient_retry_ms`` budget is the one bound.
        """
        client = SchemaRegistryClient({"url": url, "max.retries": 0, **conf})
        return cls(client, transient_retry_ms=transient_retry_ms)

    def writer(self, schema_id: int) -> WriterSchema:
        """The writer schema registered with ``schema_id``.

        Raises:
            UnknownSchemaId: the registry has no such id (HTTP 404; cached for
                ``negative_ttl_s``), or the schema is not a usable Avro schema.
            SchemaRegistryUnavailable: no answer within ``transient_retry_ms``, or a refusal
                other than "not found" (e.g. HTTP 401); nothing cached.
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
        """The latest version registered under ``subject`` (asks the registry every call).

        Raises:
            SubjectNotFound: no such subject.
            SchemaRegistryRejected: another refusal (e.g. HTTP 401/403).
            SchemaRegistryUnavailable: still unreachable after ``transient_retry_ms``.
        """
        try:
            reg = self._retrying(f"get latest of {subject}",
                                 lambda: self.client.get_latest_version(subject))
        except SchemaRegistryError as err:
            raise _refused(subject, err) from err
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

        def call() -> int:
            if op == "register":
                return self.client.register_schema(subject, request)
            return self.client.lookup_schema(subject, request).schema_id

        try:
            schema_id = self._retrying(f"{op} subject {subject}", call)
        except SchemaRegistryError as err:
            raise _refused(subject, err) from err
        with self._lock:
            self._ids[key] = schema_id
            if schema_id not in self._by_id:
                self._by_id[schema_id] = _writer(schema_id, text)
        return schema_id

    def _retrying(self, operation: str, call: Callable[[], T]) -> T:
        """``call()``, retried through transient failures for up to ``transient_retry_ms``.

        Raises:
            SchemaRegistryError: a definite answer (HTTP 4xx other than 408/429), not retried.
            SchemaRegistryUnavailable: still failing transiently when the budget ran out.
        """
        deadline = self._clock() + self.transient_retry_ms / 1000
        delay, attempts = FIRST_BACKOFF_S, 0
        while True:
            attempts += 1
            try:
                return call()
            except SchemaRegistryError as err:
                if not _transient(err):
                    raise
                last: Exception = err
            except Exception as err:  # noqa: BLE001 - transport errors of any HTTP stack
                last = err
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise SchemaRegistryUnavailable(
                    operation, f"{last} ({attempts} attempt(s) in "
                    f"{self.transient_retry_ms / 1000:g}s)") from last
            self._sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _fetch(self, schema_id: int) -> WriterSchema:
        try:
            found = self._retrying(f"get schema {schema_id}",
                                   lambda: self.client.get_schema(schema_id))
        except SchemaRegistryError as err:
            if err.http_status_code == 404:
                raise UnknownSchemaId(f"registry: {err.error_message}", schema_id=schema_id) from err
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


def _transient(err: SchemaRegistryError) -> bool:
    status = err.http_status_code
    return not isinstance(status, int) or status < 400 or status >= 500 or status in _TRANSIENT_STATUS


def _refused(subject: str, err: SchemaRegistryError) -> Exception:
    if err.http_status_code == 404:
        return SubjectNotFound(subject, err.error_message, err.http_status_code, err.error_code)
    return SchemaRegistryRejected(subject, err.error_message, err.http_status_code, err.error_code)
