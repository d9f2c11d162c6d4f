"""The event catalog: schemas parse, round-trip, evolve BACKWARD, names normalise."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import fastavro
import pytest

from headwater.generator import GeneratorConfig, generate
from headwater.generator.encode import WireEncoder
from headwater.schemas.catalog import (
    EVENT_TYPE_NAMES,
    UnknownEventType,
    catalog,
    event_type,
    normalize_event_type,
)


@pytest.fixture(scope="module")
def one_of_each() -> dict[str, dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for ev in generate(GeneratorConfig(seed=7), 5000):
        seen.setdefault(ev.event_type, ev.event)
    assert set(seen) == set(EVENT_TYPE_NAMES)
    return seen


def _fields(schema: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(schema, list):
        for s in schema:
            out += _fields(s)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for f in schema["fields"]:
                out.append(f)
                out += _fields(f["type"])
        elif schema.get("type") == "array":
            out += _fields(schema["items"])
    return out


@pytest.mark.parametrize("name", EVENT_TYPE_NAMES)
def test_schema_parses_is_documented_and_self_contained(name: str) -> None:
    et = event_type(name)
    fastavro.parse_schema(json.loads(et.schema_str))
    fields = _fields(et.schema)
    assert [f["name"] for f in et.schema["fields"]][:4] == ["eventId", "eventType", "eventSource", "timestamp"]
    assert et.schema["fields"][-1]["name"] == "data"
    assert all(f.get("doc") for f in fields), [f["name"] for f in fields if not f.get("doc")]
    assert et.schema["fields"][3]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert json.loads(et.schema_str) == et.schema


def test_topics_subjects_and_keys() -> None:
    et = event_type("order.created")
    assert et.topic() == "events.order.created"
    assert et.subject("shop") == "shop.order.created-value"
    assert et.key_field == "correlationId"
    assert event_type("inventory.updated").key_of({"data": {"payload": {"productId": "p-1"}}}) == "p-1"
    assert list(catalog()) == list(EVENT_TYPE_NAMES) and len(EVENT_TYPE_NAMES) == 11


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("order.created", "order.created"),
        ("com.example.order.created", "order.created"),
        ("io.acme.shop.ORDER.CREATED", "order.created"),
        ("com.example.system.health.check", "system.health.check"),
        (" ml.model.inference ", "ml.model.inference"),
        ("com.example.order.exploded", "order.exploded"),
    ],
)
def test_cloudevents_names_normalise(given: str, expected: str) -> None:
    assert normalize_event_type(given) == expected


def test_unknown_type_is_a_typed_error() -> None:
    with pytest.raises(UnknownEventType, match="order.exploded"):
        event_type("com.example.order.exploded")


@pytest.mark.parametrize("name", EVENT_TYPE_NAMES)
def test_generated_event_round_trips(name: str, one_of_each: dict[str, dict[str, Any]]) -> None:
    schema = fastavro.parse_schema(event_type(name).schema)
    event = one_of_each[name]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, event)
    back = fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), schema)
    back["eventId"] = str(back["eventId"])
    back["timestamp"] = int(back["timestamp"].timestamp() * 1000)
    if name == "order.shipped":
        d = back["data"]["payload"]["estimatedDelivery"]
        back["data"]["payload"]["estimatedDelivery"] = int(d.timestamp() * 1000)
    assert back == event


@pytest.mark.parametrize("name", EVENT_TYPE_NAMES)
def test_wire_encoder_matches_fastavro_with_logical_types(name: str, one_of_each: dict[str, dict[str, Any]]) -> None:
    framed = WireEncoder({name: 258})
    value = framed.encode(name, [one_of_each[name]])[0]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(event_type(name).schema), one_of_each[name])
    assert value == b"\x00\x00\x00\x01\x02" + buf.getvalue()


def test_backward_evolution_adding_defaulted_fields(one_of_each: dict[str, dict[str, Any]]) -> None:
    v1 = event_type("order.created").schema
    v2 = copy.deepcopy(v1)
    v2["fields"].insert(-1, {"name": "tenant", "type": ["null", "string"], "default": None, "doc": "x"})
    payload = v2["fields"][-1]["type"]["fields"][0]["type"]
    payload["fields"].append({"name": "discount", "type": "double", "default": 0.0, "doc": "x"})
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(v1), one_of_each["order.created"])
    new = fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), fastavro.parse_schema(v1), fastavro.parse_schema(v2))
    assert new["tenant"] is None and new["data"]["payload"]["discount"] == 0.0

    payload["fields"].append({"name": "mandatory", "type": "string", "doc": "no default"})
    with pytest.raises(fastavro.read.SchemaResolutionError):
        fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), fastavro.parse_schema(v1), fastavro.parse_schema(v2))


def test_enums_have_defaults_for_evolution() -> None:
    enums = []

    def walk(s: Any) -> None:
        if isinstance(s, list):
            for x in s:
                walk(x)
        elif isinstance(s, dict):
            if s.get("type") == "enum":
                enums.append(s)
            for v in s.values():
                walk(v)

    for et in catalog().values():
        walk(et.schema)
    assert enums and all(e.get("default") in e["symbols"] for e in enums)
