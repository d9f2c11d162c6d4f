"""``headwater schemas register|check|list|show``: the event catalog in the Schema Registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headwater.cli.common import add_connection_options, settings_from_args
from headwater.errors import HeadwaterError
from headwater.schemas.catalog import DEFAULT_PREFIX, EVENT_TYPE_NAMES, event_type


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``schemas`` command group."""
    parser = subparsers.add_parser(
        "schemas",
        help="register, check and list the event catalog's Avro schemas",
        description="One subject per event type: <prefix>.<eventType>-value (TopicNameStrategy).",
    )
    sub = parser.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")

    reg = sub.add_parser("register", help="register every catalog schema (idempotent)")
    _common(reg)
    reg.add_argument(
        "--event-type", action="append", metavar="TYPE", help="only this type (repeatable)"
    )
    reg.set_defaults(handler=_register)

    check = sub.add_parser(
        "check",
        help="check a changed schema against the registry before registering it",
        description="Exits 0 when compatible with the subject's latest version (or the subject "
        "does not exist), 1 with the registry's reason when not.",
    )
    _common(check)
    check.add_argument("file", type=Path, metavar="FILE.avsc", help="the candidate full schema")
    check.add_argument("--event-type", required=True, metavar="TYPE", help="e.g. order.created")
    check.add_argument("--register", action="store_true", help="register it when compatible")
    check.set_defaults(handler=_check)

    lst = sub.add_parser("list", help="list subjects and their versions")
    _common(lst)
    lst.add_argument("--all", action="store_true", help="every subject, not only the prefix's")
    lst.set_defaults(handler=_list)

    show = sub.add_parser("show", help="print a type's full registered schema (no registry)")
    show.add_argument("event_type", metavar="TYPE", help=f"one of: {', '.join(EVENT_TYPE_NAMES)}")
    show.set_defaults(handler=_show)


def _common(parser: argparse.ArgumentParser) -> None:
    add_connection_options(parser)
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})"
    )


def _client(args: argparse.Namespace):  # noqa: ANN202 - SchemaRegistryClient, imported lazily
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient(settings_from_args(args).schema_registry_config())


def _register(args: argparse.Namespace) -> int:
    from headwater.schemas.admin import register_catalog

    types = [event_type(n) for n in args.event_type] if args.event_type else None
    for name, reg in register_catalog(_client(args), args.prefix, types).items():
        print(f"{reg.subject:<50} id={reg.schema_id:<6} version={reg.version}  ({name})")
    return 0


def _check(args: argparse.Namespace) -> int:
    from headwater.schemas.admin import check_compatibility, register_schema

    try:
        text = args.file.read_text("utf-8")
    except OSError as exc:
        raise HeadwaterError(f"cannot read {args.file}: {exc.strerror}") from exc
    subject = event_type(args.event_type).subject(args.prefix)
    client = _client(args)
    existed = check_compatibility(client, subject, text)
    print(f"{subject}: compatible" if existed else f"{subject}: new subject (nothing to check)")
    if args.register:
        reg = register_schema(client, subject, text)
        print(f"{subject}: registered id={reg.schema_id} version={reg.version}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from headwater.schemas.admin import list_subjects

    for info in list_subjects(_client(args), None if args.all else args.prefix):
        versions = ",".join(str(v) for v in info.versions)
        print(f"{info.subject:<50} versions={versions:<10} latest_id={info.latest_id}")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(event_type(args.event_type).schema, indent=2))
    return 0

