"""The domain event catalog: one Avro schema, one topic and one subject per event type.

Layout (see docs/catalog.md):

- topic ``<prefix>.<eventType>`` (default prefix ``events``), e.g. ``events.order.created``;
- subject ``<topic>-value`` (TopicNameStrategy), keys are plain UTF-8 strings (no key schema);
- the registered value schema is self-contained (no references): the envelope fields of
  ``avro/envelope.avsc`` followed by ``data``, the type's ``avro/<eventType>.avsc`` record
  holding ``payload`` and ``metadata``. The assembled record is named e.g.
  ``io.headwater.events.OrderCreatedEvent``.

Event type names are accepted in the platform's dotted spelling (``order.created``) and in the
CloudEvents reverse-DNS spelling some services use (``com.example.order.created``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from headwater.errors import HeadwaterError

__all__ = [
    "DEFAULT_PREFIX",
    "NAMESPACE",
    "EVENT_TYPE_NAMES",
    "EventType",
    "UnknownEventType",
    "assemble_schema",
    "catalog",
    "event_type",
    "normalize_event_type",
]

DEFAULT_PREFIX = "events"
NAMESPACE = "io.headwater.events"

#: Catalog order; the key field of each type is the dotted path of the value used as record key.
_KEY_FIELDS: dict[str, str] = {
    "user.registered": "userId",
    "order.created": "correlationId",
    "payment.succeeded": "correlationId",
    "payment.failed": "correlationId",
    "order.shipped": "correlationId",
    "order.delivered": "correlationId",
    "order.canceled": "correlationId",
    "inventory.updated": "data.payload.productId",
    "system.health.check": "data.payload.serviceName",
    "integration.webhook.received": "data.payload.source",
    "ml.model.inference": "data.payload.modelId",
}
EVENT_TYPE_NAMES: tuple[str, ...] = tuple(_KEY_FIELDS)

_CATEGORIES = ("user", "order", "payment", "inventory", "system", "integration", "ml")


class UnknownEventType(HeadwaterError):
    """An event type name that is not in the catalog.

    Attributes:
        name: the name as given.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"unknown event type '{name}' (known: {', '.join(EVENT_TYPE_NAMES)})"
        )


@dataclass(frozen=True)
class EventType:
    """One catalog entry.

    Attributes:
        name: dotted event type, e.g. ``order.created`` (the envelope's ``eventType`` value).
        schema: the full, self-contained Avro schema as a parsed JSON dict (do not mutate).
        schema_str: that schema as compact JSON: the exact text registered, so registering twice
            is idempotent (Apicurio treats differently formatted text as a new version).
        key_field: dotted path, in the event dict, of the value used as the record key
            (``correlationId``, ``userId`` or a ``data.payload.*`` field).
    """

    name: str
    schema: dict[str, Any] = field(repr=False)
    schema_str: str = field(repr=False)
    key_field: str

    def topic(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The topic events of this type go to: ``<prefix>.<name>``."""
        return f"{prefix}.{self.name}" if prefix else self.name

    def subject(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The registry subject of the value schema (TopicNameStrategy): ``<topic>-value``."""
        return f"{self.topic(prefix)}-value"

    def key_of(self, event: dict[str, Any]) -> str | None:
        """The record key of ``event`` per :attr:`key_field` (None when that field is null)."""
        return lookup_path(event, self.key_field)

    @property
    def record_name(self) -> str:
        """Fully qualified name of the assembled record, e.g. ``io.headwater.events.OrderCreatedEvent``."""
        return f"{self.schema['namespace']}.{self.schema['name']}"


def lookup_path(event: dict[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in a nested dict, None when any step is missing or null."""
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def normalize_event_type(name: str) -> str:
    """Map any accepted spelling to the catalog name.

    ``order.created``, ``com.example.order.created`` and ``io.acme.shop.ORDER.CREATED`` all give
    ``order.created``: a reverse-DNS prefix is dropped by finding the first segment that is a known
    category. Names that are not in the catalog are returned lower-cased and stripped of such a
    prefix when one is recognisable, unchanged otherwise (use :func:`event_type` to validate).
    """
    cleaned = name.strip().lower()
    if cleaned in _KEY_FIELDS:
        return cleaned
    parts = cleaned.split(".")
    for i, part in enumerate(parts):
        candidate = ".".join(parts[i:])
        if candidate in _KEY_FIELDS:
            return candidate
        if part in _CATEGORIES and i > 0:
            return candidate
    return cleaned


def event_type(name: str) -> EventType:
    """The catalog entry for ``name`` (either spelling); raises :class:`UnknownEventType`."""
    entry = catalog().get(normalize_event_type(name))
    if entry is None:
        raise UnknownEventType(name)
    return entry


@cache
def catalog() -> dict[str, EventType]:
    """Every event type by name, in catalog order (parsed once, cached)."""
    envelope = _load("envelope")
    return {
        name: _entry(name, assemble_schema(envelope, _load(name)), key)
        for name, key in _KEY_FIELDS.items()
    }


def assemble_schema(envelope: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The self-contained schema of one type: the envelope's fields plus ``data``.

    ``data`` is the type's ``<eventType>.avsc`` record (named ``<Type>Data``); the result is named
    ``<Type>Event`` in the envelope's namespace and documented with the data record's doc.
    """
    base = data["name"].removesuffix("Data")
    return {
        "type": "record",
        "name": f"{base}Event",
        "namespace": envelope["namespace"],
        "doc": data.get("doc", ""),
        "fields": [
            *envelope["fields"],
            {"name": "data", "type": data, "doc": "Event body: payload and metadata."},
        ],
    }


def _entry(name: str, schema: dict[str, Any], key_field: str) -> EventType:
    text = json.dumps(schema, separators=(",", ":"))
    return EventType(name=name, schema=schema, schema_str=text, key_field=key_field)


def _load(stem: str) -> dict[str, Any]:
    text = resources.files("headwater.schemas").joinpath("avro").joinpath(f"{stem}.avsc").read_text("utf-8")
    return json.loads(text)
