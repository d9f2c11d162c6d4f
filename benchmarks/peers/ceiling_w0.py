"""W0, the ceiling: a raw confluent-kafka consumer, batch consume + decode, nothing else.

Decoding uses the fastest decoder available: headwater's columnar batch decoder
(``AvroSerde.decode_batch``) for Avro, one ``polars.read_ndjson`` per batch for JSON. Offsets are committed every BENCH_COMMIT_INTERVAL_S.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from peer_env import FirstConsumed, PeerEnv  # noqa: E402

from confluent_kafka import Consumer  # noqa: E402


def decoder(env: PeerEnv):  # noqa: ANN201
    """(name, batch of values -> number of decoded records)."""
    if env.fmt == "json":
        import polars as pl

        return "polars.read_ndjson", lambda values: pl.read_ndjson(b"\n".join(values)).height
    from headwater.schemas.serde import AvroSerde

    serde = AvroSerde(env.registry)
    return "headwater.AvroSerde.decode_batch", lambda values: serde.decode_batch(values).frame.height


def main() -> None:
    env = PeerEnv.load()
    name, decode = decoder(env)
    print(json.dumps({"event": "decoder", "name": name}), flush=True)
    consumer = Consumer({
        "bootstrap.servers": env.bootstrap, "group.id": env.group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "queued.max.messages.kbytes": 65536, "fetch.max.bytes": 52428800,
    })
    consumer.subscribe([env.input])
    running, first = [True], FirstConsumed()
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    last_commit, dirty = time.monotonic(), False
    while running[0]:
        messages = consumer.consume(env.batch_size, 0.1)
        values = [m.value() for m in messages if m.error() is None]
        if values:
            first()
            decode(values)
            dirty = True
        if dirty and time.monotonic() - last_commit >= env.commit_interval_s:
            consumer.commit(asynchronous=False)
            last_commit, dirty = time.monotonic(), False
    if dirty:
        consumer.commit(asynchronous=False)
    consumer.close()


if __name__ == "__main__":
    main()
