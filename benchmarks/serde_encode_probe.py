"""Probe: cost per record of encoding an order.created envelope frame to Confluent-framed Avro.

Run (one core, no broker; the registry is confluent-kafka's in-process ``mock://`` client):

    cd /work/main && PYTHONPATH=src taskset -c 0 /tmp/hwvenv/bin/python benchmarks/serde_encode_probe.py

Options: ``--sizes 100,1000,10000`` ``--repeat 5`` ``--json out.json``. Paths measured per batch
size (best of ``--repeat`` runs, us/record):

- ``columnar``: ``headwater.schemas.columnar_encode.encode_frame(frame, schema, schema_id)``;
- ``columnar_buffer``: ``encode_frame_buffer`` (one contiguous buffer + offsets, no bytes objects);
- ``fastavro_to_dicts``: ``frame.to_dicts()`` then per-record ``fastavro.schemaless_writer``
  with the 5-byte header;
- ``confluent``: ``frame.to_dicts()`` then confluent-kafka's ``AvroSerializer`` per record.
  ``to_dicts`` is included in both per-record paths: it is what a frame-based engine must pay
  to use them; ``confluent_dicts_only`` excludes it (dicts prepared beforehand).

Every columnar payload is checked byte-identical to fastavro's before timing.
The schema is the built-in :data:`ORDER_CREATED`: the catalog's order.created shape (envelope +
data{payload{items[]}, metadata} with enums, a map and ["null", T] unions); the catalog schemas
themselves are covered byte-for-byte by tests/unit/test_columnar_encode.py.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import fastavro
import polars as pl
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from headwater.schemas.columnar_encode import encode_frame, encode_frame_buffer
from headwater.schemas.layout import frame_schema

ORDER_CREATED: dict[str, Any] = {
    "type": "record", "name": "OrderCreated", "namespace": "headwater.bench",
    "fields": [
        {"name": "eventId", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "eventType", "type": "string"},
        {"name": "eventSource", "type": "string"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "version", "type": "string"},
        {"name": "correlationId", "type": ["null", "string"], "default": None},
        {"name": "userId", "type": ["null", "string"], "default": None},
        {"name": "sessionId", "type": ["null", "string"], "default": None},
        {"name": "environment", "type": {"type": "enum", "name": "Environment",
                                         "symbols": ["dev", "staging", "prod"], "default": "prod"}},
        {"name": "region", "type": ["null", "string"], "default": None},
        {"name": "data", "type": {"type": "record", "name": "OrderCreatedData", "fields": [
            {"name": "payload", "type": {"type": "record", "name": "OrderCreatedPayload", "fields": [
                {"name": "orderId", "type": "string"},
                {"name": "userId", "type": "string"},
                {"name": "items", "type": {"type": "array", "items": {
                    "type": "record", "name": "OrderItem", "fields": [
                        {"name": "productId", "type": "string"},
                        {"name": "quantity", "type": "int"},
                        {"name": "price", "type": "double"}]}}},
                {"name": "totalAmount", "type": "double"},
                {"name": "currency", "type": {"type": "enum", "name": "Currency",
                                              "symbols": ["USD", "EUR", "GBP", "JPY"], "default": "USD"}}]}},
            {"name": "metadata", "type": {"type": "record", "name": "OrderCreatedMetadata", "fields": [
                {"name": "paymentMethod", "type": ["null", "string"], "default": None},
                {"name": "shippingAddress", "type": ["null", "string"], "default": None},
                {"name": "attributes", "type": {"type": "map", "values": "string"}, "default": {}}]}}]}},
    ],
}


def make_records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` order.created envelopes (built-in schema shape), ~300 bytes encoded each."""
    rnd = random.Random(seed)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    out = []
    for i in range(n):
        items = [{"productId": f"prod-{rnd.randrange(5000):05d}", "quantity": rnd.randint(1, 5),
                  "price": round(rnd.uniform(1, 300), 2)} for _ in range(rnd.randint(1, 4))]
        user = f"user-{rnd.randrange(100_000):06d}"
        out.append({
            "eventId": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "eventType": "order.created", "eventSource": "order-service",
            "timestamp": t0 + timedelta(milliseconds=i * 37), "version": "1.0",
            "correlationId": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "userId": user, "sessionId": None if i % 5 == 0 else f"sess-{rnd.randrange(10**9)}",
            "environment": "prod", "region": rnd.choice(["eu-west-1", "us-east-1", None]),
            "data": {
                "payload": {"orderId": f"ord-{i:09d}", "userId": user, "items": items,
                            "totalAmount": round(sum(x["price"] * x["quantity"] for x in items), 2),
                            "currency": rnd.choice(["USD", "EUR", "GBP"])},
                "metadata": {"paymentMethod": rnd.choice(["card", "paypal", None]),
                             "shippingAddress": f"{rnd.randrange(1, 999)} Main St, Springfield",
                             "attributes": {"channel": rnd.choice(["web", "app"]), "promo": "none"}},
            },
        })
    return out


def best_us(fn: Callable[[], Any], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    schema = ORDER_CREATED
    parsed = fastavro.parse_schema(schema)
    registry = SchemaRegistryClient.new_client({"url": "mock://"})
    serializer = AvroSerializer(registry, json.dumps(schema), conf={"auto.register.schemas": True})
    ctx = SerializationContext("orders", MessageField.VALUE)
    layout = frame_schema(schema)
    results: dict[str, dict[str, float]] = {}

    for n in (int(x) for x in args.sizes.split(",")):
        records = make_records(n)
        frame = pl.DataFrame(records, schema=layout)
        conf_bytes = serializer(records[0], ctx)
        schema_id = struct.unpack(">I", conf_bytes[1:5])[0]
        header = b"\x00" + schema_id.to_bytes(4, "big")

        def per_record_fastavro() -> list[bytes]:
            out = []
            for rec in frame.to_dicts():
                buf = io.BytesIO()
                buf.write(header)
                fastavro.schemaless_writer(buf, parsed, rec)
                out.append(buf.getvalue())
            return out

        ours = encode_frame(frame, schema, schema_id)
        assert ours == per_record_fastavro(), "columnar payloads differ from fastavro"
        assert ours[0] == conf_bytes, "columnar payload differs from confluent's AvroSerializer"
        row = {
            "columnar": best_us(lambda: encode_frame(frame, schema, schema_id), n, args.repeat),
            "columnar_buffer": best_us(lambda: encode_frame_buffer(frame, schema, schema_id), n, args.repeat),
            "fastavro_to_dicts": best_us(per_record_fastavro, n, args.repeat),
            "confluent": best_us(lambda: [serializer(r, ctx) for r in frame.to_dicts()], n, args.repeat),
            "confluent_dicts_only": best_us(lambda: [serializer(r, ctx) for r in records], n, args.repeat),
            "bytes_per_record": sum(map(len, ours)) / n,
        }
        row["speedup_vs_confluent"] = row["confluent"] / row["columnar"]
        row["speedup_vs_confluent_dicts_only"] = row["confluent_dicts_only"] / row["columnar"]
        results[str(n)] = row
        print(f"n={n:>6}  " + "  ".join(f"{k}={v:.2f}" for k, v in row.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": "benchmarks/serde_encode_probe.py", "us_per_record": results},
                                        indent=2))


if __name__ == "__main__":
    main()
