"""Event-time windows: what a window is, and which windows a record falls in (vectorized).

A window is the half-open interval ``[window_start, window_end)`` of event time (epoch ms).
Windows are aligned to the epoch: a tumbling window of size ``s`` starts at a multiple of ``s``;
a hopping window of size ``s`` advancing by ``a`` starts at a multiple of ``a``.

**Closing and lateness** (Kafka Streams' rules, applied per record in consumption order): a
window closes when the stream time reaches ``window_end + grace``. The window operator tracks the
stream time per input partition as the records reach it (the task's stream time before the
batch, then the running maximum of the batch's event times), so the outcome never depends on
where batches happen to be cut. A record whose window is already closed at the stream time it
arrives at is late for that window: it goes to the late output, never into the window.

This module is the "windower" of the clock x windower x logic split: it knows nothing about
state or aggregation (see :mod:`headwater.streams.window_aggregate`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from headwater.streams.records import TIMESTAMP

WINDOW_START = "window_start"
WINDOW_END = "window_end"

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


class WindowDefinitionError(ValueError):
    """A window was defined with an impossible size, advance or grace."""


def parse_duration(value: str | int | timedelta, what: str) -> int:
    """Milliseconds of ``"500ms"``, ``"10s"``, ``"1m"``, ``"2h"``, ``"1d"``, an ``int`` (ms) or a
    ``timedelta``.

    Raises:
        WindowDefinitionError: not a duration, or negative (names ``what``).
    """
    if isinstance(value, timedelta):
        ms = int(value.total_seconds() * 1000)
    elif isinstance(value, bool):
        raise WindowDefinitionError(f"{what}: {value!r} is not a duration")
    elif isinstance(value, int):
        ms = value
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise WindowDefinitionError(
                f"{what}: {value!r} is not a duration (e.g. '500ms', '10s', '1m', '2h', '1d')")
        ms = int(match.group(1)) * _UNITS[match.group(2)]
    if ms < 0:
        raise WindowDefinitionError(f"{what}: {value!r} is negative")
    return ms


@dataclass(frozen=True)
class Window:
    """A window definition; build one with :func:`tumbling` or :func:`hopping`."""

    size_ms: int
    advance_ms: int
    grace_ms: int

    @property
    def kind(self) -> str:
        return "tumbling" if self.advance_ms == self.size_ms else "hopping"

    def describe(self) -> str:
        """E.g. ``hopping(size=300000ms, advance=60000ms, grace=0ms)`` (fingerprinted into state)."""
        return (f"{self.kind}(size={self.size_ms}ms, advance={self.advance_ms}ms, "
                f"grace={self.grace_ms}ms)")

    def assign(self, frame: pl.DataFrame, event_time: str = TIMESTAMP) -> pl.DataFrame:
        """One row per (row of ``frame``, window it falls in), with ``window_start`` and
        ``window_end`` (Int64) added; row order is kept (a row's windows oldest first)."""
        size, advance = self.size_ms, self.advance_ms
        last_start = (pl.col(event_time) // advance) * advance
        if advance == size:
            return frame.with_columns(last_start.alias(WINDOW_START),
                                      (last_start + size).alias(WINDOW_END))
        per_record = -(-size // advance)  # ceil: windows overlapping one instant
        k = "__window_k"
        exploded = (
            frame.with_columns(pl.int_ranges(per_record - 1, -1, -1, dtype=pl.Int64).alias(k))
            .explode(k)
            .with_columns((last_start - pl.col(k) * advance).alias(WINDOW_START))
            .filter(pl.col(WINDOW_START) + size > pl.col(event_time))
        )
        return exploded.drop(k).with_columns((pl.col(WINDOW_START) + size).alias(WINDOW_END))


def tumbling(size: str | int | timedelta, *, grace: str | int | timedelta = 0) -> Window:
    """Fixed, non-overlapping windows of ``size`` (e.g. ``tumbling("1m", grace="10s")``).

    Raises:
        WindowDefinitionError: ``size`` is not positive, or a duration is malformed.
    """
    size_ms = parse_duration(size, "tumbling size")
    if size_ms <= 0:
        raise WindowDefinitionError(f"tumbling size must be positive, got {size!r}")
    return Window(size_ms, size_ms, parse_duration(grace, "grace"))


def hopping(size: str | int | timedelta, advance: str | int | timedelta, *,
            grace: str | int | timedelta = 0) -> Window:
    """Overlapping windows of ``size`` starting every ``advance`` (e.g. ``hopping("5m", "1m")``:
    each record counts in 5 windows).

    Raises:
        WindowDefinitionError: ``size`` or ``advance`` is not positive, or ``advance`` exceeds
            ``size`` (records between windows would belong to none).
    """
    size_ms = parse_duration(size, "hopping size")
    advance_ms = parse_duration(advance, "hopping advance")
    if size_ms <= 0 or advance_ms <= 0:
        raise WindowDefinitionError(
            f"hopping size and advance must be positive, got {size!r} and {advance!r}")
    if advance_ms > size_ms:
        raise WindowDefinitionError(
            f"hopping advance {advance!r} exceeds its size {size!r}: records between two "
            "windows would belong to none")
    return Window(size_ms, advance_ms, parse_duration(grace, "grace"))


@dataclass(frozen=True)
class SessionWindow:
    """Session windows (build with :func:`session`): per key, a record at ``t`` opens the window
    ``[t, t + gap)``; windows that overlap merge (Flink's model; half-open, so records exactly
    ``gap`` apart do not share a session), so a session is
    ``[first event time, last event time + gap)`` and a late record that bridges two sessions
    merges them into one."""

    gap_ms: int
    grace_ms: int

    @property
    def kind(self) -> str:
        return "session"

    def describe(self) -> str:
        """E.g. ``session(gap=30000ms, grace=0ms)`` (fingerprinted into state)."""
        return f"session(gap={self.gap_ms}ms, grace={self.grace_ms}ms)"


@dataclass(frozen=True)
class SlidingWindow:
    """Sliding windows (build with :func:`sliding`), Kafka Streams' record-driven semantics:
    per key, the windows of ``size`` whose contents differ, each aligned to a record (one ending
    at each record, one starting just after it)."""

    size_ms: int
    grace_ms: int

    @property
    def kind(self) -> str:
        return "sliding"

    def describe(self) -> str:
        """E.g. ``sliding(size=60000ms, grace=0ms)`` (fingerprinted into state)."""
        return f"sliding(size={self.size_ms}ms, grace={self.grace_ms}ms)"


AnyWindow = Window | SessionWindow | SlidingWindow
"""Every window definition :meth:`headwater.streams.topology.Stream.window` accepts."""


def session(gap: str | int | timedelta, *, grace: str | int | timedelta = 0) -> SessionWindow:
    """Per-key sessions of activity separated by at least ``gap`` of inactivity (e.g.
    ``session("30m", grace="1m")``).

    Raises:
        WindowDefinitionError: ``gap`` is not positive, or a duration is malformed.
    """
    gap_ms = parse_duration(gap, "session gap")
    if gap_ms <= 0:
        raise WindowDefinitionError(f"session gap must be positive, got {gap!r}")
    return SessionWindow(gap_ms, parse_duration(grace, "grace"))


def sliding(size: str | int | timedelta, *, grace: str | int | timedelta = 0) -> SlidingWindow:
    """Windows of ``size`` that slide with the records (Kafka Streams' ``SlidingWindows``: two
    records share a window when their event times differ by at most ``size``).

    Raises:
        WindowDefinitionError: ``size`` is not positive, or a duration is malformed.
    """
    size_ms = parse_duration(size, "sliding size")
    if size_ms <= 0:
        raise WindowDefinitionError(f"sliding size must be positive, got {size!r}")
    return SlidingWindow(size_ms, parse_duration(grace, "grace"))
