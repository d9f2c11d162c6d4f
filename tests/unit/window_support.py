"""Helpers of the window oracle tests: what a window of plain values aggregates to, and rows
compared after rounding (engines add in different orders)."""

from __future__ import annotations

import math
from collections import defaultdict

import orjson
import polars as pl

from headwater.streams import InProcessTestDriver, Topology, agg
from headwater.streams.windows import AnyWindow


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


def oracle_topology(name: str, store: str, window: AnyWindow, emit: str = "final") -> Topology:
    """``n``, ``total``, ``avg``, ``lo``, ``hi`` of ``x`` per key and window to ``out``; late
    records (with their event time as ``ts``) to ``late``; with ``emit="both"`` the updates to
    ``updates``."""
    topology = Topology(name)
    result = topology.source("in", value_format="json").window(window).aggregate(
        store, emit=emit, n=agg.count(), total=agg.sum("x"), avg=agg.mean("x"),
        lo=agg.min("x"), hi=agg.max("x"))
    result.to_topic("out")
    result.late.with_columns(pl.col("_timestamp").alias("ts")).to_topic("late")
    if emit == "both":
        result.updates.to_topic("updates")
    return topology


def pipe_batches(driver: InProcessTestDriver,
                 batches: list[list[tuple[str, int, float | None]]]) -> None:
    """Each batch of ``(key, event time, x)`` as one ``pipe``."""
    for batch in batches:
        driver.pipe("in", [{"x": x} for _, _, x in batch], keys=[k for k, _, _ in batch],
                    timestamps_ms=[t for _, t, _ in batch])


def late_records(driver: InProcessTestDriver) -> list[tuple]:
    """The ``late`` output as sorted ``(key, ts, window_start, window_end)``."""
    return sorted((r.key.decode(), *(orjson.loads(r.value)[c] for c in
                                     ("ts", "window_start", "window_end")))
                  for r in driver.read("late"))
