"""CPU of an interval join in-process, no broker (results go to docs/benchmarks.md).

    .venv/bin/python benchmarks/join_probe.py [inner|left|outer] [--profile]

100,000 orders and 100,000 payments (JSON, one correlation id per order, the payment 0-60 s
after it and payments in event-time order, 1 % of orders never paid), alternating batches of 10,000 per side, through the
in-process test driver with the production row codec (the columnar Avro encoder/decoder over an
in-memory registry) instead of the driver's per-row one: join within [0, 10 min], grace 2 min (a batch of one side moves stream time up to 100 s past the other side).
Prints the process CPU seconds spent in the ``pipe`` calls and the rows out.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import random
import sys
import time
from collections.abc import Sequence

import polars as pl
from confluent_kafka.schema_registry import Schema

from headwater.config import Settings
from headwater.schemas.registry import SchemaCache
from headwater.streams import InProcessTestDriver, Topology
from headwater.streams.runtime.avro import AvroCodec


class _Registry:
    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], int] = {}
        self.texts: dict[int, str] = {}

    def get_schema(self, schema_id: int) -> Schema:
        return Schema(self.texts[schema_id], "AVRO")

    def register_schema(self, subject: str, schema: Schema) -> int:
        key = (subject, schema.schema_str)
        if key not in self.ids:
            self.ids[key] = len(self.ids) + 1
            self.texts[self.ids[key]] = schema.schema_str
        return self.ids[key]


class ProbeDriver(InProcessTestDriver):
    """The test driver with the runtime's Avro row codec."""

    def __init__(self, topology: Topology) -> None:
        super().__init__(topology, partitions=1)
        self.codec = AvroCodec(Settings(), cache=SchemaCache(_Registry()))

    def encode_avro(self, frame: pl.DataFrame, subject: str, schema: str) -> list[bytes]:
        return self.codec.encode(frame, subject, schema)

    def decode_avro(self, values: Sequence[bytes]) -> pl.DataFrame:
        return self.codec.decode_rows(values)


def main(how: str, profile: bool) -> None:
    topology = Topology("join-probe", idle_timeout=None)
    orders = topology.source("orders", value_format="json", event_time="ts")
    payments = topology.source("payments", value_format="json", event_time="ts")
    orders.join(payments, store="j", after="10m", grace="2m", how=how,  # type: ignore[arg-type]
                co_partitioned=True).to_topic("out")
    driver = ProbeDriver(topology)
    rng, size, n = random.Random(1), 10_000, 100_000
    feed = []
    for b in range(n // size):
        ids = range(b * size, (b + 1) * size)
        order_ts = [i * 10 for i in ids]
        feed.append(("orders", [f"c{i}" for i in ids],
                     [{"orderId": f"o{i}", "ts": t, "amount": float(i % 97)}
                      for i, t in zip(ids, order_ts)]))
        paid = sorted(((i * 10 + rng.randrange(60_000), i) for i in ids if rng.random() >= 0.01))
        feed.append(("payments", [f"c{i}" for _, i in paid],
                     [{"paymentId": f"p{i}", "ts": t, "amount": float(i % 97)}
                      for t, i in paid]))
    profiler = cProfile.Profile() if profile else None
    start = time.process_time()
    if profiler:
        profiler.enable()
    for topic, keys, values in feed:
        driver.pipe(topic, values, keys=keys)
    if profiler:
        profiler.disable()
    spent = time.process_time() - start
    print(json.dumps({"how": how, "cpu_s": round(spent, 2), "records": 2 * n,
                      "rows_out": len(driver.outputs)}))
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "inner", "--profile" in sys.argv)
