"""Versioned operator values: every value an operator stores starts with a format byte.

A *user value* (what an operator reads and writes through ``WriteBackCache``) is
``format id (1 byte) + fingerprint (0..n bytes, fixed per format instance) + payload``. The format
id names the encoding and its version together, so a layout change is detected at read time
instead of being misread:

- ``JSON_V1`` (id 1): ``process`` state, ``0x01`` + an orjson document.
- ``AGG_ROWS_V1`` (id 2): ``aggregate`` state, ``0x02`` + a 4-byte fingerprint of the aggregate
  definition (field names, aggregate kinds, NumPy types) + one fixed-width little-endian NumPy row
  (``int64`` counts, ``float64`` sums/min/max, NaN = no value seen yet).
- ``WINDOW_ROWS_V1_ID`` (id 3): window aggregate state whose aggregates are all fixed-width: like
  id 2, with the window definition in the fingerprint (:class:`RowCodec`).
- ``SESSION_INDEX_V1`` (id 4): a key's open sessions, ``0x04`` + little-endian ``int64``
  ``(start, end)`` pairs sorted by start.
- ``WINDOW_ROWS_V2_ID`` (id 5): window aggregate state with variable-length aggregates (sets,
  sketches, lists, user-defined accumulators): the id-3 row, then each variable part as a 4-byte
  little-endian length + its bytes (:class:`VarRowCodec`). Only operators that declare such an
  aggregate write it; fixed-only operators keep id 3, so their stores still read.
- ``SLIDING_INDEX_V1`` (id 6): a key's retained record times for sliding windows, ``0x06`` +
  little-endian ``int64`` count ``n`` + ``n`` sorted ``int64`` times + ``n`` window rows v1 values
  (the accumulator of the records at each time); with ``n = 0`` (header only) an expiry marker.

- ``JOIN_BUFFER_V1`` (id 7): one side's buffered records of one key in an interval join,
  ``0x07`` + a Confluent-framed Avro record ``{entries: [{ts, id, matched, row}]}`` (see
  :mod:`headwater.streams.interval_join`); also ``0x07`` + a side's row schema (JSON), and
  ``0x07`` alone as an expiry-index marker.

The store-level TTL prefix (``headwater.state.ttl``) goes *before* this header: a TTL store's
stored value is ``write time (8 bytes) + format id + fingerprint + payload``; the store strips the
TTL prefix before an operator sees the value. Ids are never reused: a new layout gets a new id.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np

from headwater.state.errors import StateError

FORMAT_NAMES: dict[int, str] = {
    1: "json v1", 2: "aggregate rows v1", 3: "window rows v1", 4: "session index v1",
    5: "window rows v2", 6: "sliding index v1", 7: "join buffer v1",
}
"""Every format id ever assigned -> its name (for error messages). Never reuse an id."""

JSON_V1_ID = 1
AGG_ROWS_V1_ID = 2
WINDOW_ROWS_V1_ID = 3
SESSION_INDEX_V1_ID = 4
WINDOW_ROWS_V2_ID = 5
SLIDING_INDEX_V1_ID = 6
JOIN_BUFFER_V1_ID = 7

_HEADER_FIELD = "_hw_header"
_RESET_HINT = "reset the application (its local state and changelog) or use a new store name"


class ValueFormat:
    """One versioned value layout: ``format_id`` byte + ``fingerprint`` + payload.

    Args:
        format_id: the layout's id, a key of ``FORMAT_NAMES``.
        fingerprint: fixed bytes identifying the exact layout instance (e.g. an aggregate's
            fields); empty when the format id alone says everything.
        description: human-readable layout (shown when a store holds another layout).
    """

    __slots__ = ("format_id", "fingerprint", "header", "description")

    def __init__(self, format_id: int, fingerprint: bytes = b"", description: str = "") -> None:
        if format_id not in FORMAT_NAMES:
            raise ValueError(f"unknown value format id {format_id}")
        self.format_id = format_id
        self.fingerprint = fingerprint
        self.header = bytes([format_id]) + fingerprint
        self.description = description or FORMAT_NAMES[format_id]

    @property
    def name(self) -> str:
        """The format's name, e.g. ``"json v1"``."""
        return FORMAT_NAMES[self.format_id]

    def encode(self, payload: bytes) -> bytes:
        """The stored form of ``payload``: header + payload."""
        return self.header + payload

    def decode(
        self, value: bytes, *, store: str, partition: int, key: bytes | None = None
    ) -> bytes:
        """The payload of a value written in this format.

        Raises:
            StateError: ``value`` was written in another format or layout (names the store,
                partition and both layouts).
        """
        header = self.header
        if value[: len(header)] != header:
            raise self.mismatch(value, store=store, partition=partition, key=key)
        return value[len(header):]

    def mismatch(
        self, value: bytes, *, store: str, partition: int, key: bytes | None = None
    ) -> StateError:
        """The error for a ``value`` that does not start with this format's header."""
        at = f" (key {key!r})" if key is not None else ""
        if not value:
            reason = (
                f"store {store!r} holds an empty value{at}, expected {self.description}; "
                f"{_RESET_HINT}"
            )
        elif value[0] not in FORMAT_NAMES:
            reason = (
                f"store {store!r} holds a value{at} with unknown format byte 0x{value[0]:02x}: "
                "written by another headwater version, or before values carried a format byte; "
                f"this operator reads {self.description}; {_RESET_HINT}"
            )
        elif value[0] != self.format_id:
            reason = (
                f"store {store!r} was written as {FORMAT_NAMES[value[0]]}{at} (or by a headwater "
                f"version without format bytes); this operator reads {self.description}; "
                f"{_RESET_HINT}"
            )
        else:
            written = value[1 : len(self.header)].hex() or "-"
            reason = (
                f"store {store!r} was written with layout {self.name}/{written}{at} (another "
                f"operator definition, or a headwater version without format bytes); this "
                f"operator's layout is {self.name}/{self.fingerprint.hex()} ({self.description}); "
                f"{_RESET_HINT}"
            )
        return StateError(reason, store=store, partition=partition)


