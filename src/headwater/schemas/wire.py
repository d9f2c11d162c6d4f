"""Confluent wire format: ``0x00`` magic byte, 4-byte big-endian schema id, Avro datum.

Helpers to frame and unframe single payloads and to group a batch of payloads by schema id.
"""

from __future__ import annotations

from collections.abc import Sequence

from headwater.schemas.errors import MalformedFraming

MAGIC = 0
HEADER_SIZE = 5
_MAX_ID = 2**32 - 1


def header(schema_id: int) -> bytes:
    """The 5-byte header of payloads written with ``schema_id``.

    Raises:
        ValueError: the id does not fit in 4 unsigned bytes.
    """
    if not 0 <= schema_id <= _MAX_ID:
        raise ValueError(f"schema id {schema_id} does not fit in 4 bytes")
    return b"\x00" + schema_id.to_bytes(4, "big")


def frame(schema_id: int, datum: bytes) -> bytes:
    """``datum`` prefixed with the wire header of ``schema_id``."""
    return header(schema_id) + datum


def schema_id_of(payload: bytes) -> int:
    """The schema id in the header of ``payload``.

    Raises:
        MalformedFraming: shorter than 5 bytes, or the magic byte is not 0.
    """
    if len(payload) < HEADER_SIZE:
        raise MalformedFraming(f"payload of {len(payload)} bytes is shorter than the 5-byte header",
                               bytes(payload))
    if payload[0] != MAGIC:
        raise MalformedFraming(f"magic byte is {payload[0]:#04x}, expected 0x00", bytes(payload))
    return int.from_bytes(payload[1:HEADER_SIZE], "big")


def unframe(payload: bytes) -> tuple[int, memoryview]:
    """``(schema_id, datum)`` of a framed payload; the datum is a zero-copy view.

    Raises:
        MalformedFraming: see :func:`schema_id_of`.
    """
    return schema_id_of(payload), memoryview(payload)[HEADER_SIZE:]


def group_by_schema_id(
    payloads: Sequence[bytes],
) -> tuple[dict[int, list[int]], list[tuple[int, MalformedFraming]]]:
    """Split a batch by schema id.

    Returns:
        ``({schema_id: [input indices, ascending]}, [(index, MalformedFraming), ...])``.
    """
    groups: dict[int, list[int]] = {}
    malformed: list[tuple[int, MalformedFraming]] = []
    for i, p in enumerate(payloads):
        if len(p) >= HEADER_SIZE and p[0] == MAGIC:
            groups.setdefault(int.from_bytes(p[1:HEADER_SIZE], "big"), []).append(i)
        else:
            try:
                schema_id_of(p)
            except MalformedFraming as err:
                malformed.append((i, err))
    return groups, malformed
