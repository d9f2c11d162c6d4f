"""``headwater config``: validate and print the effective settings (secrets masked)."""

from __future__ import annotations

import argparse

from headwater.cli.common import add_connection_options, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``config`` command."""
    parser = subparsers.add_parser(
        "config",
        help="validate settings and print the effective values (secrets masked)",
        description="Load settings from flags > HEADWATER_* env > --config profile > the local "
        "stack > defaults, validate them, and print them. Exits 2 naming a bad setting.",
    )
    add_connection_options(parser)
    parser.add_argument("--workers", help="worker processes")
    parser.add_argument("--guarantee", help="at-least-once | exactly-once")
    parser.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    settings = settings_from_args(
        args, workers=args.workers, processing_guarantee=args.guarantee
    )
    for name, value in settings.describe().items():
        print(f"{name} = {value}")
    return 0
