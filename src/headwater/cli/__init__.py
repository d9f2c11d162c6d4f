"""The ``headwater`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; the group's handler
receives the parsed namespace and returns an exit code. Any :class:`HeadwaterError` escaping a
handler is printed as one line on stderr and exits 2 (config) or 1 (anything else).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


from headwater import __version__
from headwater.cli import (
    bench_cmd,
    config_cmd,
    demo_cmd,
    dlq_cmd,
    produce_cmd,
    run_cmd,
    schemas_cmd,
    stack_cmd,
)
from headwater.errors import ConfigError, HeadwaterError

COMMAND_GROUPS = [
    stack_cmd, config_cmd, schemas_cmd, produce_cmd, run_cmd, dlq_cmd, bench_cmd, demo_cmd,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every command group registered)."""
    parser = argparse.ArgumentParser(
        prog="headwater",
        description="Columnar micro-batch stream processing for Apache Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"headwater {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``headwater`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"headwater: {exc.one_line()}", file=sys.stderr)
        return 2
    except HeadwaterError as exc:
        print(f"headwater: {exc.one_line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("headwater: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
