"""Turn a batch of raw records from one source topic into a frame (plus the records it rejects)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson
import polars as pl

from headwater.streams.records import RecordBatch


@dataclass(frozen=True)
class Rejected:
    """A record of the batch (by index) that could not be decoded, and why."""

    index: int
    error: BaseException


class BatchDecoder(Protocol):
    """Decodes the values of one source topic (Avro through the registry, JSON, raw)."""

    def decode(self, batch: RecordBatch) -> tuple[pl.DataFrame, list[Rejected]]:
        """The decoded frame (metadata columns first, one row per accepted record, in order)."""


class EmptyValueError(ValueError):
    """A record has no value (a tombstone) where the source expects one."""


def with_metadata(batch: RecordBatch, body: pl.DataFrame, rows: list[int] | None) -> pl.DataFrame:
    """Metadata of the accepted records (``rows``; all when None) beside the decoded body."""
    meta = batch.metadata(rows)
    return pl.concat([meta, body], how="horizontal") if body.width else meta


class RawDecoder:
    """Values as a binary ``value`` column (no decoding)."""

    def decode(self, batch: RecordBatch) -> tuple[pl.DataFrame, list[Rejected]]:
        body = pl.DataFrame([pl.Series("value", batch.values, pl.Binary)])
        return with_metadata(batch, body, None), []


class JsonDecoder:
    """One JSON object per value; decoded in one vectorized call, per record on failure."""

    def decode(self, batch: RecordBatch) -> tuple[pl.DataFrame, list[Rejected]]:
        values = batch.values
        rows = [i for i, v in enumerate(values) if v]
        rejected = [Rejected(i, EmptyValueError("empty value")) for i, v in enumerate(values) if not v]
        try:
            body = pl.read_ndjson(b"\n".join(values[i] for i in rows)) if rows else pl.DataFrame()
            if body.height != len(rows):
                raise ValueError("row count mismatch")
        except Exception:  # noqa: BLE001 - isolate the bad records one by one
            body, rows, bad = _decode_json_each(values, rows)
            rejected += bad
            rejected.sort(key=lambda r: r.index)
        return with_metadata(batch, body, None if len(rows) == len(values) else rows), rejected


def _decode_json_each(
    values: list[bytes | None], candidates: list[int]
) -> tuple[pl.DataFrame, list[int], list[Rejected]]:
    decoded, good, bad = [], [], []
    for i in candidates:
        try:
            value = orjson.loads(values[i] or b"")
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        except (orjson.JSONDecodeError, ValueError) as exc:
            bad.append(Rejected(i, exc))
            continue
        decoded.append(value)
        good.append(i)
    body = pl.from_dicts(decoded, infer_schema_length=None) if decoded else pl.DataFrame()
    return body, good, bad
