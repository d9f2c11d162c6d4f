"""``headwater run module:topology``: run a topology with N worker processes."""

from __future__ import annotations

import argparse

from headwater.cli.common import add_connection_options, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` command."""
    parser = subparsers.add_parser(
        "run",
        help="run a topology (module:attribute) with N worker processes",
        description="Run a topology as members of the consumer group `application_id`. Each "
        "worker is a process; a crashed worker is restarted; SIGTERM/SIGINT checkpoint and stop "
        "all workers. Start the same command on more hosts to scale out.",
    )
    parser.add_argument("topology", help="module:attribute naming a Topology or a function")
    add_connection_options(parser)
    parser.add_argument("--workers", type=int, help="worker processes (setting: workers)")
    parser.add_argument("--guarantee", choices=["at-least-once", "exactly-once"],
                        help="processing guarantee (setting: processing_guarantee)")
    parser.add_argument("--application-id", help="consumer group id (setting: application_id)")
    parser.add_argument("--state-dir", help="local state directory (setting: state_dir)")
    parser.add_argument("--commit-interval-ms", type=int, help="checkpoint interval")
    parser.add_argument("--batch-size", type=int, default=10_000, help="max records per batch")
    parser.add_argument("--max-batch-latency-ms", type=int, default=100,
                        help="longest wait for a batch when traffic is light (default 100)")
    parser.add_argument("--until-idle", type=float, metavar="SECONDS",
                        help="stop once no record arrived for this long (tests, benchmarks)")
    parser.add_argument("--commit-every-records", type=int, default=0, metavar="N",
                        help="also checkpoint after every N records (default: time only)")
    parser.add_argument("--worker-id-base", type=int, default=0,
                        help="first worker index on this host (distinct per host sharing a group)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from headwater.streams.runtime import WorkerOptions, supervise

    settings = settings_from_args(
        args,
        workers=args.workers,
        processing_guarantee=args.guarantee,
        application_id=args.application_id,
        state_dir=args.state_dir,
        commit_interval_ms=args.commit_interval_ms,
    )
    options = WorkerOptions(
        worker_id=args.worker_id_base,
        batch_size=args.batch_size,
        max_batch_latency_s=args.max_batch_latency_ms / 1000,
        until_idle_s=args.until_idle,
        commit_every_records=args.commit_every_records,
    )
    return supervise(args.topology, settings, options)
