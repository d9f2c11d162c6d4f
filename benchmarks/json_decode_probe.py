"""JSON decode cost per record: Polars read_ndjson (headwater's JSON source), with and without a
schema, projected to the fields the bench workloads read, and orjson (CPU s per million, best of 5,
one batch of 10,000 generated order.created events). Run: python benchmarks/json_decode_probe.py"""
import time, orjson, polars as pl, json, sys
from headwater.bench.kafka_io import order_events
ev = order_events(1, 0.05, 10000)
vals = [orjson.dumps(next(ev)) for _ in range(10000)]
blob = b"\n".join(vals)
full = pl.read_ndjson(blob)
schema = full.schema
pay = schema["data"]
def cpu(f, n=5):
    best = 1e9
    for _ in range(n):
        t = time.process_time(); f(); best = min(best, time.process_time() - t)
    return best / len(vals) * 1e6  # CPU s per million records
print("polars", pl.__version__, "threads", pl.thread_pool_size())
print("read_ndjson, inferred schema (headwater today): %.1f CPU s/M" % cpu(lambda: pl.read_ndjson(blob)))
print("read_ndjson, schema given:                     %.1f CPU s/M" % cpu(lambda: pl.read_ndjson(blob, schema=schema)))
small = {"eventId": pl.String, "userId": pl.String, "timestamp": pl.Int64,
         "data": pl.Struct({"payload": pl.Struct({"orderId": pl.String, "totalAmount": pl.Float64,
                                                  "items": pl.List(pl.Struct({"productId": pl.String, "quantity": pl.Int64, "price": pl.Float64}))})})}
print("read_ndjson, only the read fields' schema:     %.1f CPU s/M" % cpu(lambda: pl.read_ndjson(blob, schema=small)))
print("orjson.loads per record (no frame):            %.1f CPU s/M" % cpu(lambda: [orjson.loads(v) for v in vals]))
print("join of values:                                %.1f CPU s/M" % cpu(lambda: b"\n".join(vals)))
print("bytes/record", len(blob)/len(vals))
