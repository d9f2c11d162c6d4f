"""Versioned operator values: format byte, layout fingerprint, batch row decode."""

from __future__ import annotations

import numpy as np
import pytest

from headwater.state import MemoryStore, StateError, WriteBackCache
from headwater.state.codec import (
    AGG_ROWS_V1_ID,
    FORMAT_NAMES,
    JSON_V1,
    JSON_V1_ID,
    RowCodec,
    ValueFormat,
)

FIELDS = [("n", "<i8"), ("total", "<f8")]


def rows_codec(
    layout: str = "n:count,total:sum", fields: list[tuple[str, str]] = FIELDS
) -> RowCodec:
    return RowCodec(AGG_ROWS_V1_ID, fields, layout)


def test_json_v1_is_one_format_byte_then_the_payload() -> None:
    assert JSON_V1.encode(b'{"a":1}') == b'\x01{"a":1}'
    assert JSON_V1.decode(b'\x01{"a":1}', store="s", partition=0) == b'{"a":1}'
    assert FORMAT_NAMES[JSON_V1_ID] == "json v1" and JSON_V1.name == "json v1"
    with pytest.raises(ValueError, match="unknown value format"):
        ValueFormat(200)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "empty value"),
        (b'{"a":1}', "unknown format byte 0x7b"),
        (b"\x02abcd", "written as aggregate rows v1"),
    ],
)
def test_json_v1_refuses_other_formats_naming_store_and_partition(
    value: bytes, message: str
) -> None:
    with pytest.raises(StateError, match=message) as info:
        JSON_V1.decode(value, store="sessions", partition=3, key=b"u1")
    err = info.value
    assert (err.store, err.partition) == ("sessions", 3)
    assert "b'u1'" in str(err) and "reset the application" in str(err)


def test_row_codec_round_trips_a_batch_with_missing_values() -> None:
    codec = rows_codec()
    rows = codec.empty(3)
    rows["n"] = [1, 2, 3]
    rows["total"] = [0.5, 1.5, -2.0]
    stored = codec.encode_rows(rows)
    assert [len(v) for v in stored] == [1 + 4 + 16] * 3
    assert all(v.startswith(codec.format.header) and v[0] == AGG_ROWS_V1_ID for v in stored)
    decoded, present = codec.decode_rows(stored, store="s", partition=0)
    assert present is None
    assert decoded["n"].tolist() == [1, 2, 3] and decoded["total"].tolist() == [0.5, 1.5, -2.0]
    decoded, present = codec.decode_rows([None, stored[2], None, stored[0]], store="s", partition=0)
    assert present is not None and present.tolist() == [False, True, False, True]
    assert decoded["n"].tolist() == [3, 1]
    decoded, present = codec.decode_rows([None, None], store="s", partition=0)
    assert len(decoded) == 0 and present is not None and not present.any()


def test_fingerprint_changes_with_names_kinds_types_and_order() -> None:
    base = rows_codec().format.header
    assert rows_codec().format.header == base  # stable
    assert rows_codec(layout="n:count,total:max").format.header != base  # kind
    assert rows_codec(layout="n:count,sum:sum").format.header != base  # name in the layout
    assert rows_codec(fields=[("n", "<i8"), ("total", "<i8")]).format.header != base  # type
    assert rows_codec(layout="total:sum,n:count",
                      fields=[("total", "<f8"), ("n", "<i8")]).format.header != base  # order


def test_rows_of_another_aggregate_definition_fail_clearly() -> None:
    mine, theirs = rows_codec(), rows_codec(layout="n:count,total:max")
    foreign = theirs.encode_rows(theirs.empty(1))[0]
    good = mine.encode_rows(mine.empty(2))
    with pytest.raises(StateError, match="was written with layout aggregate rows v1/") as info:
        mine.decode_rows([good[0], None, foreign, good[1]], store="per-user", partition=2,
                         keys=[b"a", b"b", b"c", b"d"])
    msg = str(info.value)
    assert theirs.format.fingerprint.hex() in msg and mine.format.fingerprint.hex() in msg
    assert "(key b'c')" in msg and "n:count,total:sum" in msg
    assert (info.value.store, info.value.partition) == ("per-user", 2)


def test_rows_without_a_header_or_of_another_width_are_refused() -> None:
    codec = rows_codec()
    legacy = np.zeros(1, dtype=FIELDS)  # a pre-versioning row: no header at all
    legacy["n"] = 123
    with pytest.raises(StateError, match="unknown format byte 0x7b"):
        codec.decode_rows([legacy.tobytes()], store="s", partition=0)
    good = codec.encode_rows(codec.empty(2))
    # same header, wrong length, total length still a multiple of the width
    with pytest.raises(StateError, match="corrupt"):
        codec.decode_rows([good[0] + b"x", good[1][:-1]], store="s", partition=0)
    with pytest.raises(StateError, match="written as json v1"):
        codec.decode_rows([JSON_V1.encode(b"{}")], store="s", partition=0)


def test_ttl_prefix_is_store_level_and_goes_before_the_format_byte() -> None:
    store = MemoryStore("s", 0, ttl_ms=1000, clock=lambda: 5.0)
    cache = WriteBackCache(store)
    cache.put_many([b"k"], [JSON_V1.encode(b"[1]")])
    assert cache.dirty()[b"k"] == (5000).to_bytes(8, "big") + b"\x01[1]"  # changelog / RocksDB
    assert cache.get_many([b"k"]) == [b"\x01[1]"]  # what the operator decodes
