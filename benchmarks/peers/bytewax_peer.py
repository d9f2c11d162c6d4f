"""Bytewax peer: ``python -m bytewax.run "benchmarks/peers/bytewax_peer.py:flow('W1')"``.

Idiomatic Bytewax: the Kafka operators of ``bytewax.connectors.kafka`` (``kop.input`` /
``kop.deserialize_value`` / ``kop.serialize_value`` / ``kop.output``) with confluent-kafka's
registry-backed ``AvroDeserializer``/``AvroSerializer`` (the serde Bytewax's docs pair with its
Kafka operators), ``op.filter``/``op.map`` for W1, and for W2 ``op.key_on`` + ``op.stateful_map``
(a running count per userId, emitted on every record like the other engines' updates).
2 workers = two ``bytewax.run`` processes of one cluster (``-i``/``-a``); keyed state is
exchanged between them by Bytewax.

The end of a run: Bytewax's Kafka source assigns partitions itself and never commits consumer
group offsets (it keeps offsets in its own recovery store), so the harness cannot watch the
group. With ``BENCH_STOP_AT_END=1`` (throughput runs) the source is built with ``tail=False``:
it stops at each partition's end offset, the dataflow drains, every sink flushes
(``KafkaSink`` flushes its producer per batch and on close) and ``cli_main`` returns; an
``atexit`` hook then prints ``{"event": "done", "t": <epoch s>}``, which the harness takes as
the end instant (the latest over the run's processes; a non-zero exit code fails the run).
Latency runs leave ``tail=True``, get ``{"event": "ready"}`` once the dataflow is built (there is
no group to watch for the assignment) and are stopped with SIGTERM.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from peer_env import FirstConsumed, PeerEnv, derive_order, order_is_valid  # noqa: E402

import bytewax.connectors.kafka.operators as kop  # noqa: E402
import bytewax.operators as op  # noqa: E402
import orjson  # noqa: E402
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: E402
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from confluent_kafka.serialization import Deserializer  # noqa: E402

from headwater.bench.workloads import W1_SCHEMA_STR  # noqa: E402
from headwater.schemas.catalog import event_type  # noqa: E402


class JsonDeserializer(Deserializer):
    """JSON values (``--input-format json``)."""

    def __call__(self, value: bytes | None, ctx: object = None) -> object:
        return None if value is None else orjson.loads(value)


def valid(msg: KafkaSourceMessage) -> bool:
    return order_is_valid(msg.value)


def derive(output: str):  # noqa: ANN201
    def mapper(msg: KafkaSourceMessage) -> KafkaSinkMessage:
        return KafkaSinkMessage(msg.key, derive_order(msg.value), topic=output)
    return mapper


def count(n: int | None, _msg: KafkaSourceMessage) -> tuple[int, int]:
    n = (n or 0) + 1
    return n, n


def _raise(step_id: str, err: object) -> None:
    raise RuntimeError(f"{step_id}: {err}")


def _report_done() -> None:
    sys.stdout.write(json.dumps({"event": "done", "t": time.time()}) + "\n")
    sys.stdout.flush()


def flow(workload: str) -> Dataflow:
    """The dataflow for ``workload`` (W1 or W2), configured from the BENCH_* environment."""
    env = PeerEnv.load()
    stop_at_end = os.environ.get("BENCH_STOP_AT_END") == "1"
    if stop_at_end:
        atexit.register(_report_done)
    brokers = [env.bootstrap]
    registry = SchemaRegistryClient({"url": env.registry}) if env.registry else None
    df = Dataflow(f"bench-{workload.lower()}")
    source = kop.input("in", df, brokers=brokers, topics=[env.input], tail=not stop_at_end,
                       batch_size=env.batch_size)
    op.inspect("in-errors", source.errs, _raise)
    first = FirstConsumed()
    raw = op.inspect("first-consumed", source.oks, lambda _step, _msg: first())
    if env.fmt == "avro":
        assert registry is not None
        deserializer: Deserializer = AvroDeserializer(registry, event_type("order.created").schema_str)
    else:
        deserializer = JsonDeserializer()
    decoded = kop.deserialize_value("decode", raw, deserializer)
    op.inspect("decode-errors", decoded.errs, _raise)
    orders = decoded.oks

    if workload == "W1":
        assert registry is not None, "W1 writes Avro through the registry"
        out = op.map("derive", op.filter("validate", orders, valid), derive(env.output))
        encoded = kop.serialize_value("encode", out, AvroSerializer(registry, W1_SCHEMA_STR))
        kop.output("out", encoded, brokers=brokers, topic=env.output)
    elif workload == "W2":
        keyed = op.key_on("by-user", orders, lambda msg: msg.key.decode())
        counts = op.stateful_map("count", keyed, count)
        out = op.map("to-json", counts,
                     lambda kv: KafkaSinkMessage(kv[0].encode(), orjson.dumps({"count": kv[1]})))
        kop.output("out", out, brokers=brokers, topic=env.output)
    else:
        raise SystemExit(f"unknown workload {workload}")
    sys.stdout.write(json.dumps({"event": "ready", "t": time.time()}) + "\n")
    sys.stdout.flush()
    return df
