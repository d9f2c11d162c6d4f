"""Deliberate damage: business-rule violations (schema-valid) and malformed record bytes.

Violations by event type (the name is recorded in :attr:`GeneratedEvent.invalid`):

==============================  ===========================================================
order.created                   ``empty-items``, ``non-positive-quantity``,
                                ``total-mismatch``, ``unknown-currency``, ``unknown-user``
payment.succeeded/failed        ``non-positive-amount``, ``unknown-currency``
order.shipped/delivered         ``unknown-status``
order.canceled                  ``invalid-transition`` (canceled after DELIVERED)
user.registered                 ``bad-email``
inventory.updated               ``negative-stock``
system.health.check             ``negative-response-time``
ml.model.inference              ``confidence-out-of-range``
integration.webhook.received    ``empty-source``
==============================  ===========================================================

Violations are applied column-wise to the selected rows of a flat frame (see
:mod:`headwater.generator.events`).

Malformed kinds (:attr:`GeneratedEvent.malformed`): ``random-bytes`` (first byte is never the
magic byte 0), ``unknown-schema-id`` (valid datum behind an id no registry has issued:
``UNKNOWN_SCHEMA_ID``), ``truncated`` (a valid framed record missing its last byte(s): decoding
always runs out of input). Which records and how is decided by the generator (a kind and a
seed per record, see :func:`malform`), so it is part of the deterministic stream.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from headwater.generator import columns as C

UNKNOWN_SCHEMA_ID = 0x7FFF_FFF0
MALFORMED_KINDS = ("random-bytes", "unknown-schema-id", "truncated")
ACCEPTED_CURRENCIES = frozenset({"EUR", "USD", "GBP", "CHF", "JPY"})
ORDER_STATUSES = frozenset({"PENDING", "PAID", "SHIPPED", "DELIVERED", "CANCELED"})

# (frame, rows to break as a boolean Series, rng) -> the frame with those rows broken
Violation = Callable[[pl.DataFrame, pl.Series, np.random.Generator], pl.DataFrame]


def _set(frame: pl.DataFrame, mask: pl.Series, column: str, value: object) -> pl.DataFrame:
    value_expr = pl.lit(value) if not isinstance(value, (pl.Series, pl.Expr)) else value
    return frame.with_columns(pl.when(mask).then(value_expr).otherwise(pl.col(column)).alias(column))


def _choice(rng: np.random.Generator, options: tuple, n: int) -> pl.Series:
    return pl.Series(list(options)).gather(rng.integers(len(options), size=n))


def _empty_items(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.items", pl.col("payload.items").list.head(0))


def _non_positive_quantity(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    arr = f["payload.items"].to_arrow()
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    offsets = arr.offsets.to_numpy()
    values = arr.values
    rows = np.flatnonzero(m.to_numpy())
    lens = offsets[rows + 1] - offsets[rows]
    pick = offsets[rows] + np.floor(rng.random(len(rows)) * lens).astype(np.int64)
    qty = values.field("quantity").to_numpy(zero_copy_only=False).copy()
    qty[pick] = -rng.integers(0, 3, size=len(rows))
    names = [values.type.field(i).name for i in range(values.type.num_fields)]
    fields = [pa.array(qty, type=pa.int32()) if n == "quantity" else values.field(n) for n in names]
    items = type(arr).from_arrays(arr.offsets, pa.StructArray.from_arrays(fields, names=names))
    return f.with_columns(pl.Series("payload.items", items))


def _total_mismatch(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.totalAmount", (pl.col("payload.totalAmount") + pl.Series(rng.uniform(1, 50, len(f)))).round(2))


def _unknown_currency(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.currency", _choice(rng, ("XXX", "EURO", "BTC"), len(f)))


def _unknown_user(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    ghost = C.random_hex(rng, len(f), 8, "u-ghost-")
    return _set(_set(f, m, "payload.userId", ghost), m, "userId", ghost)


def _non_positive_amount(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.amount", pl.Series(-np.round(rng.uniform(0, 100, len(f)), 2)))


def _unknown_status(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.status", _choice(rng, ("LOST", "RETURNED", "shipped"), len(f)))


def _invalid_transition(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.previousStatus", "DELIVERED")


def _bad_email(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.email", pl.col("payload.email").str.replace("@", " at ", literal=True))


def _negative_stock(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.newStockLevel", pl.Series(-rng.integers(1, 20, size=len(f)).astype(np.int32)))


def _negative_response_time(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.responseTime", -1.0)


def _confidence_out_of_range(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.confidence", _choice(rng, (1.5, -0.2), len(f)))


def _empty_source(f: pl.DataFrame, m: pl.Series, rng: np.random.Generator) -> pl.DataFrame:
    return _set(f, m, "payload.source", "")


_PAYMENT = {"non-positive-amount": _non_positive_amount, "unknown-currency": _unknown_currency}
VIOLATIONS: dict[str, dict[str, Violation]] = {
    "order.created": {
        "empty-items": _empty_items,
        "non-positive-quantity": _non_positive_quantity,
        "total-mismatch": _total_mismatch,
        "unknown-currency": _unknown_currency,
        "unknown-user": _unknown_user,
    },
    "payment.succeeded": _PAYMENT,
    "payment.failed": _PAYMENT,
    "order.shipped": {"unknown-status": _unknown_status},
    "order.delivered": {"unknown-status": _unknown_status},
    "order.canceled": {"invalid-transition": _invalid_transition},
    "user.registered": {"bad-email": _bad_email},
    "inventory.updated": {"negative-stock": _negative_stock},
    "system.health.check": {"negative-response-time": _negative_response_time},
    "ml.model.inference": {"confidence-out-of-range": _confidence_out_of_range},
    "integration.webhook.received": {"empty-source": _empty_source},
}


def violate(name: str, frame: pl.DataFrame, selected: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    """Break each ``selected`` row of a flat frame of type ``name`` with one random rule
    violation of that type; the violation's name goes to the ``_invalid`` column."""
    kinds = list(VIOLATIONS[name].items())
    pick = rng.integers(len(kinds), size=len(frame))
    for k, (_kind, apply) in enumerate(kinds):
        mask = selected & (pick == k)
        if mask.any():
            frame = apply(frame, pl.Series(mask), rng)
    codes = np.where(selected, pick, -1)
    return frame.with_columns(C.labels([k for k, _ in kinds], codes, "_invalid"))


def malform(framed: bytes, kind: str, seed: int) -> bytes:
    """Break a framed record (``0x00`` + id + datum) the ``kind`` way; ``seed`` fixes the bytes."""
    rng = random.Random(seed)
    if kind == "random-bytes":
        junk = rng.randbytes(rng.randrange(0, 64))
        return bytes([rng.randrange(1, 256)]) + junk
    if kind == "unknown-schema-id":
        return b"\x00" + struct.pack(">I", UNKNOWN_SCHEMA_ID) + framed[5:]
    return framed[: rng.randrange(5, len(framed))]
