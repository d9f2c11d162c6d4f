"""Batch decode: framed Avro payloads -> one Polars frame (layout: docs/serde.md section 1).

The technique (docs/serde.md section 2): the payloads of one schema id are wrapped, without being
copied apart, into ONE in-memory Avro object container file whose schema is the writer schema with
two leading fields, ``__hw_magic: int`` and ``__hw_schema_id: fixed(4)``. The 5-byte Confluent header
is a valid encoding of those two fields, so ``b"".join(payloads)`` is the block body. A sentinel
record (header with the bit-inverted id + the shortest datum of the schema) is appended: the block
declares ``n + 1`` records, and the reader is asked for exactly one batch of ``n + 1`` rows. Every
row's header columns are checked; the sentinel's must be intact, which proves the payloads were
parsed at their own boundaries (a payload with trailing bytes shifts the sentinel). The sentinel
also keeps polars-avro away from its one non-terminating case (a block with bytes left over after
its records, when asked for more rows).

Failures fall back per group to fastavro record by record (:mod:`record_serde`), which rejects
exactly the bad payloads. Small groups go per record directly. Both paths produce the same frame.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from headwater.schemas import wire
from headwater.schemas.errors import (
    SchemaMismatch,
    SchemaResolutionError,
    SerdeError,
    UnknownSchemaId,
)
from headwater.schemas.layout import (
    NoFrameLayout,
    expanded,
    frame_schema,
    strip_uuid,
    zero_datum,
)
from headwater.schemas.record_serde import read_datum
from headwater.schemas.registry import AvroSchema, SchemaCache, WriterSchema, parse, schema_text
from headwater.schemas.resolve import (
    NotVectorizable,
    incompatibility,
    record_name,
    resolution_exprs,
)

try:  # the public read_avro never stops on a block with leftover bytes; see module docstring
    from polars_avro._avro_rs import AvroSource as _AvroSource
except ImportError:  # pragma: no cover - columnar path disabled, per-record still works
    _AvroSource = None

log = logging.getLogger(__name__)

MAGIC_COLUMN = "__hw_magic"
ID_COLUMN = "__hw_schema_id"
DEFAULT_COLUMNAR_THRESHOLD = 32
"""Groups smaller than this decode per record (measured crossover: docs/serde.md section 5)."""
_SYNC = b"headwater-sync!!"
_MAX_COLUMNAR_FAILURES = 3


@dataclass(frozen=True)
class Rejected:
    """A payload of the input batch that was not decoded.

    Attributes:
        index: its position in the input batch.
        error: why (``MalformedFraming``, ``UnknownSchemaId``, ``SchemaMismatch``,
            ``UndecodableDatum``, ``SchemaResolutionError``), carrying the raw payload.
    """

    index: int
    error: SerdeError


@dataclass(frozen=True)
class DecodedBatch:
    """The result of decoding a batch.

    Attributes:
        frame: one row per decoded payload, in input order, in the layout of the reader schema (or
            of the writer schema when none is set).
        positions: ``positions[i]`` is the input index of ``frame`` row ``i`` (int64, ascending),
            to map rows back to offsets.
        rejected: the payloads not decoded, in input order.
    """

    frame: pl.DataFrame
    positions: np.ndarray
    rejected: list[Rejected] = field(default_factory=list)


class _Plan:
    """Everything about one writer id (under one reader schema), computed once."""

    def __init__(self, ws: WriterSchema, reader: dict[str, Any] | None) -> None:
        stripped = strip_uuid(ws.schema)
        self.schema_id = ws.schema_id
        self.id_bytes = ws.schema_id.to_bytes(4, "big")
        self.failures = 0
        self.error: str | None = None
        self.columnar = False
        self.mismatch = None if reader is None else incompatibility(expanded(ws.schema),
                                                                    expanded(reader))
        if self.mismatch is not None:
            return
        self.record_writer = parse(stripped)
        self.record_reader = None if reader is None else parse(strip_uuid(reader))
        try:
            self.writer_layout = frame_schema(stripped)
            self.target = self.writer_layout if reader is None else frame_schema(reader)
            self.arrow_target = pl.DataFrame(schema=self.target).to_arrow().schema
        except NoFrameLayout as err:
            self.error, self.columnar = str(err), False
            return
        try:
            self.resolve = None if reader is None else resolution_exprs(expanded(ws.schema),
                                                                       expanded(reader))
            self.columnar = _AvroSource is not None
        except NotVectorizable as err:
            log.info("schema id %s resolves per record: %s", ws.schema_id, err)
            self.resolve, self.columnar = None, False
        if self.columnar:
            self._build_container(stripped)

    def _build_container(self, stripped: Any) -> None:
        schema = dict(stripped)
        schema["fields"] = [
            {"name": MAGIC_COLUMN, "type": "int"},
            {"name": ID_COLUMN, "type": {"type": "fixed", "name": "SchemaId",
                                         "namespace": "headwater.wire", "size": 4}},
            *stripped["fields"],
        ]
        text = json.dumps(schema).encode()
        self.prefix = b"".join((
            b"Obj\x01", _varint(2), _varint(11), b"avro.schema", _varint(len(text)), text,
            _varint(10), b"avro.codec", _varint(4), b"null", b"\x00", _SYNC,
        ))
        inverted = bytes(255 - b for b in self.id_bytes)
        self.sentinel = b"\x00" + inverted + zero_datum(expanded(stripped))
        self.inverted = inverted


class ColumnarDecoder:
    """Decodes batches of framed payloads into frames (see the module docstring).

    Thread-safe; plans are built once per (writer id, reader schema) and kept.
    """

    def __init__(
        self,
        cache: SchemaCache,
        reader_schema: AvroSchema | None = None,
        *,
        columnar_threshold: int = DEFAULT_COLUMNAR_THRESHOLD,
        reader_subject: str | None = None,
    ) -> None:
        """
        Args:
            cache: where writer schemas come from.
            reader_schema: resolve every record to this record schema; records whose writer
                schema cannot resolve to it are rejected with ``SchemaMismatch``. None keeps
                writer layouts (a batch mixing writer schemas then gets the union of their
                columns, and nothing is foreign).
            columnar_threshold: groups with fewer payloads decode per record.
            reader_subject: the subject ``reader_schema`` was taken from (error context only).
        """
        self.cache = cache
        self.reader_subject = reader_subject
        self.reader_schema = None if reader_schema is None else json.loads(schema_text(reader_schema))
        self._reader_text = None if reader_schema is None else schema_text(reader_schema)
        self.columnar_threshold = columnar_threshold
        self._plans: dict[int, _Plan] = {}
        self._lock = threading.Lock()

    def empty_frame(self) -> pl.DataFrame:
        """A frame with no rows in the reader layout (no columns without a reader schema)."""
        return pl.DataFrame(schema=frame_schema(self.reader_schema)) if self.reader_schema else pl.DataFrame()

    def decode(self, payloads: Sequence[bytes]) -> DecodedBatch:
        """Decode a batch; never raises for bad payloads (they are returned as rejected).

        Raises:
            SchemaRegistryUnavailable: a writer schema had to be fetched and could not be.
        """
        n = len(payloads)
        if n == 0:
            return DecodedBatch(self.empty_frame(), np.zeros(0, np.int64))
        tried: int | None = None
        if n >= self.columnar_threshold:
            first = payloads[0]
            if len(first) >= wire.HEADER_SIZE and first[0] == wire.MAGIC:
                tried = int.from_bytes(first[1:wire.HEADER_SIZE], "big")
                with contextlib.suppress(UnknownSchemaId):
                    plan = self._plan(tried)
                    if plan.columnar:
                        df = self._columnar(plan, payloads)
                        if df is not None:
                            return DecodedBatch(df, np.arange(n, dtype=np.int64))
        return self._by_group(payloads, tried)

    def _by_group(self, payloads: Sequence[bytes], tried: int | None) -> DecodedBatch:
        groups, malformed = wire.group_by_schema_id(payloads)
        rejected = [Rejected(i, err) for i, err in malformed]
        frames: list[pl.DataFrame] = []
        positions: list[np.ndarray] = []
        for sid, idxs in groups.items():
            try:
                plan = self._plan(sid)
            except UnknownSchemaId as err:
                rejected += [Rejected(i, UnknownSchemaId(err.reason, bytes(payloads[i]), schema_id=sid))
                             for i in idxs]
                continue
            if plan.mismatch is not None:
                rejected += [Rejected(i, self._mismatch(plan, payloads[i])) for i in idxs]
                continue
            if plan.error is not None:
                rejected += [Rejected(i, SchemaResolutionError(plan.error, bytes(payloads[i]),
                                                               schema_id=sid)) for i in idxs]
                continue
            group = [payloads[i] for i in idxs]
            df = None
            whole_batch_failed = sid == tried and len(idxs) == len(payloads)
            if plan.columnar and len(idxs) >= self.columnar_threshold and not whole_batch_failed:
                df = self._columnar(plan, group)
            if df is not None:
                frames.append(df)
                positions.append(np.asarray(idxs, dtype=np.int64))
                continue
            df, ok, bad = self._per_record(plan, group, idxs)
            if whole_batch_failed or len(idxs) >= self.columnar_threshold:
                self._note_columnar_result(plan, failed_without_bad_records=plan.columnar and not bad)
            frames.append(df)
            positions.append(ok)
            rejected += bad
        rejected.sort(key=lambda r: r.index)
        return self._assemble(frames, positions, rejected)

    def _assemble(self, frames: list[pl.DataFrame], positions: list[np.ndarray],
                  rejected: list[Rejected]) -> DecodedBatch:
        frames_pos = [(f, p) for f, p in zip(frames, positions) if f.height]
        if not frames_pos:
            return DecodedBatch(self.empty_frame(), np.zeros(0, np.int64), rejected)
        if len(frames_pos) == 1:
            return DecodedBatch(frames_pos[0][0], frames_pos[0][1], rejected)
        pos = np.concatenate([p for _, p in frames_pos])
        if all(f.schema == frames_pos[0][0].schema for f, _ in frames_pos):
            df = pl.concat([f for f, _ in frames_pos], how="vertical")
        else:
            df, pos, rejected = self._concat_layouts(frames_pos, rejected)
        order = np.argsort(pos, kind="stable")
        return DecodedBatch(df[order], pos[order], rejected)

    def _concat_layouts(self, frames_pos: list[tuple[pl.DataFrame, np.ndarray]],
                        rejected: list[Rejected]) -> tuple[pl.DataFrame, np.ndarray, list[Rejected]]:
        """Writer layouts differ (no reader schema): union of columns, largest group wins on conflict."""
        frames_pos = sorted(frames_pos, key=lambda fp: -fp[0].height)
        df, pos = frames_pos[0]
        for other, other_pos in frames_pos[1:]:
            try:
                df = pl.concat([df, other], how="diagonal_relaxed")
                pos = np.concatenate([pos, other_pos])
            except Exception as err:  # noqa: BLE001 - incompatible column types
                reason = f"layout conflicts with the batch's main writer schema ({err}); set a reader schema"
                rejected = rejected + [Rejected(int(i), SchemaResolutionError(reason)) for i in other_pos]
        rejected.sort(key=lambda r: r.index)
        return df, pos, rejected

    def _mismatch(self, plan: _Plan, payload: bytes) -> SchemaMismatch:
        return SchemaMismatch(str(plan.mismatch), bytes(payload), schema_id=plan.schema_id,
                              reader_subject=self.reader_subject,
                              reader_name=record_name(self.reader_schema))

    def _plan(self, schema_id: int) -> _Plan:
        plan = self._plans.get(schema_id)
        if plan is None:
            ws = self.cache.writer(schema_id)
            with self._lock:
                plan = self._plans.get(schema_id)
                if plan is None:
                    plan = self._plans[schema_id] = _Plan(ws, self.reader_schema)
        return plan

    def _columnar(self, plan: _Plan, payloads: Sequence[bytes]) -> pl.DataFrame | None:
        n = len(payloads)
        size = sum(map(len, payloads)) + len(plan.sentinel)
        buf = b"".join((plan.prefix, _varint(n + 1), _varint(size), *payloads, plan.sentinel, _SYNC))
        try:
            src = _AvroSource([lambda: contextlib.nullcontext(io.BytesIO(buf))], False, False)
            df = pl.DataFrame(next(iter(src.batch_iter(n + 1, None))))
            if df.height != n + 1:
                return None
            expected = pl.lit(plan.id_bytes, dtype=pl.Binary)
            header_ok = pl.col(ID_COLUMN).head(n).eq(expected).all() & pl.col(MAGIC_COLUMN).eq(0).all()
            if not df.select(header_ok).item() or df.get_column(ID_COLUMN)[n] != plan.inverted:
                return None
            df = df.head(n).drop(MAGIC_COLUMN, ID_COLUMN)
            if df.schema != plan.writer_layout:
                df = df.cast(plan.writer_layout)
            return df if plan.resolve is None else df.select(plan.resolve)
        except BaseException as err:  # noqa: BLE001 - polars-avro raises or panics on bad bytes
            if not isinstance(err, Exception) and type(err).__name__ != "PanicException":
                raise
            return None

    def _per_record(self, plan: _Plan, group: list[bytes],
                    idxs: list[int]) -> tuple[pl.DataFrame, np.ndarray, list[Rejected]]:
        rows, ok, bad = [], [], []
        for payload, i in zip(group, idxs):
            try:
                rows.append(read_datum(payload, plan.schema_id, plan.record_writer, plan.record_reader))
                ok.append(i)
            except SerdeError as err:
                bad.append(Rejected(i, err))
        try:  # through Arrow: Polars builds Map columns from dicts ~50x slower
            df = pl.from_arrow(pa.Table.from_pylist(rows, schema=plan.arrow_target))
            if df.schema != plan.target:
                df = pl.DataFrame(rows, schema=plan.target)
        except Exception as err:  # noqa: BLE001 - a value fastavro accepts but the layout cannot hold
            reason, ok_set = f"record does not fit the frame layout: {err}", set(ok)
            bad += [Rejected(i, SchemaResolutionError(reason, bytes(p), schema_id=plan.schema_id))
                    for p, i in zip(group, idxs) if i in ok_set]
            df, ok = pl.DataFrame(schema=plan.target), []
        return df, np.asarray(ok, dtype=np.int64), bad

    def _note_columnar_result(self, plan: _Plan, *, failed_without_bad_records: bool) -> None:
        if not failed_without_bad_records:
            return
        plan.failures += 1
        if plan.failures >= _MAX_COLUMNAR_FAILURES:
            plan.columnar = False
            log.warning("schema id %s: columnar decode failed %d times on batches fastavro decodes; "
                        "decoding it per record from now on", plan.schema_id, plan.failures)


def _varint(n: int) -> bytes:
    """Avro long encoding (zigzag varint) of a non-negative ``n``."""
    n <<= 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
