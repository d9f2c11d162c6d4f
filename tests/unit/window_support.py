"""Helpers of the window oracle tests: what a window of plain values aggregates to, and rows
compared after rounding (engines add in different orders)."""

from __future__ import annotations

import math
from collections import defaultdict

import orjson

from headwater.streams import InProcessTestDriver


def summary(xs: list[float | None]) -> tuple:
    """(count, sum, mean, min, max) of a window's ``x`` values, nulls as the engine treats them."""
    vals = [x for x in xs if x is not None]
    return (len(xs), float(sum(vals)), (sum(vals) / len(vals)) if vals else None,
            min(vals) if vals else None, max(vals) if vals else None)


def approx(row: tuple) -> tuple:
    """``row`` with floats rounded to 6 decimals."""
    return tuple(round(v, 6) if isinstance(v, float) and not math.isnan(v) else v for v in row)


def emitted(driver: InProcessTestDriver, topic: str) -> dict:
    """(key, window_start, window_end) -> every emitted (n, total, avg, lo, hi), rounded, in
    order; the ``~flush`` key left out."""
    out = defaultdict(list)
    for r in driver.read(topic):
        row = orjson.loads(r.value)
        if r.key != b"~flush":
            out[(r.key.decode(), row["window_start"], row["window_end"])].append(
                approx((row["n"], row["total"], row["avg"], row["lo"], row["hi"])))
    return out
