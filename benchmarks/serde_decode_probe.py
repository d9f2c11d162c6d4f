"""Decode cost per record: our columnar and per-record paths vs confluent-kafka's AvroDeserializer.

Run (needs the registry of the local stack):
    cd /work/main && PYTHONPATH=src:. taskset -c 0 /tmp/hwvenv/bin/python benchmarks/serde_decode_probe.py \
        [--registry http://127.0.0.1:18081/apis/ccompat/v7] [--records 100000]

Records are order.created-shaped (tests/unit/serde_support.py: envelope, nested items array,
map<string,string>, enums, nullable strings, timestamp-millis). Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from headwater.schemas import AvroSerde, SchemaCache
from tests.unit.serde_support import ORDER_V1, order


def _time(fn, payloads: list[bytes], batch: int, repeat: int) -> float:
    """Best-of-``repeat`` microseconds per record of ``fn`` over ``payloads`` in chunks of ``batch``."""
    chunks = [payloads[i:i + batch] for i in range(0, len(payloads), batch)]
    fn(chunks[0])
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for c in chunks:
            fn(c)
        best = min(best, time.perf_counter() - t0)
    return best / len(payloads) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", default="http://127.0.0.1:18081/apis/ccompat/v7")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    client = SchemaRegistryClient({"url": args.registry})
    subject = f"bench-serde-{uuid.uuid4().hex[:8]}-value"
    ser = AvroSerializer(client, json.dumps(ORDER_V1), conf={"auto.register.schemas": True})
    ctx = SerializationContext(subject.removesuffix("-value"), MessageField.VALUE)
    payloads = [ser(order(i), ctx) for i in range(args.records)]
    size = sum(map(len, payloads)) / len(payloads)
    deser = AvroDeserializer(client)
    serde = AvroSerde(SchemaCache(client))
    per_record = AvroSerde(serde.cache, columnar_threshold=2**62)

    def confluent(chunk: list[bytes]) -> None:
        for p in chunk:
            deser(p, ctx)

    def ours_one(chunk: list[bytes]) -> None:
        for p in chunk:
            serde.decode_one(p)

    results = {"records": args.records, "avg_payload_bytes": round(size, 1)}
    results["confluent_AvroDeserializer_us"] = _time(confluent, payloads, 1000, args.repeat)
    results["ours_decode_one_us"] = _time(ours_one, payloads, 1000, args.repeat)
    for batch in (100, 1000, 10_000):
        results[f"ours_per_record_frame_b{batch}_us"] = _time(per_record.decode_batch, payloads, batch, 1)
        results[f"ours_columnar_b{batch}_us"] = _time(serde.decode_batch, payloads, batch, args.repeat)
    for batch in (10, 30, 50):
        results[f"ours_columnar_b{batch}_us"] = _time(serde.decode_batch, payloads[:20_000], batch, args.repeat)
        results[f"ours_per_record_frame_b{batch}_us"] = _time(per_record.decode_batch, payloads[:20_000], batch, 1)
    c = results["confluent_AvroDeserializer_us"]
    results["columnar_b10k_speedup_vs_confluent"] = c / results["ours_columnar_b10000_us"]
    results["columnar_b10k_events_per_s"] = 1e6 / results["ours_columnar_b10000_us"]
    results["decode_one_speedup_vs_confluent"] = c / results["ours_decode_one_us"]
    for k, v in results.items():
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v}))


if __name__ == "__main__":
    main()
