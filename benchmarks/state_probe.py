"""Micro-benchmark of the state layer (results go to docs/state.md).

    eval "$(.venv/bin/headwater stack env)"
    .venv/bin/python benchmarks/state_probe.py [--bootstrap HOST:PORT] [--keys N] [--records M]

Measures, on one core:
1. ``RocksDBStore.write_batch`` and ``get_many`` for N keys per call (us/key), plain and TTL;
2. ``WriteBackCache`` round trip (get_many misses + put_many + flush) for N keys (us/key);
3. ``restore`` of M changelog records from the broker into an empty RocksDB store (records/s),
   read_uncommitted and read_committed.
The broker is ``--bootstrap``, else ``HEADWATER_KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from headwater.state.cache import WriteBackCache
from headwater.state.changelog import ensure_changelog_topics, restore
from headwater.state.store import RocksDBStore


def _best_us_per_key(fn: Callable[[], object], keys: int, rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / keys * 1e6


def bench_store(n: int) -> dict[str, float]:
    """us/key of the store and cache operations for batches of ``n`` keys."""
    out: dict[str, float] = {}
    keys = [f"user-{i:08d}|2025-01-01T00:{i % 60:02d}".encode() for i in range(n)]
    values = [(i * 7).to_bytes(8, "big") * 2 for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, ttl in (("", None), (" ttl", 3_600_000)):
            store = RocksDBStore(Path(tmp) / f"s{label.strip()}", "bench", 0, ttl_ms=ttl)
            offset = iter(range(10**9))
            stored = store.encode_values(values)
            out[f"write_batch{label}"] = _best_us_per_key(
                lambda: store.write_batch(dict(zip(keys, stored)), next(offset)), n)
            out[f"get_many (hits){label}"] = _best_us_per_key(lambda: store.get_many(keys), n)
            misses = [k + b"-missing" for k in keys]
            out[f"get_many (misses){label}"] = _best_us_per_key(lambda: store.get_many(misses), n)

            def round_trip() -> None:
                cache = WriteBackCache(store)
                cache.get_many(keys)
                cache.put_many(keys, values)
                cache.flush(next(offset))

            out[f"cache get+put+flush{label}"] = _best_us_per_key(round_trip, n)
            store.close()
    return out


def bench_restore(bootstrap: str, records: int) -> dict[str, float]:
    """records/s restoring ``records`` changelog records (20-byte keys, 16-byte values)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    conf = {"bootstrap.servers": bootstrap}
    admin = AdminClient(conf)
    topic = f"bench-state-{uuid.uuid4().hex[:8]}-changelog"
    ensure_changelog_topics(admin, {topic: 1})
    out: dict[str, float] = {}
    try:
        producer = Producer({**conf, "linger.ms": 20, "batch.size": 1 << 20,
                             "compression.type": "lz4"})
        for i in range(records):
            producer.produce(topic, key=f"user-{i:015d}".encode(), value=i.to_bytes(16, "big"),
                             partition=0)
            if i % 50_000 == 0:
                producer.poll(0)
        producer.flush(60)
        for read_committed in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                store = RocksDBStore(Path(tmp) / "r", "bench", 0)
                t = time.perf_counter()
                n = restore(store, dict(conf), topic, 0, read_committed=read_committed)
                elapsed = time.perf_counter() - t
                assert n == records, (n, records)
                t = time.perf_counter()
                assert restore(store, dict(conf), topic, 0, read_committed=read_committed) == 0
                noop = time.perf_counter() - t
                store.close()
            mode = "read_committed" if read_committed else "read_uncommitted"
            out[f"restore records/s ({mode})"] = records / elapsed
            out[f"restore when current, ms ({mode})"] = noop * 1000
    finally:
        admin.delete_topics([topic])[topic].result(30)
    return out


def _bootstrap(arg: str | None) -> str:
    bootstrap = arg or os.environ.get("HEADWATER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit("no broker: pass --bootstrap or eval \"$(headwater stack env)\"")
    return bootstrap


def main() -> None:
    """Run both benchmarks and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    for name, value in bench_store(args.keys).items():
        print(f"{name:<32} {value:8.2f} us/key  ({args.keys} keys per call)")
    for name, value in bench_restore(_bootstrap(args.bootstrap), args.records).items():
        print(f"{name:<40} {value:12,.0f}  ({args.records} records)")


if __name__ == "__main__":
    main()
