"""Faust (faust-streaming) peer: ``python benchmarks/peers/faust_peer.py W1|W2``.

Idiomatic Faust: an ``App`` whose id is the consumer group, one ``@app.agent`` over the input
topic, values (de)serialized by a registered Faust codec (:class:`ConfluentAvro`: Confluent wire
format, schemas fetched from / registered in the Schema Registry with confluent-kafka's client,
fastavro for the bytes), ``topic.send`` to the output, and for W2 a Faust ``Table`` (changelog
topic; the default ``memory://`` store, as ``rocksdict://`` fails to load in 0.15.3) holding the count per key (the
userId). Commits every BENCH_COMMIT_INTERVAL_S (``broker_commit_interval``); runs until SIGTERM
(Faust's worker shuts down cleanly on it). 2 workers = two processes with the same app id.
"""

from __future__ import annotations

import io
import os
import struct
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from peer_env import FirstConsumed, PeerEnv, derive_order, order_is_valid  # noqa: E402

import fastavro  # noqa: E402
import faust  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient  # noqa: E402
from faust.serializers import codecs  # noqa: E402

from headwater.bench.workloads import W1_SCHEMA_STR  # noqa: E402

_MAGIC = b"\x00"


class ConfluentAvro(codecs.Codec):
    """A Faust codec for Confluent-framed Avro (magic byte, 4-byte schema id, Avro body).

    Decoding: the writer schema is looked up by id in the registry once and cached. Encoding:
    ``subject``'s schema (``schema_str``) is registered once (auto-register) and its id framed
    in front of fastavro's schemaless bytes.
    """

    def __init__(self, registry_url: str, subject: str | None = None, schema_str: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(registry_url=registry_url, subject=subject, schema_str=schema_str, **kwargs)
        self._client = SchemaRegistryClient({"url": registry_url})
        self._readers: dict[int, Any] = {}
        self._writer: tuple[bytes, Any] | None = None
        self._subject, self._schema_str = subject, schema_str

    def _loads(self, s: bytes) -> Any:
        schema_id = struct.unpack(">I", s[1:5])[0]
        schema = self._readers.get(schema_id)
        if schema is None:
            import json

            schema_str = self._client.get_schema(schema_id).schema_str
            schema = self._readers[schema_id] = fastavro.parse_schema(json.loads(schema_str))
        return fastavro.schemaless_reader(io.BytesIO(s[5:]), schema, None)

    def _dumps(self, obj: Any) -> bytes:
        if self._writer is None:
            import json

            assert self._subject and self._schema_str
            schema_id = self._client.register_schema(self._subject, Schema(self._schema_str, "AVRO"))
            self._writer = (_MAGIC + struct.pack(">I", schema_id),
                            fastavro.parse_schema(json.loads(self._schema_str)))
        header, schema = self._writer
        out = io.BytesIO()
        out.write(header)
        fastavro.schemaless_writer(out, schema, obj)
        return out.getvalue()


def partitions_of(env: PeerEnv, topic: str) -> int:
    """The input's partition count (the W2 table must be co-partitioned with it)."""
    meta = AdminClient({"bootstrap.servers": env.bootstrap}).list_topics(topic, timeout=30)
    return len(meta.topics[topic].partitions)


def build(workload: str, env: PeerEnv) -> faust.App:
    worker = os.environ.get("BENCH_WORKER", "0")
    datadir = os.path.join(env.state_dir, f"faust-{worker}")
    os.makedirs(datadir, exist_ok=True)
    partitions = partitions_of(env, env.input)
    app = faust.App(
        env.group, broker=f"kafka://{env.bootstrap}", datadir=datadir, store="memory://",  # rocksdict:// fails in 0.15.3 (TypeError in _new_store_by_url)
       
        broker_commit_interval=env.commit_interval_s, consumer_auto_offset_reset="earliest",
        processing_guarantee=env.guarantee.replace("-", "_"), topic_partitions=partitions, topic_replication_factor=1,
        table_standby_replicas=0, topic_disable_leader=True, web_enabled=False,
    )
    if env.fmt == "avro":
        codecs.register("bench_order_avro", ConfluentAvro(env.registry))
        source = app.topic(env.input, key_serializer="raw", value_serializer="bench_order_avro")
    else:
        source = app.topic(env.input, key_serializer="raw", value_serializer="json")
    first = FirstConsumed()

    if workload == "W1":
        codecs.register("bench_w1_avro", ConfluentAvro(env.registry, f"{env.output}-value", W1_SCHEMA_STR))
        sink = app.topic(env.output, key_serializer="raw", value_serializer="bench_w1_avro")

        @app.agent(source)
        async def w1(stream: faust.StreamT) -> None:
            async for key, order in stream.items():
                first()
                if order_is_valid(order):
                    await sink.send(key=key, value=derive_order(order))

    elif workload == "W2":
        sink = app.topic(env.output, key_serializer="raw", value_serializer="json")
        counts = app.Table("counts", default=int, partitions=partitions)

        @app.agent(source)
        async def w2(stream: faust.StreamT) -> None:
            async for key, _order in stream.items():
                first()
                counts[key] += 1
                await sink.send(key=key, value={"count": counts[key]})

    else:
        raise SystemExit(f"unknown workload {workload}")
    return app


def main(workload: str) -> None:
    env = PeerEnv.load()
    app = build(workload, env)
    # stdout stays ours (Faust would route it to its log): the first_consumed line must reach
    # the harness as is
    faust.Worker(app, loglevel=os.environ.get("BENCH_FAUST_LOGLEVEL", "WARNING"), quiet=True,
                 redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1])
