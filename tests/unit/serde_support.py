"""Shared helpers of the serde tests: an order.created-shaped schema, records, a fake registry."""

from __future__ import annotations

import copy
import functools
import io
import json
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from headwater.schemas.registry import SchemaCache

ORDER_V1: dict[str, Any] = {
    "type": "record", "name": "OrderCreated", "namespace": "headwater.test",
    "fields": [
        {"name": "eventId", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "eventType", "type": "string"},
        {"name": "eventSource", "type": "string"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "version", "type": "int"},
        {"name": "correlationId", "type": ["null", "string"], "default": None},
        {"name": "userId", "type": ["null", "string"], "default": None},
        {"name": "environment", "type": {"type": "enum", "name": "Environment",
                                         "symbols": ["dev", "staging", "prod"], "default": "prod"}},
        {"name": "data", "type": {"type": "record", "name": "OrderData", "fields": [
            {"name": "payload", "type": {"type": "record", "name": "OrderPayload", "fields": [
                {"name": "orderId", "type": "string"},
                {"name": "items", "type": {"type": "array", "items": {
                    "type": "record", "name": "Item", "fields": [
                        {"name": "productId", "type": "string"},
                        {"name": "quantity", "type": "int"},
                        {"name": "price", "type": "double"}]}}},
                {"name": "total", "type": "double"},
                {"name": "couponCode", "type": ["null", "string"], "default": None},
                {"name": "channel", "type": {"type": "enum", "name": "Channel",
                                             "symbols": ["WEB", "APP", "POS"], "default": "WEB"}},
            ]}},
            {"name": "metadata", "type": {"type": "map", "values": "string"}},
        ]}},
    ],
}


def order_v2(promote: bool = True) -> dict[str, Any]:
    """v1 plus defaulted fields (top level, nested record, array items); with ``promote`` also
    int->long promotions (then v1 cannot read v2)."""
    s = copy.deepcopy(ORDER_V1)
    s["fields"].append({"name": "region", "type": "string", "default": "eu-west-1"})
    payload = s["fields"][8]["type"]["fields"][0]["type"]
    payload["fields"].append({"name": "priority", "type": ["null", "int"], "default": None})
    item = payload["fields"][1]["type"]["items"]
    item["fields"].append({"name": "discount", "type": "double", "default": 0.0})
    if promote:
        s["fields"][4]["type"] = "long"
        item["fields"][1]["type"] = "long"
    return s


def order(i: int) -> dict[str, Any]:
    """A deterministic v1 order record."""
    return {
        "eventId": str(uuid.UUID(int=i * 7919 + 1)),
        "eventType": "order.created",
        "eventSource": "checkout",
        "timestamp": datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=i * 1013),
        "version": 1,
        "correlationId": None if i % 3 == 0 else f"corr-{i}",
        "userId": f"user-{i % 97}",
        "environment": ["dev", "staging", "prod"][i % 3],
        "data": {
            "payload": {
                "orderId": f"o-{i}",
                "items": [{"productId": f"p-{j}", "quantity": j + 1, "price": 9.5 + j}
                          for j in range(i % 4)],
                "total": 10.0 * (i % 4),
                "couponCode": "SAVE" if i % 5 == 0 else None,
                "channel": ["WEB", "APP", "POS"][i % 3],
            },
            "metadata": {"ip": f"10.0.0.{i % 255}", "ua": "test"} if i % 2 else {},
        },
    }


def encode(schema: dict[str, Any], schema_id: int, record: dict[str, Any]) -> bytes:
    """fastavro's framed encoding of ``record``."""
    bio = io.BytesIO()
    bio.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(bio, fastavro.parse_schema(copy.deepcopy(schema)), record)
    return bio.getvalue()


