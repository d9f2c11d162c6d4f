"""Dead letters and their Kafka header encoding.

A dead-letter message keeps the failed record's ORIGINAL key, value and headers byte for byte and
appends a block of ``hw.dlq.*`` metadata headers. The block always starts with
``hw.dlq.error.class``; everything before the LAST occurrence of that header is the original
header list (which may itself hold ``hw.dlq.*`` headers, e.g. when a replayed record fails again).
Values are UTF-8 text; numbers are decimal ASCII; times are epoch milliseconds (UTC).
See docs/dlq.md for the full table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Header = tuple[str, bytes | None]
"""One Kafka header as confluent-kafka returns it (a value may be null)."""

HEADER_PREFIX = "hw.dlq."
ERROR_CLASS = "hw.dlq.error.class"
ERROR_MESSAGE = "hw.dlq.error.message"
SOURCE_TOPIC = "hw.dlq.source.topic"
SOURCE_PARTITION = "hw.dlq.source.partition"
SOURCE_OFFSET = "hw.dlq.source.offset"
SOURCE_TIMESTAMP = "hw.dlq.source.timestamp"
OPERATOR = "hw.dlq.operator"
TIME = "hw.dlq.time"
REPLAYED_FROM = "hw.dlq.replayed-from"
"""Added by ``headwater dlq replay``: ``<dlq topic>:<partition>:<offset>`` the record came from."""
VALUE_DROPPED = "hw.dlq.value-dropped"
VALUE_SIZE = "hw.dlq.value-size"
KEY_DROPPED = "hw.dlq.key-dropped"
KEY_SIZE = "hw.dlq.key-size"
HEADERS_DROPPED = "hw.dlq.headers-dropped"
HEADERS_SIZE = "hw.dlq.headers-size"
DROPPABLE = ("value", "headers", "key")
"""Parts of a dead letter that can be left out (largest first) when it would not fit the DLQ."""
_DROP_HEADERS = {"value": (VALUE_DROPPED, VALUE_SIZE), "key": (KEY_DROPPED, KEY_SIZE),
                 "headers": (HEADERS_DROPPED, HEADERS_SIZE)}

METADATA_HEADERS = (
    ERROR_CLASS,
    ERROR_MESSAGE,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    SOURCE_TIMESTAMP,
    OPERATOR,
    TIME,
)
"""The metadata block, in the order it is written (``hw.dlq.source.timestamp`` only when known)."""
DROPPED_HEADERS = (VALUE_DROPPED, VALUE_SIZE, HEADERS_DROPPED, HEADERS_SIZE, KEY_DROPPED, KEY_SIZE)
"""Appended to the metadata block, a pair per part left out of an oversized dead letter."""

MAX_ERROR_MESSAGE_BYTES = 4096
"""Error messages longer than this (UTF-8) are cut and end with ``...[truncated, N bytes]``."""
MAX_NAME_BYTES = 512
"""Limit for the error class, operator and source topic headers."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the engine could not process, as handed to :class:`DeadLetterWriter`.

    Attributes:
        key: the original key bytes (``None`` for a null key).
        value: the ORIGINAL value bytes, untouched (``None`` for a tombstone).
        headers: the original headers, kept in order (``None`` or ``[]`` when there were none).
        error_class: what failed, e.g. ``"UnknownSchemaId"``, ``"ValueError"``.
        error_message: the error text (truncated to :data:`MAX_ERROR_MESSAGE_BYTES` on write).
        source_topic: topic the record was consumed from.
        source_partition: its partition.
        source_offset: its offset.
        operator: the failing step, e.g. ``"decode"``, ``"map_rows:enrich"``.
        source_timestamp_ms: the record's Kafka timestamp (epoch ms), when known.
    """

    key: bytes | None
    value: bytes | None
    headers: Sequence[Header] | None
    error_class: str
    error_message: str
    source_topic: str
    source_partition: int
    source_offset: int
    operator: str
    source_timestamp_ms: int | None = None

    @classmethod
    def from_exception(cls, exc: BaseException, **fields: Any) -> DeadLetter:
        """A dead letter for ``exc``: its class name and message, plus the other ``fields``."""
        message = str(exc) or repr(exc)
        return cls(error_class=type(exc).__name__, error_message=message, **fields)


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A message of a dead-letter topic, parsed back.

    ``key``/``value``/``headers`` are the original record's (metadata headers removed). The error
    and source fields are ``None`` when the message carries no (or a malformed) header for them;
    :attr:`is_dead_letter` is false for messages without any headwater metadata (e.g. written by
    another producer).

    Attributes:
        dlq_topic: the dead-letter topic.
        dlq_partition: partition of this message in the dead-letter topic.
        dlq_offset: offset of this message in the dead-letter topic.
        key: original key.
        value: original value.
        headers: original headers, in order.
        error_class: ``hw.dlq.error.class``.
        error_message: ``hw.dlq.error.message`` (possibly truncated at write time).
        source_topic: ``hw.dlq.source.topic``.
        source_partition: ``hw.dlq.source.partition``.
        source_offset: ``hw.dlq.source.offset``.
        source_timestamp_ms: ``hw.dlq.source.timestamp``.
        operator: ``hw.dlq.operator``.
        dead_lettered_at_ms: ``hw.dlq.time``, else the dead-letter message's Kafka timestamp.
        dropped: parts of the original left out because the dead letter would not fit the DLQ
            topic, with their original size in bytes (None if unreadable), e.g.
            ``{"value": 1040000}``; the field then
            reads ``None`` (value, key) or ``[]`` (headers) and the original is at the source
            coordinates.
    """

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    error_class: str | None
    error_message: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    source_timestamp_ms: int | None
    operator: str | None
    dead_lettered_at_ms: int | None
    dropped: dict[str, int | None] = dataclasses.field(default_factory=dict)

    @property
    def is_dead_letter(self) -> bool:
        """Whether the message carries headwater's dead-letter metadata."""
        return self.error_class is not None

    @property
    def value_dropped(self) -> bool:
        """Whether the value was left out (too large for the DLQ): replay re-reads the source."""
        return "value" in self.dropped

    @property
    def schema_id(self) -> int | None:
        """The Confluent Schema Registry id framing the value, if it looks framed."""
        return confluent_schema_id(self.value)

    @property
    def location(self) -> str:
        """``<dlq topic>:<partition>:<offset>``, the value of :data:`REPLAYED_FROM`."""
        return f"{self.dlq_topic}:{self.dlq_partition}:{self.dlq_offset}"

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (bytes left as bytes)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def dlq_headers(
    letter: DeadLetter, now_ms: int, dropped: Mapping[str, int] | None = None
) -> list[Header]:
    """The headers of ``letter``'s dead-letter message: the original ones, then the metadata.

    Args:
        letter: the failed record and what failed.
        now_ms: dead-lettering time, epoch milliseconds (written as ``hw.dlq.time``).
        dropped: parts of :data:`DROPPABLE` left out of the message, with their original size;
            dropped headers are not written, and each part gets its ``hw.dlq.<part>-dropped:
            true`` and ``hw.dlq.<part>-size: <bytes>`` headers.

    Returns:
        A new list: ``letter.headers`` unchanged and in order (unless dropped), followed by the
        :data:`METADATA_HEADERS` block (``hw.dlq.source.timestamp`` only when known). Text is
        UTF-8 (unencodable characters backslash-escaped), the message truncated to
        :data:`MAX_ERROR_MESSAGE_BYTES` and names to :data:`MAX_NAME_BYTES`.
    """
    dropped = dropped or {}
    headers: list[Header] = [] if "headers" in dropped else list(letter.headers or ())
    headers += [
        (ERROR_CLASS, _text(letter.error_class, MAX_NAME_BYTES)),
        (ERROR_MESSAGE, _text(letter.error_message, MAX_ERROR_MESSAGE_BYTES)),
        (SOURCE_TOPIC, _text(letter.source_topic, MAX_NAME_BYTES)),
        (SOURCE_PARTITION, b"%d" % letter.source_partition),
        (SOURCE_OFFSET, b"%d" % letter.source_offset),
    ]
    if letter.source_timestamp_ms is not None:
        headers.append((SOURCE_TIMESTAMP, b"%d" % letter.source_timestamp_ms))
    headers += [(OPERATOR, _text(letter.operator, MAX_NAME_BYTES)), (TIME, b"%d" % now_ms)]
    for part in DROPPABLE:
        if part in dropped:
            flag, size = _DROP_HEADERS[part]
            headers += [(flag, b"true"), (size, b"%d" % dropped[part])]
    return headers


