"""``headwater dlq inspect|replay``: look at a dead-letter topic and re-publish its records.

Both read the topic from its beginning to the end it has when the command starts, with a unique
consumer group that never commits: running them moves nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from confluent_kafka import Producer

from headwater.cli.common import add_connection_options, settings_from_args
from headwater.connectors.dlq import (
    DEFAULT_READ_TIMEOUT_S,
    REPLAY_MESSAGE_MAX_BYTES,
    DeadLetterFilter,
    DeadLetterRecord,
    ReplayResult,
    SourceReader,
    read_dead_letters,
    replay_dead_letters,
)

HEX_PREVIEW_BYTES = 24
TEXT_PREVIEW_BYTES = 64
KEY_PREVIEW_CHARS = 80


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dlq`` command group."""
    parser = subparsers.add_parser(
        "dlq",
        help="inspect a dead-letter topic and replay its records",
        description="Dead-letter topics hold records the engine could not process, with their "
        "original key/value/headers and hw.dlq.* headers naming the error (docs/dlq.md).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    inspect = actions.add_parser(
        "inspect",
        help="list dead letters readably (or as JSON lines) with a summary per error class",
        description="Read the topic from the beginning to its current end (no offsets "
        "committed) and print one block per entry, then the count per error class.",
    )
    _common_options(inspect)
    inspect.add_argument("--limit", type=int, metavar="N", help="show at most N matching entries")
    inspect.add_argument(
        "--last", type=int, metavar="N", help="only the newest N messages of each partition (before filters)"
    )
    inspect.add_argument(
        "--json", action="store_true", help="one JSON object per entry on stdout (bytes base64)"
    )
    inspect.set_defaults(handler=_inspect)

    replay = actions.add_parser(
        "replay",
        help="re-publish the original key/value/headers of dead letters to a topic",
        description="Re-publish the original records (without hw.dlq.* metadata, with a "
        "hw.dlq.replayed-from header) read up to the DLQ's end at start, so it never loops "
        "on its own output. Entries written without their value (too large for the DLQ) are "
        "re-read from their source topic. Fails (exit 1) if any record is not delivered or "
        "not replayable.",
    )
    _common_options(replay)
    replay.add_argument("--to", required=True, metavar="TOPIC", help="target topic (must exist)")
    replay.add_argument("--limit", type=int, metavar="N", help="replay at most N entries")
    replay.add_argument("--dry-run", action="store_true", help="count, publish nothing")
    replay.add_argument(
        "--fresh-timestamps",
        action="store_true",
        help="stamp replayed records with the current time (default: their original timestamp)",
    )
    replay.set_defaults(handler=_replay)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", help="the dead-letter topic (<application id>.dlq)")
    parser.add_argument("--error-class", metavar="X", help="only entries with this error class")
    parser.add_argument("--source-topic", metavar="T", help="only entries from this source topic")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT_S,
        metavar="S",
        help=f"give up after S seconds without progress (default {DEFAULT_READ_TIMEOUT_S:g})",
    )
    add_connection_options(parser)


def _inspect(args: argparse.Namespace) -> int:
    conf = settings_from_args(args).kafka_client_config()
    conf["group.id"] = f"headwater-dlq-inspect-{uuid.uuid4().hex}"
    select = DeadLetterFilter(args.error_class, args.source_topic)
    progress = _Progress(sys.stderr)
    records = read_dead_letters(
        conf,
        args.topic,
        limit=args.last,
        from_beginning=args.last is None,
        timeout_s=args.timeout,
    )
    scanned = shown = 0
    by_class: Counter[str] = Counter()
    with contextlib.closing(records):
        for record in records:
            scanned += 1
            if select(record):
                progress.clear()
                print(_json_line(record) if args.json else _block(record), flush=args.json)
                shown += 1
                by_class[record.error_class or "(no hw.dlq metadata)"] += 1
                if args.limit is not None and shown >= args.limit:
                    break
            progress.update(f"read {scanned}, shown {shown}")
    progress.clear()
    _summary(args.topic, scanned, shown, by_class, sys.stderr if args.json else sys.stdout)
    return 0


def _replay(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    consumer_conf = settings.kafka_client_config()
    consumer_conf["group.id"] = f"headwater-dlq-replay-{uuid.uuid4().hex}"
    producer_conf: dict[str, Any] = {
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "allow.auto.create.topics": False,
        "partitioner": "murmur2_random",  # the Java clients' key partitioning
        "message.max.bytes": REPLAY_MESSAGE_MAX_BYTES,  # originals re-read from their source
    }
    progress = _Progress(sys.stderr)
    records = read_dead_letters(consumer_conf, args.topic, timeout_s=args.timeout)
    source = SourceReader(settings.kafka_client_config(), timeout_s=args.timeout)
    with contextlib.closing(records), source:
        result = replay_dead_letters(
            records,
            Producer(producer_conf),
            args.to,
            select=DeadLetterFilter(args.error_class, args.source_topic),
            limit=args.limit,
            dry_run=args.dry_run,
            keep_timestamps=not args.fresh_timestamps,
            on_progress=lambda r: progress.update(
                f"read {r.scanned}, replayed {r.replayed}, skipped {r.skipped}"
            ),
            source=source.fetch,
        )
    progress.clear()
    _replay_summary(args, result)
    for location, reason in result.not_replayable:
        print(f"not replayable: {location}: {reason}", file=sys.stderr)
    return 1 if result.not_replayable else 0


def _replay_summary(args: argparse.Namespace, result: ReplayResult) -> None:
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {result.replayed} of {result.scanned} entries read from {args.topic} "
        f"to {args.to}; skipped {result.skipped}"
        + (f"; {result.from_source} re-read from their source" if result.from_source else "")
        + (f"; NOT replayable {len(result.not_replayable)}" if result.not_replayable else "")
        + (" (dry run: nothing published)" if args.dry_run else "")
    )
    _counts(result.by_error_class, sys.stdout)


