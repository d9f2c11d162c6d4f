"""``headwater bench SUITE``: run the benchmark suites and write results (see docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from headwater.cli.common import add_connection_options, settings_from_args

RESULTS_DIR = Path("benchmarks/results")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command."""
    parser = subparsers.add_parser(
        "bench", help="run a benchmark suite (serde, engine) and write JSON/Markdown/PNG results",
        description="Run a benchmark suite against the local stack. Writes "
        "benchmarks/results/<suite>-<UTC stamp>.json (machine, versions, config, command, results) "
        "plus a Markdown table and PNG charts next to it, and benchmarks/results/LATEST.md.",
    )
    parser.add_argument("suite", choices=["serde", "engine"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke, ~2 minutes)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="result JSON path")
    parser.add_argument("--engines", default="headwater,quixstreams",
                        help="engine suite: comma-separated (headwater, quixstreams, faust, bytewax, pathway)")
    parser.add_argument("--workers", default=None, help="engine suite: e.g. 1,2 (default 1,2; quick: 1)")
    parser.add_argument("--workloads", default=None, help="engine suite: W0,W1,W2,W3,W3h,W3s (the default); opt-in: W1j (W1 with JSON output), W4 (interval join), W4t (stream-table join)")
    parser.add_argument("--events", type=int, help="engine suite: input events (default 300000)")
    parser.add_argument("--input-format", choices=["avro", "json"], default="avro",
                        help="engine suite: input value format (default avro)")
    parser.add_argument("--no-exactly-once", action="store_true",
                        help="engine suite: skip the headwater W2 exactly-once rows")
    parser.add_argument("--no-latency", action="store_true", help="engine suite: skip latency runs")
    parser.add_argument("--latency-fraction", type=float, default=None,
                        help="engine suite: latency runs produce at this fraction of max rate (0.5)")
    add_connection_options(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from headwater.bench.engine_suite import EngineSuite, EngineSuiteConfig, available_engines
    from headwater.bench.machine import machine_info
    from headwater.bench.progress import Progress
    from headwater.bench.report import BenchReport, default_path
    from headwater.bench.serde_suite import SerdeSuiteConfig, run_serde
    from headwater.bench.workloads import WORKLOADS

    signal.signal(signal.SIGTERM, _interrupt)  # unwind, so running engines get stopped
    settings = settings_from_args(args)
    kafka = settings.kafka_client_config()
    root = Path.cwd()
    out = args.out or default_path(RESULTS_DIR, args.suite)
    logs = out.parent / "logs" / out.stem
    logs.mkdir(parents=True, exist_ok=True)
    progress = Progress()
    command = "headwater " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = BenchReport(args.suite, command, {}, machine_info(root))
    latest = None if args.quick else RESULTS_DIR / ("LATEST.md" if args.suite == "engine" else f"LATEST-{args.suite}.md")
    write = lambda: report.write(out, latest)  # noqa: E731
    if args.suite == "serde":
        cfg = SerdeSuiteConfig.quick() if args.quick else SerdeSuiteConfig()
        report.config = {"quick": args.quick, **cfg.__dict__}
        report.results = run_serde(cfg, kafka, settings.schema_registry_url, progress, report.skipped)
    else:
        overrides: dict = {"input_format": args.input_format}
        if args.events:
            overrides["events"] = args.events
        if args.workers:
            overrides["workers"] = [int(w) for w in args.workers.split(",")]
        if args.workloads:
            known = {w.upper(): w for w in WORKLOADS}
            names = [w.strip() for w in args.workloads.split(",")]
            unknown = [w for w in names if w.upper() not in known]
            if unknown:
                print(f"headwater bench: --workloads: unknown {', '.join(unknown)} "
                      f"(known: {', '.join(WORKLOADS)})", file=sys.stderr)
                return 2
            overrides["workloads"] = [known[w.upper()] for w in names]
        if args.no_exactly_once:
            overrides["exactly_once"] = False
        if args.no_latency:
            overrides["latency"] = False
        if args.latency_fraction:
            overrides["latency_fraction"] = args.latency_fraction
        engines, skipped = available_engines([e.strip() for e in args.engines.split(",") if e.strip()],
                                             args.input_format)
        report.skipped.update(skipped)
        for engine, why in skipped.items():
            print(f"headwater bench: not running {engine}: {why}", file=sys.stderr)
        if not engines:
            print("headwater bench: none of the requested engines can run here", file=sys.stderr)
            return 2
        overrides["engines"] = engines
        cfg = EngineSuiteConfig.quick(**overrides) if args.quick else EngineSuiteConfig(**overrides)
        suite = EngineSuite(cfg, kafka, settings.schema_registry_url, logs, progress)
        report.config = {"quick": args.quick, **suite.config_json()}

        def on_row(row: object) -> None:
            if row not in report.results:
                report.results.append(row)  # type: ignore[arg-type]
            write()  # partial results survive an interrupted run

        suite.run(on_row)
    for path in write():
        print(path)
    return 0 if all(r.agrees is not False for r in report.results) else 1


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt
