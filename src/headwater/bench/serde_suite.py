"""The serde suite: decode/encode rates on the ``order.created`` envelope, one core, no broker
in the timed loop (schemas fetched once from the registry before timing); plus the generator's
produce rate to the local broker.

Paths (per batch size, best of ``repeat``):

- decode: ``confluent`` (confluent-kafka ``AvroDeserializer`` per record), ``headwater-record``
  (:class:`~headwater.schemas.record_serde.RecordSerde`), ``headwater-columnar`` (the serde's
  batch decoder into a Polars frame, when ``headwater.schemas.AvroSerde.decode_batch`` exists);
- encode: ``confluent`` (``AvroSerializer`` per dict), ``headwater-record`` (``RecordSerde``),
  ``headwater-columnar`` (``ColumnarEncoder.encode`` from a frame; checked byte-identical to
  confluent's bytes before timing).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headwater.bench.progress import Progress
from headwater.bench.report import ResultRow


@dataclass
class SerdeSuiteConfig:
    """Sizes of the serde suite."""

    sizes: list[int] = field(default_factory=lambda: [100, 1_000, 10_000])
    repeat: int = 5
    produce_events: int = 300_000
    seed: int = 1

    @classmethod
    def quick(cls) -> SerdeSuiteConfig:
        return cls(sizes=[100, 1_000], repeat=2, produce_events=20_000)


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run_serde(cfg: SerdeSuiteConfig, kafka: dict[str, Any], registry_url: str,
              progress: Progress, skipped: dict[str, str]) -> list[ResultRow]:
    """Measure every path at every size; rows use workload ``decode@N`` / ``encode@N``."""
    import polars as pl
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from headwater.bench.kafka_io import ORDER, InputCodec, order_events
    from headwater.schemas.catalog import event_type
    from headwater.schemas.columnar_encode import ColumnarEncoder
    from headwater.schemas.layout import frame_schema
    from headwater.schemas.record_serde import RecordSerde
    from headwater.schemas.registry import SchemaCache

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    topic = f"bench.serde.{uuid.uuid4().hex[:6]}"
    codec = InputCodec.for_topic("avro", topic, registry_url)
    assert codec.schema_id is not None
    schema = event_type(ORDER).schema
    client = SchemaRegistryClient({"url": registry_url})
    ctx = SerializationContext(topic, MessageField.VALUE)
    conf_de = AvroDeserializer(client)
    conf_ser = AvroSerializer(client, event_type(ORDER).schema_str,
                              conf={"auto.register.schemas": False, "use.latest.version": True})
    record = RecordSerde(SchemaCache(client))
    columnar = ColumnarEncoder(schema)
    layout = frame_schema(schema)
    batch_decoder = _batch_decoder(registry_url, skipped)
    events = order_events(cfg.seed, 0.0, 10_000)
    rows: list[ResultRow] = []
    for n in cfg.sizes:
        payloads = codec.encoder()([next(events) for _ in range(n)])
        dicts = [record.decode(p) for p in payloads]
        frame = pl.DataFrame([{k: str(v) if isinstance(v, uuid.UUID) else v for k, v in d.items()}
                              for d in dicts], schema=layout)
        paths: dict[str, dict[str, Callable[[], Any]]] = {
            "decode": {
                "confluent": lambda: [conf_de(p, ctx) for p in payloads],
                "headwater-record": lambda: [record.decode(p) for p in payloads],
            },
            "encode": {
                "confluent": lambda: [conf_ser(d, ctx) for d in dicts],
                "headwater-record": lambda: [record.encode(d, codec.schema_id) for d in dicts],
                "headwater-columnar": lambda: columnar.encode(frame, codec.schema_id),
            },
        }
        if batch_decoder is not None:
            paths["decode"]["headwater-columnar"] = lambda: batch_decoder(payloads)
        ours = columnar.encode(frame, codec.schema_id)
        same = ours == [conf_ser(d, ctx) for d in dicts]
        for kind, fns in paths.items():
            for engine, fn in fns.items():
                progress.update(f"serde {kind}@{n} {engine}", force=True)
                fn()  # warm caches (registry lookups happen here, never in the timed runs)
                seconds = _best(fn, cfg.repeat)
                agrees = same if (kind, engine) == ("encode", "headwater-columnar") else None
                rows.append(ResultRow("serde", f"{kind}@{n}", engine, 1, n, n / seconds,
                                      seconds=seconds, agrees=agrees,
                                      notes=f"{seconds / n * 1e6:.2f} us/record, best of {cfg.repeat}"))
                progress.done(f"serde {kind}@{n:<6} {engine:<20} {n / seconds:>12,.0f} events/s "
                              f"({seconds / n * 1e6:.2f} us/record)")
    rows.append(_generator_rate(cfg, kafka, registry_url, progress))
    return rows


def _batch_decoder(registry_url: str, skipped: dict[str, str]) -> Callable[[list[bytes]], Any]:
    from headwater.schemas.serde import AvroSerde

    serde = AvroSerde(registry_url)

    def decode(payloads: list[bytes]) -> Any:
        batch = serde.decode_batch(payloads)
        if batch.rejected:
            raise AssertionError(f"columnar decode rejected {len(batch.rejected)} valid payloads")
        return batch.frame

    return decode


def _generator_rate(cfg: SerdeSuiteConfig, kafka: dict[str, Any], registry_url: str,
                    progress: Progress) -> ResultRow:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from headwater.generator import GeneratorConfig, ProduceOptions, produce_generated

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    prefix = f"bench-gen-{uuid.uuid4().hex[:6]}"
    progress.update(f"generator: producing {cfg.produce_events:,} events (pre-generated)", force=True)
    report = produce_generated(kafka, SchemaRegistryClient({"url": registry_url}),
                               GeneratorConfig(seed=cfg.seed),
                               ProduceOptions(count=cfg.produce_events, prefix=prefix, pregenerate=True,
                                              progress=False))
    progress.done(f"generator: {report.rate:,.0f} events/s to the broker ({report.summary()[:60]}...)")
    return ResultRow("serde", "produce", "headwater-generator", 1, report.events, report.rate,
                     seconds=report.seconds, notes=f"topics {prefix}.*; generation not timed")
