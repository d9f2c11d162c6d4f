"""The generator's row layout: flat per-type columns, nested into the schema's frame layout.

Flat frames (what the simulation builds and the fault stages edit) have one column per leaf of
the event: envelope fields by name (``eventId``, ``timestamp`` as Int64 epoch millis, ...),
payload and metadata fields as ``payload.<field>`` / ``metadata.<field>``; nested records and
arrays stay one column (Struct / List(Struct)); ``map<string,string>`` is List(Struct{key,
value}). Columns starting with ``_`` are the generator's bookkeeping. Constant envelope fields
(``eventType``, ``version``, ``environment``) are added by :func:`nest`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import polars as pl

from headwater.schemas.catalog import event_type

ENVELOPE_CONSTANTS = ("eventType", "version", "environment")


@cache
def _sections(name: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(section, field names) of the type's ``data`` record, in schema order."""
    schema = event_type(name).schema
    data = next(f for f in schema["fields"] if f["name"] == "data")["type"]
    return tuple((f["name"], tuple(g["name"] for g in f["type"]["fields"])) for f in data["fields"])


@cache
def map_fields(name: str) -> tuple[tuple[str, str], ...]:
    """(section, field) of every ``map`` field of the type's data record."""
    schema = event_type(name).schema
    data = next(f for f in schema["fields"] if f["name"] == "data")["type"]
    out = []
    for section in data["fields"]:
        for f in section["type"]["fields"]:
            t = f["type"]
            if isinstance(t, dict) and t.get("type") == "map":
                out.append((section["name"], f["name"]))
    return tuple(out)


@cache
def _envelope_fields(name: str) -> tuple[str, ...]:
    return tuple(f["name"] for f in event_type(name).schema["fields"] if f["name"] != "data")


def flat_column(path: str) -> str:
    """The flat column of a dotted event path (``data.payload.productId`` -> ``payload.productId``)."""
    return path[5:] if path.startswith("data.") else path


def nest(name: str, flat: pl.DataFrame, environment: str) -> pl.DataFrame:
    """The frame of ``flat``'s rows in the schema layout of event type ``name`` (docs/serde.md),
    with timestamps kept as Int64 epoch millis (which the columnar encoder accepts)."""
    consts = {"eventType": name, "version": "1.0", "environment": environment}
    exprs: list[Any] = []
    for field in _envelope_fields(name):
        exprs.append(pl.lit(consts[field], dtype=pl.String).alias(field) if field in consts else pl.col(field))
    exprs.append(pl.struct([
        pl.struct([pl.col(f"{section}.{f}").alias(f) for f in fields]).alias(section)
        for section, fields in _sections(name)
    ]).alias("data"))
    return flat.select(exprs)


def to_dicts(name: str, nested: pl.DataFrame) -> list[dict[str, Any]]:
    """Event dicts (as fastavro would decode them, timestamps as epoch millis) of a nested frame."""
    rows = nested.to_dicts()
    maps = map_fields(name)
    if maps:
        for row in rows:
            data = row["data"]
            for section, field in maps:
                data[section][field] = {e["key"]: e["value"] for e in data[section][field]}
    return rows
