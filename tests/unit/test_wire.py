"""Confluent wire format helpers."""

from __future__ import annotations

import pytest

from headwater.schemas import MalformedFraming
from headwater.schemas import wire


def test_frame_then_unframe_returns_id_and_datum() -> None:
    payload = wire.frame(0x01020304, b"datum")
    assert payload == b"\x00\x01\x02\x03\x04datum"
    schema_id, datum = wire.unframe(payload)
    assert schema_id == 0x01020304 and bytes(datum) == b"datum"


@pytest.mark.parametrize("schema_id", [-1, 2**32])
def test_header_rejects_ids_outside_four_bytes(schema_id: int) -> None:
    with pytest.raises(ValueError):
        wire.header(schema_id)


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x00\x00\x01"])
def test_short_payload_is_malformed_framing_with_raw_bytes(payload: bytes) -> None:
    with pytest.raises(MalformedFraming) as info:
        wire.schema_id_of(payload)
    assert info.value.raw == payload and "shorter" in info.value.reason


def test_bad_magic_byte_is_malformed_framing() -> None:
    with pytest.raises(MalformedFraming, match="magic byte is 0x01"):
        wire.unframe(b"\x01\x00\x00\x00\x07abc")


def test_group_by_schema_id_keeps_input_order_and_reports_malformed() -> None:
    payloads = [wire.frame(7, b"a"), b"\x02junk!", wire.frame(9, b"b"), wire.frame(7, b"c"), b"x"]
    groups, malformed = wire.group_by_schema_id(payloads)
    assert groups == {7: [0, 3], 9: [2]}
    assert [i for i, _ in malformed] == [1, 4]
    assert all(isinstance(e, MalformedFraming) for _, e in malformed)
