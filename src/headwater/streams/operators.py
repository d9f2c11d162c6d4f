"""Stateless operators: each turns one batch frame into another with vectorized Polars work.

Rule for every operator: do all fallible computation before any side effect, so that when a batch
fails the engine can re-run the operator row by row to isolate the bad rows (see
:mod:`headwater.streams.execution`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from headwater.streams.context import ProcessingContext
from headwater.streams.records import KEY, METADATA_COLUMNS, TIMESTAMP, user_columns


class Operator:
    """A step of a compiled topology. ``name`` labels it in DLQ headers and errors."""

    name: str = "operator"
    stateful: bool = False

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        """Process one batch; return the frame passed to the children."""
        raise NotImplementedError

    def store_names(self) -> list[str]:
        """State stores this operator reads and writes."""
        return []


@dataclass
class Identity(Operator):
    """Pass the frame on unchanged (the head of a side output's stream)."""

    name: str = "identity"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        return frame


@dataclass
class Filter(Operator):
    """Keep the rows where a Polars predicate is true."""

    predicate: pl.Expr
    name: str = "filter"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        return frame.filter(self.predicate)


@dataclass
class WithColumns(Operator):
    """Add or replace columns with Polars expressions."""

    exprs: Sequence[pl.Expr]
    name: str = "with_columns"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        return frame.with_columns(*self.exprs)


@dataclass
class Select(Operator):
    """Project the batch to expressions; metadata columns are always kept."""

    exprs: Sequence[pl.Expr]
    name: str = "select"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        projected = frame.select(*self.exprs)
        meta = [c for c in METADATA_COLUMNS if c in frame.columns and c not in projected.columns]
        return pl.concat([frame.select(meta), projected], how="horizontal")


@dataclass
class Explode(Operator):
    """One row per element of list column(s); metadata repeats."""

    columns: Sequence[str]
    name: str = "explode"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        return frame.explode(list(self.columns))


@dataclass
class KeyBy(Operator):
    """Set the record key (``_key``) from an expression (cast to string)."""

    key: pl.Expr
    name: str = "key_by"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        return frame.with_columns(self.key.cast(pl.String).alias(KEY))


@dataclass
class MapRows(Operator):
    """The slow path: a Python function per row (dict in, dict out). Metadata is kept.

    Use only for logic Polars expressions cannot express; it costs microseconds per row.
    """

    fn: Callable[[dict[str, Any]], dict[str, Any]]
    name: str = "map_rows"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        cols = user_columns(frame)
        mapped = [self.fn(row) for row in frame.select(cols).iter_rows(named=True)]
        meta = frame.select([c for c in METADATA_COLUMNS if c in frame.columns])
        if not mapped:
            return meta
        body = pl.from_dicts(mapped, infer_schema_length=None)
        return pl.concat([meta, body.drop([c for c in METADATA_COLUMNS if c in body.columns])],
                         how="horizontal")


@dataclass
class FilterRows(Operator):
    """The slow path: a Python predicate per row (dict in, bool out)."""

    fn: Callable[[dict[str, Any]], bool]
    name: str = "filter_rows"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        cols = user_columns(frame)
        keep = [bool(self.fn(row)) for row in frame.select(cols).iter_rows(named=True)]
        return frame.filter(pl.Series(keep, dtype=pl.Boolean))


@dataclass
class ToTopic(Operator):
    """Produce each row to a topic: key from ``_key``, value as JSON or Confluent Avro, record
    timestamp from ``_timestamp`` (the event time travels with the record, as in Kafka Streams;
    the runtime stamps a future one "now": see ``KafkaContext.produce``)."""

    topic: str
    value_format: str = "json"
    schema: str | None = None
    subject: str | None = None
    name: str = "to_topic"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        if frame.height == 0:
            return frame
        body = frame.select(user_columns(frame))
        if self.value_format == "avro":
            assert self.schema is not None
            values: list[bytes | None] = list(
                ctx.encode_avro(body, self.subject or f"{self.topic}-value", self.schema)
            )
        else:
            values = list(_ndjson_rows(body))
        keys = (
            [None if k is None else k.encode() for k in frame.get_column(KEY).to_list()]
            if KEY in frame.columns
            else [None] * frame.height
        )
        stamps = (frame.get_column(TIMESTAMP).fill_null(0).clip(lower_bound=0).to_list()
                  if TIMESTAMP in frame.columns else None)  # 0: the producer's clock
        ctx.produce(self.topic, keys, values, stamps)
        return frame


def _ndjson_rows(frame: pl.DataFrame) -> list[bytes]:
    """Each row as one JSON document, serialized in one vectorized call."""
    lines = frame.write_ndjson().encode().split(b"\n")
    return lines[: frame.height]
