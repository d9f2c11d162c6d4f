"""Dead-letter header encoding and parsing (no broker)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.connectors.dlq import (
    ERROR_CLASS,
    ERROR_MESSAGE,
    MAX_ERROR_MESSAGE_BYTES,
    METADATA_HEADERS,
    OPERATOR,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TIMESTAMP,
    SOURCE_TOPIC,
    TIME,
    DeadLetter,
    confluent_schema_id,
    dlq_headers,
    dlq_topic,
    parse_dead_letter,
    split_headers,
)
from headwater.errors import ConfigError

NOW_MS = 1_732_358_400_123


def letter(**overrides: object) -> DeadLetter:
    fields: dict[str, object] = {
        "key": b"user-1",
        "value": b"\x00\x00\x00\x00\x07payload",
        "headers": [("traceparent", b"00-abc-01"), ("empty", None), ("traceparent", b"dup")],
        "error_class": "UnknownSchemaId",
        "error_message": "schema id 7 is not registered",
        "source_topic": "orders",
        "source_partition": 3,
        "source_offset": 10452,
        "operator": "decode",
        "source_timestamp_ms": 1_732_358_000_000,
    }
    fields.update(overrides)
    return DeadLetter(**fields)  # type: ignore[arg-type]


def parse(headers: list, **parts: object):
    base = {"dlq_topic": "app.dlq", "dlq_partition": 0, "dlq_offset": 5, "key": b"k", "value": b"v"}
    return parse_dead_letter(headers=headers, **{**base, **parts})  # type: ignore[arg-type]


def test_headers_are_the_originals_then_the_metadata_block_in_order() -> None:
    headers = dlq_headers(letter(), NOW_MS)
    assert headers[:3] == [("traceparent", b"00-abc-01"), ("empty", None), ("traceparent", b"dup")]
    assert headers[3:] == [
        (ERROR_CLASS, b"UnknownSchemaId"),
        (ERROR_MESSAGE, b"schema id 7 is not registered"),
        (SOURCE_TOPIC, b"orders"),
        (SOURCE_PARTITION, b"3"),
        (SOURCE_OFFSET, b"10452"),
        (SOURCE_TIMESTAMP, b"1732358000000"),
        (OPERATOR, b"decode"),
        (TIME, b"1732358400123"),
    ]
    assert [name for name, _ in headers[3:]] == list(METADATA_HEADERS)


def test_headers_without_originals_or_source_timestamp() -> None:
    headers = dlq_headers(letter(headers=None, source_timestamp_ms=None), NOW_MS)
    names = [name for name, _ in headers]
    assert names == [n for n in METADATA_HEADERS if n != SOURCE_TIMESTAMP]
    assert dlq_headers(letter(headers=[]), NOW_MS)[0][0] == ERROR_CLASS


def test_the_letter_headers_list_is_not_mutated() -> None:
    original = [("a", b"1")]
    dlq_headers(letter(headers=original), NOW_MS)
    assert original == [("a", b"1")]


def test_long_messages_are_truncated_on_a_character_boundary() -> None:
    message = "é" * 10_000  # 2 bytes each in UTF-8
    value = dict(dlq_headers(letter(error_message=message), NOW_MS))[ERROR_MESSAGE]
    assert value is not None
    assert len(value) <= MAX_ERROR_MESSAGE_BYTES
    text = value.decode("utf-8")  # still valid UTF-8: no half character
    assert text.startswith("é" * 100)
    assert text.endswith("...[truncated, 20000 bytes]")


def test_a_message_at_the_limit_is_kept_whole() -> None:
    message = "x" * MAX_ERROR_MESSAGE_BYTES
    value = dict(dlq_headers(letter(error_message=message), NOW_MS))[ERROR_MESSAGE]
    assert value == message.encode()


def test_unencodable_text_is_escaped_not_fatal() -> None:
    # lone surrogates (e.g. from bytes decoded with surrogateescape) cannot be UTF-8 encoded
    headers = dict(dlq_headers(letter(error_message="bad \udcff byte", operator="op\ud800"), NOW_MS))
    assert headers[ERROR_MESSAGE] == b"bad \\udcff byte"
    assert headers[OPERATOR] == b"op\\ud800"


def test_round_trip_restores_every_field() -> None:
    original = letter()
    record = parse(dlq_headers(original, NOW_MS), key=original.key, value=original.value,
                   dlq_partition=2, dlq_offset=9, dlq_timestamp_ms=1)
    assert record.is_dead_letter
    assert (record.key, record.value, record.headers) == (
        original.key, original.value, list(original.headers or []))
    assert record.error_class == "UnknownSchemaId"
    assert record.error_message == "schema id 7 is not registered"
    assert (record.source_topic, record.source_partition, record.source_offset) == (
        "orders", 3, 10452)
    assert record.source_timestamp_ms == 1_732_358_000_000
    assert record.operator == "decode"
    assert record.dead_lettered_at_ms == NOW_MS  # the header wins over the message timestamp
    assert record.location == "app.dlq:2:9"
    assert record.schema_id == 7


def test_a_record_dead_lettered_twice_keeps_its_first_metadata_as_original_headers() -> None:
    first = dlq_headers(letter(), NOW_MS)
    second = dlq_headers(letter(headers=first, error_class="ValueError", operator="map_rows:x"),
                         NOW_MS + 1)
    record = parse(second)
    assert record.headers == first
    assert (record.error_class, record.operator) == ("ValueError", "map_rows:x")


def test_messages_without_metadata_are_not_dead_letters() -> None:
    record = parse([("a", b"1")], dlq_timestamp_ms=42)
    assert not record.is_dead_letter
    assert record.headers == [("a", b"1")]
    assert record.source_topic is None and record.dead_lettered_at_ms == 42
    assert split_headers(None) == ([], {})


def test_malformed_metadata_becomes_none() -> None:
    record = parse([(ERROR_CLASS, b"E"), (SOURCE_OFFSET, b"12x"), (SOURCE_PARTITION, b"\xff"),
                    (ERROR_MESSAGE, b"caf\xe9")])
    assert record.is_dead_letter
    assert record.source_offset is None and record.source_partition is None
    assert record.error_message == "caf\ufffd"
    assert record.dead_lettered_at_ms is None


def test_from_exception_names_the_class() -> None:
    made = DeadLetter.from_exception(
        KeyError("userId"), key=None, value=b"x", headers=None, source_topic="t",
        source_partition=0, source_offset=1, operator="map_rows:f")
    assert (made.error_class, made.error_message) == ("KeyError", "'userId'")
    assert DeadLetter.from_exception(RuntimeError(), key=None, value=None, headers=None,
                                     source_topic="t", source_partition=0, source_offset=1,
                                     operator="o").error_message == "RuntimeError()"


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"\x00\x00\x00\x01\x00rest", 256), (b"\x00\x00\x00\x00\x2a", 42), (b"\x00\x00\x00\x01", None),
     (b"\x01\x00\x00\x00\x01", None), (None, None), (b"", None)],
)
def test_confluent_schema_id(data: bytes | None, expected: int | None) -> None:
    assert confluent_schema_id(data) == expected


def test_dlq_topic_naming() -> None:
    assert dlq_topic("orders-ingest") == "orders-ingest.dlq"
    for bad in ("", "has space", "a/b", "x" * 246):
        with pytest.raises(ConfigError, match="application_id"):
            dlq_topic(bad)


header_values = st.one_of(st.none(), st.binary(max_size=40))


@given(
    key=st.one_of(st.none(), st.binary(max_size=40)),
    value=st.one_of(st.none(), st.binary(max_size=200)),
    headers=st.lists(st.tuples(st.text(max_size=20), header_values), max_size=6),
    error_class=st.text(min_size=1, max_size=40),
    error_message=st.text(max_size=300),
    source_topic=st.from_regex(r"[A-Za-z0-9._-]{1,60}", fullmatch=True),
    partition=st.integers(0, 10_000),
    offset=st.integers(0, 2**62),
    ts=st.one_of(st.none(), st.integers(0, 2**45)),
    operator=st.text(max_size=60),
)
def test_round_trip_property(key, value, headers, error_class, error_message, source_topic,
                             partition, offset, ts, operator) -> None:
    sent = DeadLetter(key, value, headers, error_class, error_message, source_topic, partition,
                      offset, operator, ts)
    got = parse(dlq_headers(sent, NOW_MS), key=key, value=value)
    assert (got.key, got.value, got.headers) == (key, value, headers)
    assert (got.source_topic, got.source_partition, got.source_offset, got.source_timestamp_ms) \
        == (source_topic, partition, offset, ts)
    # text survives exactly unless it holds lone surrogates (escaped; covered above)
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in error_class + error_message + operator):
        assert (got.error_class, got.error_message, got.operator) == (
            error_class, error_message, operator)