def _summary(
    topic: str, scanned: int, shown: int, by_class: Counter[str], out: TextIO
) -> None:
    print(f"{shown} of {scanned} entries read from {topic} shown", file=out)
    _counts(by_class, out)


def _counts(by_class: Counter[str], out: TextIO) -> None:
    width = max((len(c) for c in by_class), default=0)
    for error_class, count in sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {error_class:<{width}}  {count}", file=out)


def _block(r: DeadLetterRecord) -> str:
    lines = [f"{r.location}  {_iso(r.dead_lettered_at_ms)}"]
    if not r.is_dead_letter:
        lines.append("  (no hw.dlq.* metadata: not written by a headwater dead-letter writer)")
    else:
        source = f"{r.source_topic}:{_opt(r.source_partition)}:{_opt(r.source_offset)}"
        if r.source_timestamp_ms is not None:
            source += f"  (record time {_iso(r.source_timestamp_ms)})"
        message = (r.error_message or "").replace("\n", "\n            ")
        lines += [
            f"  source:   {source}",
            f"  operator: {r.operator}",
            f"  error:    {r.error_class}: {message}",
        ]
    lines.append(f"  key:      {_dropped(r, 'key') or _short(r.key)}")
    lines += [f"  value:    {_dropped(r, 'value')}"] if r.value_dropped else _value_lines(r.value)
    if "headers" in r.dropped:
        lines.append(f"  headers:  {_dropped(r, 'headers')}")
    elif r.headers:
        shown = ", ".join(f"{name}={_short(value)}" for name, value in r.headers)
        lines.append(f"  headers:  {shown}")
    return "\n".join(lines) + "\n"


def _dropped(r: DeadLetterRecord, part: str) -> str | None:
    if part not in r.dropped:
        return None
    size = r.dropped[part]
    return (f"(not in the dead letter: {'?' if size is None else size} bytes, too large for the "
            f"DLQ; replay re-reads it from {r.source_topic}:{_opt(r.source_partition)}:"
            f"{_opt(r.source_offset)})")


def _value_lines(value: bytes | None) -> list[str]:
    if value is None:
        return ["  value:    (null)"]
    head = f"  value:    {len(value)} bytes"
    if len(value) >= 5 and value[0] == 0:
        head += f", Confluent framing: schema id {int.from_bytes(value[1:5], 'big')}"
    hex_part = value[:HEX_PREVIEW_BYTES].hex(" ")
    text_part = "".join(chr(b) if 32 <= b < 127 else "." for b in value[:TEXT_PREVIEW_BYTES])
    more = " ..." if len(value) > HEX_PREVIEW_BYTES else ""
    more_text = " ..." if len(value) > TEXT_PREVIEW_BYTES else ""
    return [head, f"    hex:    {hex_part}{more}", f"    text:   {text_part}{more_text}"]


def _short(data: bytes | None) -> str:
    """A key or header value: quoted text when printable UTF-8, else 0x-hex; truncated."""
    if data is None:
        return "(null)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        cut = text[:KEY_PREVIEW_CHARS]
        return orjson.dumps(cut).decode() + ("..." if len(text) > len(cut) else "")
    cut_bytes = data[: KEY_PREVIEW_CHARS // 2]
    return "0x" + cut_bytes.hex() + ("..." if len(data) > len(cut_bytes) else "")


def _json_line(r: DeadLetterRecord) -> str:
    def b64(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode("ascii")

    try:
        key_text = None if r.key is None else r.key.decode("utf-8")
    except UnicodeDecodeError:
        key_text = None
    doc = {
        "dlq_topic": r.dlq_topic,
        "dlq_partition": r.dlq_partition,
        "dlq_offset": r.dlq_offset,
        "dead_lettered_at_ms": r.dead_lettered_at_ms,
        "dead_lettered_at": (
            None if r.dead_lettered_at_ms is None else _iso(r.dead_lettered_at_ms)
        ),
        "is_dead_letter": r.is_dead_letter,
        "error_class": r.error_class,
        "error_message": r.error_message,
        "source_topic": r.source_topic,
        "source_partition": r.source_partition,
        "source_offset": r.source_offset,
        "source_timestamp_ms": r.source_timestamp_ms,
        "operator": r.operator,
        "schema_id": r.schema_id,
        "key_text": key_text,
        "key_b64": b64(r.key),
        "value_b64": b64(r.value),
        "headers": [[name, b64(value)] for name, value in r.headers],
        "dropped": r.dropped,
    }
    return orjson.dumps(doc).decode()


def _iso(ms: int | None) -> str:
    if ms is None:
        return "(time unknown)"
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _opt(value: int | None) -> str:
    return "?" if value is None else str(value)


class _Progress:
    """A count line rewritten in place on a terminal; silent when not a TTY."""

    def __init__(self, stream: TextIO, every_s: float = 0.25) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._every_s = every_s
        self._last = 0.0
        self._shown = False

    def update(self, text: str) -> None:
        now = time.monotonic()
        if self._enabled and now - self._last >= self._every_s:
            self._stream.write(f"\r\x1b[K{text}")
            self._stream.flush()
            self._last, self._shown = now, True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False