def header_bytes(headers: Sequence[Header] | None) -> int:
    """Bytes of header names and values (what headers add to a message, before overhead)."""
    return sum(len(name.encode("utf-8")) + len(value or b"") for name, value in headers or ())


def split_headers(headers: Sequence[Header] | None) -> tuple[list[Header], dict[str, bytes | None]]:
    """Split a dead-letter message's headers into (original headers, metadata by name).

    The metadata block starts at the last ``hw.dlq.error.class`` header; without one, every
    header is original and the metadata is empty.
    """
    headers = list(headers or ())
    start = next(
        (i for i in range(len(headers) - 1, -1, -1) if headers[i][0] == ERROR_CLASS), None
    )
    if start is None:
        return headers, {}
    return headers[:start], {name: value for name, value in headers[start:]}


def parse_dead_letter(
    *,
    dlq_topic: str,
    dlq_partition: int,
    dlq_offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[Header] | None,
    dlq_timestamp_ms: int | None = None,
) -> DeadLetterRecord:
    """Parse one dead-letter message given as parts (see :func:`record_from_message`).

    Never raises on malformed metadata: unreadable fields become ``None``.
    """
    original, meta = split_headers(headers)

    def text(name: str) -> str | None:
        raw = meta.get(name)
        return None if raw is None else raw.decode("utf-8", "replace")

    def number(name: str) -> int | None:
        raw = meta.get(name)
        try:
            return None if raw is None else int(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None

    at = number(TIME)
    dropped = {part: number(size) for part, (flag, size) in _DROP_HEADERS.items()
               if meta.get(flag) == b"true"}
    return DeadLetterRecord(
        dlq_topic=dlq_topic,
        dlq_partition=dlq_partition,
        dlq_offset=dlq_offset,
        key=key,
        value=value,
        headers=original,
        error_class=text(ERROR_CLASS),
        error_message=text(ERROR_MESSAGE),
        source_topic=text(SOURCE_TOPIC),
        source_partition=number(SOURCE_PARTITION),
        source_offset=number(SOURCE_OFFSET),
        source_timestamp_ms=number(SOURCE_TIMESTAMP),
        operator=text(OPERATOR),
        dead_lettered_at_ms=at if at is not None else dlq_timestamp_ms,
        dropped=dropped,
    )


def record_from_message(message: Any) -> DeadLetterRecord:
    """Parse a ``confluent_kafka.Message`` consumed from a dead-letter topic."""
    ts_type, ts = message.timestamp()
    return parse_dead_letter(
        dlq_topic=message.topic(),
        dlq_partition=message.partition(),
        dlq_offset=message.offset(),
        key=message.key(),
        value=message.value(),
        headers=message.headers(),
        dlq_timestamp_ms=ts if ts_type else None,
    )


def confluent_schema_id(data: bytes | None) -> int | None:
    """The schema id of a Confluent-framed payload (magic byte 0 + 4-byte big-endian id)."""
    if data is None or len(data) < 5 or data[0] != 0:
        return None
    return int.from_bytes(data[1:5], "big")


def _text(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8", "backslashreplace")
    if len(raw) <= limit:
        return raw
    suffix = b" ...[truncated, %d bytes]" % len(raw)
    # decode/encode drops a multi-byte character cut in half at the boundary
    head = raw[: max(limit - len(suffix), 0)].decode("utf-8", "ignore").encode("utf-8")
    return head + suffix
