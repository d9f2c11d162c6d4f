"""CPU of a window aggregate in-process, no broker (results go to docs/benchmarks.md).

    .venv/bin/python benchmarks/window_probe.py W3|W3h|W3s

200,000 JSON records in 10 batches of 20,000 (10,000 keys, event time rising 8 ms per record)
through the in-process test driver: count, sum and mean per key in tumbling 1-minute (W3),
hopping 5 min / 1 min (W3h) or 2-minute session (W3s) windows, 5 s grace. Prints the process
CPU seconds spent in the ``pipe`` calls (the engine's batches; building the input is excluded).
To compare two commits, run it with ``PYTHONPATH=<checkout>/src`` for each, alternating.
"""

from __future__ import annotations

import random
import sys
import time

from headwater.streams import InProcessTestDriver, Topology, agg
from headwater.streams.windows import hopping, session, tumbling


def main(kind: str) -> None:
    window = {"W3": lambda: tumbling("1m", grace="5s"),
              "W3h": lambda: hopping("5m", "1m", grace="5s"),
              "W3s": lambda: session("2m", grace="5s")}[kind]()
    topology = Topology("window-probe", idle_timeout=None)
    topology.source("in", value_format="json").window(window).aggregate(
        "s", n=agg.count(), total=agg.sum("x"), avg=agg.mean("x")).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    rng, size, t = random.Random(1), 20_000, 0
    batches = []
    for _ in range(10):
        batches.append(([f"u{rng.randrange(10_000)}" for _ in range(size)],
                         [t + i * 8 for i in range(size)],
                         [{"x": float(i % 7)} for i in range(size)]))
        t += size * 8
    start = time.process_time()
    for keys, times, values in batches:
        driver.pipe("in", values, keys=keys, timestamps_ms=times)
    print(f"{kind}: {time.process_time() - start:.2f} CPU s for {10 * size:,} records")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "W3")
