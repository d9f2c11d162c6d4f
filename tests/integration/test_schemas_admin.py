"""Catalog registration and compatibility checks against the real (Apicurio ccompat) registry."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from headwater.schemas.admin import (
    IncompatibleSchema,
    InvalidSchema,
    check_compatibility,
    list_subjects,
    register_catalog,
    register_schema,
)
from headwater.schemas.catalog import EVENT_TYPE_NAMES, event_type

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(schema_registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": schema_registry_url})


@pytest.fixture
def prefix(registry: SchemaRegistryClient, unique_name: Callable[[str], str]) -> Iterator[str]:
    name = unique_name("hw").replace(".", "-")
    yield name
    for info in list_subjects(registry, name):
        registry.delete_subject(info.subject)
        registry.delete_subject(info.subject, permanent=True)


def test_register_catalog_is_idempotent_and_listed(
    registry: SchemaRegistryClient, prefix: str, schema_registry_url: str
) -> None:
    registry_url = schema_registry_url
    first = register_catalog(registry, prefix)
    assert set(first) == set(EVENT_TYPE_NAMES)
    assert all(r.version == 1 and r.subject == event_type(n).subject(prefix) for n, r in first.items())
    again = register_catalog(SchemaRegistryClient({"url": registry_url}), prefix)  # no client cache
    assert {n: r.schema_id for n, r in again.items()} == {n: r.schema_id for n, r in first.items()}
    listed = {i.subject: i for i in list_subjects(registry, prefix)}
    assert set(listed) == {event_type(n).subject(prefix) for n in EVENT_TYPE_NAMES}
    assert all(i.versions == (1,) for i in listed.values())
    assert listed[first["order.created"].subject].latest_id == first["order.created"].schema_id


def test_incompatible_change_is_rejected_with_the_registry_reason(registry: SchemaRegistryClient, prefix: str) -> None:
    et = event_type("order.created")
    register_catalog(registry, prefix, [et])
    subject = et.subject(prefix)
    changed = json.loads(et.schema_str)
    changed["fields"].insert(-1, {"name": "tenantId", "type": "string", "doc": "no default: breaks BACKWARD"})
    with pytest.raises(IncompatibleSchema) as info:
        check_compatibility(registry, subject, json.dumps(changed))
    assert info.value.subject == subject and "tenantId" in info.value.reason
    with pytest.raises(IncompatibleSchema, match="tenantId"):
        register_schema(registry, subject, json.dumps(changed))
    assert [i.versions for i in list_subjects(registry, prefix)] == [(1,)]


def test_compatible_change_passes_and_registers_version_2(registry: SchemaRegistryClient, prefix: str) -> None:
    et = event_type("order.created")
    register_catalog(registry, prefix, [et])
    subject = et.subject(prefix)
    changed = json.loads(et.schema_str)
    changed["fields"].insert(-1, {"name": "tenantId", "type": ["null", "string"], "default": None, "doc": "ok"})
    text = json.dumps(changed, separators=(",", ":"))
    assert check_compatibility(registry, subject, text) is True
    reg = register_schema(registry, subject, text)
    assert reg.version == 2
    assert check_compatibility(registry, f"{prefix}.nothing-value", text) is False


def test_invalid_avro_is_rejected_before_the_registry(registry: SchemaRegistryClient, prefix: str) -> None:
    with pytest.raises(InvalidSchema):
        check_compatibility(registry, f"{prefix}.x-value", '{"type": "nonsense"}')
    with pytest.raises(InvalidSchema):
        check_compatibility(registry, f"{prefix}.x-value", '{not json')
