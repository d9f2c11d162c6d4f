"""Turn a batch of raw records from one source topic into a frame (plus the records it rejects)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
import polars as pl

from headwater.streams.records import RawRecord, metadata_frame


@dataclass(frozen=True)
class Rejected:
    """A record that could not be decoded, and why."""

    record: RawRecord
    error: BaseException


class BatchDecoder(Protocol):
    """Decodes the values of one source topic (Avro through the registry, JSON, raw)."""

    def decode(self, records: Sequence[RawRecord]) -> tuple[pl.DataFrame, list[Rejected]]:
        """The decoded frame (metadata columns first, one row per accepted record, in order)."""


class EmptyValueError(ValueError):
    """A record has no value (a tombstone) where the source expects one."""


class RawDecoder:
    """Values as a binary ``value`` column (no decoding)."""

    def decode(self, records: Sequence[RawRecord]) -> tuple[pl.DataFrame, list[Rejected]]:
        meta = metadata_frame(list(records))
        return meta.with_columns(pl.Series("value", [r.value for r in records], pl.Binary)), []


class JsonDecoder:
    """One JSON object per value; decoded in one vectorized call, per record on failure."""

    def decode(self, records: Sequence[RawRecord]) -> tuple[pl.DataFrame, list[Rejected]]:
        good = [r for r in records if r.value]
        rejected = [Rejected(r, EmptyValueError("empty value")) for r in records if not r.value]
        try:
            body = pl.read_ndjson(b"\n".join(r.value for r in good)) if good else pl.DataFrame()
            if body.height != len(good):
                raise ValueError("row count mismatch")
        except Exception:  # noqa: BLE001 - isolate the bad records one by one
            body, good, bad = _decode_json_each(good)
            rejected += bad
        meta = metadata_frame(good)
        return pl.concat([meta, body], how="horizontal") if body.width else meta, rejected


def _decode_json_each(
    records: list[RawRecord],
) -> tuple[pl.DataFrame, list[RawRecord], list[Rejected]]:
    rows, good, bad = [], [], []
    for record in records:
        try:
            value = orjson.loads(record.value or b"")
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        except (orjson.JSONDecodeError, ValueError) as exc:
            bad.append(Rejected(record, exc))
            continue
        rows.append(value)
        good.append(record)
    body = pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()
    return body, good, bad
