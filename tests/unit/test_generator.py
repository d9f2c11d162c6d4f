"""The generator: deterministic, coherent flows, honoured fault fractions, schema-valid events."""

from __future__ import annotations

import io
import struct
from collections import defaultdict

import fastavro
import pytest

from headwater.errors import ConfigError
from headwater.generator import GeneratedEvent, GeneratorConfig, KeyChoice, generate, key_function
from headwater.generator.encode import WireEncoder
from headwater.generator.faults import ACCEPTED_CURRENCIES, UNKNOWN_SCHEMA_ID
from headwater.generator.pipeline import generate_batches
from headwater.generator.producer import _Stage, key_column
from headwater.schemas.catalog import EVENT_TYPE_NAMES, catalog, event_type

N = 20_000
FLOW_TYPES = {"payment.succeeded", "payment.failed", "order.shipped", "order.delivered", "order.canceled"}
TRANSITIONS = {
    ("PENDING", "PENDING"), ("PENDING", "PAID"), ("PENDING", "CANCELED"),
    ("PAID", "SHIPPED"), ("PAID", "CANCELED"), ("SHIPPED", "DELIVERED"),
}


@pytest.fixture(scope="module")
def clean() -> list[GeneratedEvent]:
    return list(generate(GeneratorConfig(seed=11), N))


@pytest.fixture(scope="module")
def faulty() -> list[GeneratedEvent]:
    cfg = GeneratorConfig(seed=11, invalid_fraction=0.1, out_of_order_fraction=0.05, late_fraction=0.02, late_by_ms=30_000)
    return list(generate(cfg, N))


def test_same_seed_same_stream_other_seed_other_stream(clean: list[GeneratedEvent]) -> None:
    again = [e.event for e in generate(GeneratorConfig(seed=11), N)]
    assert again == [e.event for e in clean]
    other = [e.event for e in generate(GeneratorConfig(seed=12), 200)]
    assert other != [e.event for e in clean[:200]]


def test_exact_count_and_every_type_present(clean: list[GeneratedEvent]) -> None:
    assert len(clean) == N
    assert {e.event_type for e in clean} == set(EVENT_TYPE_NAMES)
    assert all(e.event["eventType"] == e.event_type for e in clean)


def test_fault_stages_do_not_change_the_flows(clean: list[GeneratedEvent], faulty: list[GeneratedEvent]) -> None:
    assert sorted(e.event["eventId"] for e in faulty) == sorted(e.event["eventId"] for e in clean)


@pytest.mark.parametrize("fixture", ["clean", "faulty"])
def test_every_event_is_schema_valid(fixture: str, request: pytest.FixtureRequest) -> None:
    parsed = {n: fastavro.parse_schema(t.schema) for n, t in catalog().items()}
    for e in request.getfixturevalue(fixture):
        assert fastavro.validation.validate(e.event, parsed[e.event_type], raise_errors=True)


def test_flows_are_coherent(clean: list[GeneratedEvent]) -> None:
    flows: dict[str, list[GeneratedEvent]] = defaultdict(list)
    for e in clean:
        if e.event_type == "order.created" or e.event_type in FLOW_TYPES:
            flows[e.event["correlationId"]].append(e)
    completed = 0
    for corr, events in flows.items():
        events.sort(key=lambda e: (e.timestamp, e.event_type != "order.created"))
        first = events[0]
        assert first.event_type == "order.created", corr
        order_id = first.event["data"]["payload"]["orderId"]
        status = "PENDING"
        for e in events[1:]:
            assert e.timestamp >= first.timestamp
            assert e.event["data"]["payload"]["orderId"] == order_id
            assert e.event["userId"] == first.event["userId"]
            new = e.event["data"]["payload"]["status"]
            assert (status, new) in TRANSITIONS, (corr, status, new)
            if e.event_type == "order.canceled":
                assert e.event["data"]["payload"]["previousStatus"] == status
            status = new
        completed += status in {"DELIVERED", "CANCELED"}
    assert completed > 0.8 * len(flows)


def test_users_register_before_they_order(clean: list[GeneratedEvent]) -> None:
    registered: set[str] = set()
    for e in sorted(clean, key=lambda e: e.timestamp):
        if e.event_type == "user.registered":
            registered.add(e.event["userId"])
        elif e.event_type == "order.created":
            assert e.event["data"]["payload"]["userId"] in registered


def test_orders_are_valid_and_stock_levels_chain(clean: list[GeneratedEvent]) -> None:
    stock: dict[str, int] = {}
    for e in clean:
        p = e.event["data"]["payload"]
        if e.event_type == "order.created":
            assert p["items"] and all(i["quantity"] > 0 for i in p["items"])
            assert abs(sum(i["quantity"] * i["price"] for i in p["items"]) - p["totalAmount"]) < 0.01
            assert p["currency"] in ACCEPTED_CURRENCIES
        elif e.event_type == "inventory.updated":
            if p["productId"] in stock:
                assert p["previousStockLevel"] == stock[p["productId"]]
            assert p["newStockLevel"] >= 0
            stock[p["productId"]] = p["newStockLevel"]


def test_health_spikes_and_confidence_drift_happen(clean: list[GeneratedEvent]) -> None:
    checks = [e.event["data"]["payload"] for e in clean if e.event_type == "system.health.check"]
    bad = [c for c in checks if c["status"] != "HEALTHY"]
    assert 0 < len(bad) < 0.5 * len(checks)
    assert min(c["responseTime"] for c in bad) > max(c["responseTime"] for c in checks if c["status"] == "HEALTHY")
    confidences = [e.event["data"]["payload"]["confidence"] for e in clean if e.event_type == "ml.model.inference"]
    assert sum(c < 0.5 for c in confidences) > 0.01 * len(confidences)


