"""``headwater stack up|down|status|env``: the local Kafka + Schema Registry."""

from __future__ import annotations

import argparse
import sys
import time

from headwater.devstack import LocalStack, default_home
from headwater.devstack.stack import DEFAULT_START_TIMEOUT_S, DEFAULT_STOP_TIMEOUT_S

EXIT_NOT_RUNNING = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stack`` command group."""
    parser = subparsers.add_parser(
        "stack",
        help="run the local Kafka (KRaft) + Schema Registry used by tests, demo and benchmarks",
        description="Run the local Kafka (KRaft) + Confluent-compatible Schema Registry as JVM "
        "processes on 127.0.0.1. Jars come from Maven Central (cached). The stack starts empty.",
    )
    parser.add_argument("--home", help="stack home (default: $HEADWATER_STACK_HOME or .headwater)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start both services and wait until they are ready")
    up.add_argument("--kafka-port", type=int, help="broker port (default: a free port)")
    up.add_argument("--registry-port", type=int, help="registry port (default: a free port)")
    up.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S, help="seconds")
    up.set_defaults(handler=_up)
    down = actions.add_parser("down", help="stop both services (SIGTERM, then SIGKILL)")
    down.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT_S, help="seconds")
    down.set_defaults(handler=_down)
    actions.add_parser("status", help="show each service, its pid, endpoint and log").set_defaults(
        handler=_status
    )
    actions.add_parser("env", help="print export lines for the running stack").set_defaults(
        handler=_env
    )


def _stack(args: argparse.Namespace) -> LocalStack:
    from pathlib import Path

    return LocalStack(Path(args.home) if args.home else default_home())


def _up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    began = time.monotonic()
    state, started = stack.up(
        args.kafka_port,
        args.registry_port,
        args.timeout,
        progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
    )
    verb = f"started in {time.monotonic() - began:.1f}s" if started else "already running"
    print(f"stack {verb}")
    print(f"kafka bootstrap:     {state.kafka_bootstrap}")
    print(f"schema registry url: {state.schema_registry_url}")
    print(f"state file:          {stack.state_file}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    stopped = stack.down(args.timeout)
    print(f"stack stopped ({len(stopped)} process(es))" if stopped else "stack was not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = _stack(args)
    services = stack.status()
    for svc in services:
        state = "ready" if svc.ready else ("starting/unhealthy" if svc.alive else "stopped")
        print(f"{svc.name:<9} {state:<18} pid={svc.pid or '-':<8} {svc.endpoint}  log: {svc.log}")
    return 0 if all(s.ready for s in services) else EXIT_NOT_RUNNING


def _env(args: argparse.Namespace) -> int:
    state = _stack(args).read_state()
    if state is None:
        print("headwater: the local stack is not running (`headwater stack up`)", file=sys.stderr)
        return EXIT_NOT_RUNNING
    print("\n".join(state.exports()))
    return 0
