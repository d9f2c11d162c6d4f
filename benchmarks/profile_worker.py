"""Profile one headwater worker in-process on a bench input topic (cProfile).

    eval "$(.venv/bin/headwater stack env)"
    python benchmarks/profile_worker.py w2 bench.orders.json.s1.u10000.n1000000.p4 --format json
    python benchmarks/profile_worker.py w4 bench.w4.orders.avro.v1.s1.u10000.n200000.p4 \
        --input2 bench.w4.payments.avro.v1.s1.u10000.n200000.p4 --format avro

Runs ``benchmarks.peers.headwater_topologies:<workload>`` with a fresh group and output topic
(the input is one the engine suite pre-loaded), as one :class:`Worker` in this process, until
``--until-idle`` seconds without records; prints the wall time, the process CPU time, the
records/s, and the top functions by cumulative and by own time (CPU time by default) (``--out FILE`` also dumps the
pstats). The profiler's own overhead inflates Python-heavy paths, so compare profiles with
each other, not with bench figures.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", help="w1, w1j, w2, w3 or w3h")
    parser.add_argument("input", help="a pre-loaded bench input topic")
    parser.add_argument("--input2", default="", help="the second input of a join workload "
                        "(W4: the payments topic, W4t: the users topic)")
    parser.add_argument("--format", default="json", choices=["json", "avro"])
    parser.add_argument("--until-idle", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, help="also dump the pstats here")
    parser.add_argument("--timer", choices=["cpu", "wall"], default="cpu",
                        help="cpu (default): process CPU time (all threads, e.g. Polars'), which a "
                        "busy shared host inflates far less than wall time")
    args = parser.parse_args()

    from headwater.bench import kafka_io
    from headwater.config.settings import load_settings
    from headwater.streams.runtime.supervisor import load_topology
    from headwater.streams.runtime.worker import Worker, WorkerOptions

    settings0 = load_settings()
    kafka = settings0.kafka_client_config()
    run = uuid.uuid4().hex[:8]
    group, output = f"prof-{args.workload}-{run}", f"prof.out.{args.workload}-{run}"
    total = sum(sum(kafka_io.end_offsets(kafka, t).values()) for t in (args.input, args.input2) if t)
    kafka_io.create_topics(kafka, [output], 4, {"retention.ms": "-1"})
    os.environ.update({
        "BENCH_BOOTSTRAP": settings0.kafka_bootstrap, "BENCH_REGISTRY": settings0.schema_registry_url,
        "BENCH_INPUT": args.input, "BENCH_OUTPUT": output, "BENCH_GROUP": group,
        "BENCH_FORMAT": args.format, "BENCH_INPUT2": args.input2,
    })
    state = Path(tempfile.mkdtemp(prefix="hw-prof-"))
    settings = load_settings(overrides={"application_id": group, "state_dir": state,
                                        "commit_interval_ms": 500})
    worker = Worker(load_topology(f"benchmarks.peers.headwater_topologies:{args.workload}"),
                    settings, WorkerOptions(until_idle_s=args.until_idle))
    profile = cProfile.Profile(time.process_time) if args.timer == "cpu" else cProfile.Profile()
    wall, cpu = time.perf_counter(), time.process_time()
    profile.enable()
    worker.run()
    profile.disable()
    wall, cpu = time.perf_counter() - wall - args.until_idle, time.process_time() - cpu
    print(f"{worker.records_processed:,} of {total:,} records, wall {wall:.1f} s (idle wait excluded), "
          f"cpu {cpu:.1f} s, {worker.records_processed / wall:,.0f} records/s under the profiler")
    for order in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(profile, stream=buf).sort_stats(order).print_stats(args.top)
        print(buf.getvalue())
    if args.out:
        profile.dump_stats(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