def test_invalid_fraction_is_honoured(faulty: list[GeneratedEvent]) -> None:
    invalid = [e for e in faulty if e.invalid]
    assert 0.08 * N < len(invalid) < 0.12 * N
    kinds = {e.invalid for e in invalid}
    assert {"empty-items", "total-mismatch", "unknown-currency", "unknown-user", "negative-stock"} <= kinds
    for e in invalid:
        p = e.event["data"]["payload"]
        if e.invalid == "empty-items":
            assert p["items"] == []
        elif e.invalid == "unknown-currency":
            assert p["currency"] not in ACCEPTED_CURRENCIES


def test_disorder_and_lateness(faulty: list[GeneratedEvent]) -> None:
    late = [e for e in faulty if e.delayed == "late"]
    ooo = [e for e in faulty if e.delayed == "out-of-order"]
    assert 0.015 * N < len(late) < 0.025 * N and 0.04 * N < len(ooo) < 0.06 * N
    assert all(e.lateness_ms == 0 for e in faulty if e.delayed is None)
    assert sum(e.lateness_ms >= 30_000 for e in late) > 0.9 * len(late)
    # released once the stream passed them by their delay: bounded up to the gap to the next event
    assert sum(e.lateness_ms <= 2_100 for e in ooo) > 0.95 * len(ooo)
    high = 0
    for e in faulty:
        assert e.lateness_ms == max(0, high - e.timestamp)
        high = max(high, e.timestamp)


def _decode(value: bytes, by_id: dict[int, object]) -> dict | None:
    """The event in a framed record, or None when it does not decode exactly."""
    if value[:1] != b"\x00" or len(value) <= 5:
        return None
    schema_id = struct.unpack(">I", value[1:5])[0]
    if schema_id not in by_id:
        return None
    buf = io.BytesIO(value[5:])
    try:
        event = fastavro.schemaless_reader(buf, by_id[schema_id])
    except Exception:  # noqa: BLE001 - any decode failure counts as malformed
        return None
    return event if buf.tell() == len(value) - 5 else None


def _produced(cfg: GeneratorConfig, n: int, ids: dict[str, int]) -> list[tuple[str, bytes, str | None]]:
    stage = _Stage(cfg, "x", WireEncoder(ids))
    return [(topic, v, k) for b in generate_batches(cfg, n) for topic, values, keys in stage.records(b, None)
            for v, k in zip(values, keys)]


def test_produced_bytes_decode_to_the_generated_events() -> None:
    """What the producer sends (columnar-encoded) decodes with fastavro to exactly the events."""
    cfg = GeneratorConfig(seed=9, invalid_fraction=0.1, out_of_order_fraction=0.05)
    ids = {n: i + 1 for i, n in enumerate(EVENT_TYPE_NAMES)}
    by_id = {ids[n]: fastavro.parse_schema(_strip(t.schema)) for n, t in catalog().items()}
    events = list(generate(cfg, 5000))
    produced = _produced(cfg, 5000, ids)
    assert len(produced) == len(events)
    decoded = sorted((_decode(v, by_id) for _, v, _ in produced), key=lambda e: e["eventId"])
    assert decoded == sorted((e.event for e in events), key=lambda e: e["eventId"])
    keys = {e.event["eventId"]: key_function(KeyChoice.DEFAULT)(event_type(e.event_type), e.event) for e in events}
    assert all(keys[_decode(v, by_id)["eventId"]] == k for _, v, k in produced)


def _strip(schema: object) -> object:  # timestamps/uuids as the generator holds them (ints, strings)
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip(s) for s in schema]
    return schema


def test_malformed_records_never_decode() -> None:
    cfg = GeneratorConfig(seed=5, malformed_fraction=0.2)
    ids = {n: i + 1 for i, n in enumerate(EVENT_TYPE_NAMES)}
    by_id = {ids[n]: fastavro.parse_schema(t.schema) for n, t in catalog().items()}
    events = list(generate(cfg, 3000))
    produced = _produced(cfg, 3000, ids)
    bad = [e for e in events if e.malformed]
    assert 0.16 * 3000 < len(bad) < 0.24 * 3000
    assert {e.malformed for e in bad} == {"random-bytes", "unknown-schema-id", "truncated"}
    decoded = sum(_decode(v, by_id) is not None for _, v, _ in produced)
    assert decoded == len(events) - len(bad)
    assert sum(v[1:5] == struct.pack(">I", UNKNOWN_SCHEMA_ID) for _, v, _ in produced) >= sum(
        e.malformed == "unknown-schema-id" for e in bad
    )


def test_key_choices(clean: list[GeneratedEvent]) -> None:
    order = next(e for e in clean if e.event_type == "order.created")
    et = event_type("order.created")
    assert key_function(KeyChoice.DEFAULT)(et, order.event) == order.event["correlationId"]
    assert key_function(KeyChoice.USER_ID)(et, order.event) == order.event["userId"]
    assert key_function(KeyChoice.EVENT_ID)(et, order.event) == order.event["eventId"]
    assert key_function(KeyChoice.NONE)(et, order.event) is None
    health = next(e for e in clean if e.event_type == "system.health.check")
    assert key_function(KeyChoice.DEFAULT)(event_type("system.health.check"), health.event) == health.event["data"]["payload"]["serviceName"]
    assert key_column(KeyChoice.DEFAULT, event_type("inventory.updated")) == "payload.productId"
    assert key_column(KeyChoice.USER_ID, et) == "userId" and key_column(KeyChoice.NONE, et) is None


def test_bad_config_is_a_typed_error() -> None:
    with pytest.raises(ConfigError, match="invalid_fraction"):
        GeneratorConfig(invalid_fraction=1.5)
    with pytest.raises(ConfigError, match="users"):
        GeneratorConfig(users=0)