JSON_V1 = ValueFormat(JSON_V1_ID, description="json v1")
"""``process`` state: ``0x01`` + JSON."""


def fingerprint(layout: str, size: int = 4) -> bytes:
    """A short stable digest of a layout description (BLAKE2b, ``size`` bytes)."""
    return hashlib.blake2b(layout.encode(), digest_size=size).digest()


class RowCodec:
    """Fixed-width NumPy rows behind a versioned header, decoded a batch at a time.

    ``dtype`` (the codec's ``row_type``) is the header as one ``V`` field followed by the payload
    fields, packed; a batch of stored values is therefore one ``np.frombuffer`` over their
    concatenation, and encoding a batch is one ``tobytes`` sliced per row.

    Args:
        format_id: the format id of the rows (e.g. ``AGG_ROWS_V1_ID``).
        fields: ``(name, numpy type)`` of the payload, in order.
        layout: the layout description fingerprinted into every row (with the fields' types).
    """

    __slots__ = ("format", "row_type", "width", "_header_void")

    def __init__(self, format_id: int, fields: Sequence[tuple[str, str]], layout: str) -> None:
        types = ",".join(f"{name}:{np.dtype(t).str}" for name, t in fields)
        fp = fingerprint(f"{FORMAT_NAMES.get(format_id)}|{layout}|{types}")
        self.format = ValueFormat(format_id, fp, layout)
        header_len = len(self.format.header)
        self.row_type = np.dtype([(_HEADER_FIELD, f"V{header_len}"), *fields])
        self.width = self.row_type.itemsize
        self._header_void = np.void(self.format.header)

    def empty(self, n: int) -> np.ndarray:
        """``n`` rows with the header set and the payload zeroed."""
        rows = np.zeros(n, dtype=self.row_type)
        rows[_HEADER_FIELD] = self._header_void
        return rows

    def encode_rows(self, rows: np.ndarray) -> list[bytes]:
        """One stored value per row of ``rows`` (a ``row_type`` array; the header is (re)set)."""
        rows[_HEADER_FIELD] = self._header_void
        raw = rows.tobytes()
        w = self.width
        return [raw[i : i + w] for i in range(0, len(raw), w)]

    def decode_rows(
        self,
        values: Sequence[bytes | None],
        *,
        store: str,
        partition: int,
        keys: Sequence[bytes] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode the present values (``None`` = no stored value) with one ``np.frombuffer``.

        Returns:
            ``(rows, present)``: the ``row_type`` rows of the non-``None`` values in order
            (read-only), and a boolean mask of which values were present (``None`` when all were).

        Raises:
            StateError: a value has another format, layout or length (names the store, the
                partition, the first offending key when ``keys`` (aligned with ``values``) are
                given, and both layouts).
        """
        present: np.ndarray | None = None
        found = [v for v in values if v is not None]
        if len(found) != len(values):
            present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
        joined = b"".join(found)
        if len(joined) == len(found) * self.width:
            rows = np.frombuffer(joined, dtype=self.row_type)
            # Every value starts with its writer's header and our header fixes the width, so
            # the total length plus every row's header only pass when each value is one of our
            # rows (a value of another length would shift a later row start off its header).
            if bool((rows[_HEADER_FIELD] == self._header_void).all()):
                return rows, present
        raise self._diagnose(values, store, partition, keys)

    def _diagnose(
        self,
        values: Sequence[bytes | None],
        store: str,
        partition: int,
        keys: Sequence[bytes] | None,
    ) -> StateError:
        fmt = self.format
        for i, value in enumerate(values):
            if value is None:
                continue
            key = keys[i] if keys is not None else None
            if value[: len(fmt.header)] != fmt.header:
                return fmt.mismatch(value, store=store, partition=partition, key=key)
            if len(value) != self.width:
                at = f" (key {key!r})" if key is not None else ""
                return StateError(
                    f"store {store!r} holds a {len(value)}-byte {fmt.name} row{at}, the layout "
                    f"has {self.width} bytes: the value is corrupt; {_RESET_HINT}",
                    store=store, partition=partition,
                )
        raise AssertionError("decode_rows failed but every value is well-formed")


_LENGTH = struct.Struct("<I")


class VarRowCodec(RowCodec):
    """A :class:`RowCodec` row followed by ``n_var`` variable-length parts (``window rows v2``).

    A value is ``header + fixed-width row + (4-byte little-endian length + bytes) * n_var``. The
    fixed rows of a batch still decode with one ``np.frombuffer`` (over the values' fixed-width
    prefixes); the variable parts are sliced out per value.

    Args:
        format_id: the format id (e.g. ``WINDOW_ROWS_V2_ID``).
        fields: ``(name, numpy type)`` of the fixed-width payload, in order.
        layout: the layout description fingerprinted into every value.
        n_var: the number of variable-length parts of every value.
    """

    __slots__ = ("n_var",)

    def __init__(self, format_id: int, fields: Sequence[tuple[str, str]], layout: str,
                 n_var: int) -> None:
        super().__init__(format_id, fields, f"{layout}|var={n_var}")
        self.n_var = n_var

    def encode_values(self, rows: np.ndarray, parts: Sequence[Sequence[bytes]]) -> list[bytes]:
        """One stored value per row: its fixed-width row then, per part list, its bytes."""
        fixed = self.encode_rows(rows)
        pack = _LENGTH.pack
        out = []
        for i, head in enumerate(fixed):
            chunks = [head]
            for part in parts:
                value = part[i]
                chunks.append(pack(len(value)))
                chunks.append(value)
            out.append(b"".join(chunks))
        return out

    def decode_values(
        self,
        values: Sequence[bytes | None],
        *,
        store: str,
        partition: int,
        keys: Sequence[bytes] | None = None,
    ) -> tuple[np.ndarray, list[list[bytes]], np.ndarray | None]:
        """Decode the present values (``None`` = no stored value).

        Returns:
            ``(rows, parts, present)``: the fixed-width rows of the present values (read-only),
            per variable part the list of its bytes (aligned with ``rows``), and the presence
            mask as in :meth:`RowCodec.decode_rows`.

        Raises:
            StateError: a value has another format or layout, or its variable parts do not add
                up to its length (names the store, partition and key).
        """
        present: np.ndarray | None = None
        found = [v for v in values if v is not None]
        found_keys: list[bytes] | None = None
        if len(found) != len(values):
            present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
            if keys is not None:
                found_keys = [k for k, v in zip(keys, values, strict=True) if v is not None]
        elif keys is not None:
            found_keys = list(keys)
        w = self.width
        rows, _ = self.decode_rows([v[:w] for v in found], store=store, partition=partition,
                                   keys=found_keys)
        parts: list[list[bytes]] = [[] for _ in range(self.n_var)]
        unpack = _LENGTH.unpack_from
        for j, value in enumerate(found):
            pos, end = w, len(value)
            for part in parts:
                if pos + 4 > end:
                    raise self._corrupt(value, store, partition, found_keys, j)
                (n,) = unpack(value, pos)
                pos += 4
                if pos + n > end:
                    raise self._corrupt(value, store, partition, found_keys, j)
                part.append(value[pos:pos + n])
                pos += n
            if pos != end:
                raise self._corrupt(value, store, partition, found_keys, j)
        return rows, parts, present

    def _corrupt(self, value: bytes, store: str, partition: int,
                 keys: Sequence[bytes] | None, j: int) -> StateError:
        at = f" (key {keys[j]!r})" if keys is not None else ""
        return StateError(
            f"store {store!r} holds a {len(value)}-byte {self.format.name} value{at} whose "
            f"{self.n_var} variable-length part(s) do not add up to its length: the value is "
            f"corrupt; {_RESET_HINT}",
            store=store, partition=partition,
        )