class FakeRegistry:
    """A registry client in memory that counts every call.

    ``fail_next`` makes the next N calls fail as an unreachable registry would (each failure
    pops the exception to raise: a transport error or a 5xx ``SchemaRegistryError``).
    """

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[tuple[str, str], int] = {}
        self.latest: dict[str, int] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail_next: list[Exception] = []

    def add(self, schema_id: int, schema: dict[str, Any], subject: str | None = None) -> None:
        self.schemas[schema_id] = json.dumps(schema)
        if subject is not None:
            self.latest[subject] = schema_id

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def get_schema(self, schema_id: int) -> Schema:
        self.calls.append(("get_schema", schema_id))
        self._maybe_fail()
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found")
        return Schema(self.schemas[schema_id], "AVRO")

    def register_schema(self, subject_name: str, schema: Schema) -> int:
        self.calls.append(("register_schema", subject_name))
        self._maybe_fail()
        key = (subject_name, schema.schema_str)
        if key not in self.subjects:
            self.subjects[key] = 1000 + len(self.subjects)
            self.schemas[self.subjects[key]] = schema.schema_str
            self.latest[subject_name] = self.subjects[key]
        return self.subjects[key]

    def lookup_schema(self, subject_name: str, schema: Schema) -> Any:
        raise NotImplementedError

    def get_latest_version(self, subject_name: str) -> Any:
        self.calls.append(("get_latest_version", subject_name))
        self._maybe_fail()
        if subject_name not in self.latest:
            raise SchemaRegistryError(404, 40401, f"Subject '{subject_name}' not found.")
        sid = self.latest[subject_name]
        return SimpleNamespace(schema_id=sid, subject=subject_name, version=1,
                               schema=Schema(self.schemas[sid], "AVRO"))


def fake_cache(*schemas: tuple[int, dict[str, Any]]) -> tuple[SchemaCache, FakeRegistry]:
    """A cache over a :class:`FakeRegistry` holding ``schemas`` as (id, schema)."""
    client = FakeRegistry()
    for sid, schema in schemas:
        client.add(sid, schema)
    return SchemaCache(client), client


def avro_values(schema: Any) -> Any:
    """A hypothesis strategy of valid values (fastavro writer input) of an expanded Avro schema."""
    from hypothesis import strategies as st

    def conv(s: Any) -> Any:
        if isinstance(s, list):
            return st.one_of([conv(b) for b in s])
        if isinstance(s, str):
            s = {"type": s}
        if isinstance(s["type"], (dict, list)):
            return conv(s["type"])
        t, lt = s["type"], s.get("logicalType")
        if t == "long" and lt == "timestamp-millis":
            return st.integers(0, 4102444800000).map(
                lambda ms: datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms))
        if t == "string" and lt == "uuid":
            return st.uuids().map(str)
        simple = {
            "null": st.none(), "boolean": st.booleans(),
            "int": st.integers(-2**31, 2**31 - 1), "long": st.integers(-2**63, 2**63 - 1),
            "float": st.floats(width=32, allow_nan=False), "double": st.floats(allow_nan=False),
            "string": st.text(max_size=12), "bytes": st.binary(max_size=12),
        }
        if t in simple:
            return simple[t]
        if t == "fixed":
            return st.binary(min_size=s["size"], max_size=s["size"])
        if t == "enum":
            return st.sampled_from(s["symbols"])
        if t == "array":
            return st.lists(conv(s["items"]), max_size=4)
        if t == "map":
            return st.dictionaries(st.text(max_size=6), conv(s["values"]), max_size=4)
        if t in ("record", "error"):
            return st.fixed_dictionaries({f["name"]: conv(f["type"]) for f in s["fields"]})
        raise ValueError(f"no strategy for {s}")

    from fastavro.schema import expand_schema
    return conv(expand_schema(copy.deepcopy(schema)))


def catalog_events(name: str, n: int, seed: int = 11) -> list[dict[str, Any]]:
    """The first ``n`` generated events of catalog type ``name`` (deterministic for ``seed``)."""
    return copy.deepcopy(_catalog_events(name, n, seed))


@functools.cache
def _catalog_events(name: str, n: int, seed: int) -> list[dict[str, Any]]:
    from headwater.generator.model import GeneratorConfig
    from headwater.generator.pipeline import generate

    out: list[dict[str, Any]] = []
    for event in generate(GeneratorConfig(seed=seed, users=max(n, 10))):
        if event.event_type == name:
            out.append(event.event)
            if len(out) == n:
                return out
    raise AssertionError(f"the generator gave fewer than {n} {name} events")


def catalog_payloads(name: str, schema_id: int, n: int, seed: int = 11) -> list[bytes]:
    """Framed payloads of ``n`` generated ``name`` events written with ``schema_id``."""
    from headwater.generator.encode import WireEncoder

    return WireEncoder({name: schema_id}).encode(name, catalog_events(name, n, seed))
