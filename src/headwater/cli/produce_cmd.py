"""``headwater produce``: publish generated domain traffic (see docs/catalog.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from headwater.cli.common import add_connection_options, settings_from_args
from headwater.schemas.catalog import DEFAULT_PREFIX


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``produce`` command."""
    p = subparsers.add_parser(
        "produce",
        help="publish realistic, correlated domain events (load generator)",
        description="Registers the catalog schemas, creates missing topics <prefix>.<eventType>, "
        "and produces a deterministic (--seed) mix of coherent flows in Confluent wire format.",
    )
    add_connection_options(p)
    p.add_argument("-n", "--events", type=int, help="events to produce (default 10000 unless --duration)")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="produce for this long")
    p.add_argument("--rate", type=float, help="target events/s (default: as fast as possible)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--partitions", type=int, default=3, help="partitions of topics created (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--start-time", type=int, metavar="EPOCH_MS", help="event time of the first event (default: now)")
    p.add_argument("--event-rate", type=float, help="events per second of event time (default: --rate or 1000)")
    p.add_argument("--users", type=int, default=1000, help="user population (default 1000)")
    p.add_argument("--products", type=int, default=200, help="product catalog size (default 200)")
    p.add_argument("--invalid", type=float, default=0.0, metavar="FRACTION", help="business-rule violations")
    p.add_argument("--malformed", type=float, default=0.0, metavar="FRACTION", help="broken record bytes")
    p.add_argument("--out-of-order", type=float, default=0.0, metavar="FRACTION", help="slightly delayed events")
    p.add_argument("--max-disorder-ms", type=int, default=2_000, help="bound of the slight delay (default 2000)")
    p.add_argument("--late", type=float, default=0.0, metavar="FRACTION", help="late events")
    p.add_argument("--late-by-ms", type=int, default=60_000, help="how late late events are, at least (default 60000)")
    p.add_argument("--key", default="default", choices=["default", "event-id", "user-id", "correlation-id", "none"],
                   help="record key (default: the catalog's per-type key)")
    p.add_argument("--batch-size", type=int, default=40_000, help="events encoded and produced per step (default 40000)")
    p.add_argument("--output", type=Path, metavar="FILE.jsonl", help="also write every record as a JSON line")
    p.add_argument("--pregenerate", action="store_true",
                   help="generate and encode everything first, then time producing alone")
    p.add_argument("--no-progress", action="store_true", help="no live progress line even on a terminal")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from headwater.generator import GeneratorConfig, KeyChoice, ProduceOptions, produce_generated

    settings = settings_from_args(args)
    count = args.events if args.events is not None or args.duration is not None else 10_000
    config = GeneratorConfig(
        seed=args.seed,
        start_ms=args.start_time if args.start_time is not None else int(time.time() * 1000),
        event_rate=args.event_rate or args.rate or 1000.0,
        users=args.users,
        products=args.products,
        invalid_fraction=args.invalid,
        malformed_fraction=args.malformed,
        out_of_order_fraction=args.out_of_order,
        late_fraction=args.late,
        max_disorder_ms=args.max_disorder_ms,
        late_by_ms=args.late_by_ms,
        key=KeyChoice(args.key),
    )
    options = ProduceOptions(
        count=count, duration_s=args.duration, rate=args.rate, prefix=args.prefix,
        partitions=args.partitions, batch_size=args.batch_size, output=args.output,
        pregenerate=args.pregenerate, progress=False if args.no_progress else None,
    )
    registry = SchemaRegistryClient(settings.schema_registry_config())
    report = produce_generated(settings.kafka_client_config(), registry, config, options)
    print(report.summary())
    return 0
