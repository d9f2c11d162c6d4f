"""What each engine workload computes, independently of any engine, and how outputs are checked.

Input: ``order.created`` events (the catalog schema), keyed by ``userId``.

- W0: consume + decode only (no output).
- W1: keep orders with ``totalAmount > 0`` and a non-empty ``items``; emit, Avro
  (:data:`W1_SCHEMA`), ``eventId, userId, orderId, totalAmount, itemCount,
  totalCents = floor(totalAmount * 100 + 0.5)``; record key unchanged.
- W1j: W1 with JSON output (the same fields as a JSON object), for engines that have no Avro
  writer (Pathway); every engine runs it the same way, so it compares like with like.
- W2: count per record key (the userId); emit JSON ``{"count": n}`` keyed by the userId (updates;
  the last one per key is the final count).
- W3: per userId, tumbling 1-minute windows (5 s grace) in event time (the envelope's
  ``timestamp``): count, sum and mean of ``totalAmount``; final results only, JSON keyed by userId.
- W3h: W3 over hopping windows, 5 minutes advancing by 1 minute.

Windows close per input partition when its stream time (max event time read) passes end + grace;
the expected windows are those the whole input closes (the input is in event-time order per
partition, so no record is late).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

WORKLOADS = ("W0", "W1", "W1j", "W2", "W3", "W3h")
#: Workloads a plain ``headwater bench engine`` runs (W1j is opt-in: ``--workloads W1j,...``).
DEFAULT_WORKLOADS = ("W0", "W1", "W2", "W3", "W3h")
WORKLOAD_TITLES = {
    "W0": "ceiling: batch consume + decode only",
    "W1": "stateless: decode -> validate -> map -> Avro to_topic",
    "W1j": "stateless: decode -> validate -> map -> JSON to_topic",
    "W2": "stateful: count per key",
    "W3": "tumbling 1 min windows: count, sum, mean per key",
    "W3h": "hopping 5 min / 1 min windows: count, sum, mean per key",
}


@dataclass(frozen=True)
class WindowSpec:
    """A windowed workload's windows (milliseconds)."""

    size_ms: int
    advance_ms: int
    grace_ms: int = 5_000

    def starts(self, t: int) -> range:
        """Starts of the windows ``[start, start + size)`` that contain event time ``t``."""
        last = t - t % self.advance_ms
        first = last - self.size_ms + self.advance_ms
        return range(first, last + 1, self.advance_ms)


WINDOWED = {"W3": WindowSpec(60_000, 60_000), "W3h": WindowSpec(300_000, 60_000)}

W1_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "ValidOrder", "namespace": "io.headwater.bench",
    "doc": "W1 output: a validated order.created event with derived columns.",
    "fields": [
        {"name": "eventId", "type": "string"},
        {"name": "userId", "type": ["null", "string"], "default": None},
        {"name": "orderId", "type": "string"},
        {"name": "totalAmount", "type": "double"},
        {"name": "itemCount", "type": "int"},
        {"name": "totalCents", "type": "long"},
    ],
}
W1_SCHEMA_STR = json.dumps(W1_SCHEMA, separators=(",", ":"))


def total_cents(amount: float) -> int:
    """The W1 derived column (same float operations as the Polars expression)."""
    return int(math.floor(amount * 100 + 0.5))


def w1_row(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """W1 for one decoded event: the output record, or None when validation drops it."""
    payload = event["data"]["payload"]
    if not (payload["totalAmount"] > 0 and len(payload["items"]) > 0):
        return None
    return {
        "eventId": str(event["eventId"]), "userId": event["userId"], "orderId": payload["orderId"],
        "totalAmount": payload["totalAmount"], "itemCount": len(payload["items"]),
        "totalCents": total_cents(payload["totalAmount"]),
    }


@dataclass
class _Windows:
    """The windowed results of one workload, built record by record in partition order."""

    spec: WindowSpec
    open: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # -> [n, sum]
    closed: dict[tuple[str, int], tuple[int, float, float]] = field(default_factory=dict)
    stream_time: dict[int, int] = field(default_factory=dict)  # per partition
    late: int = 0

    def add(self, partition: int, key: str, t: int, amount: float) -> None:
        observed = max(self.stream_time.get(partition, t), t)
        self.stream_time[partition] = observed
        for start in self.spec.starts(t):
            if start + self.spec.size_ms + self.spec.grace_ms <= observed:
                self.late += 1
                continue
            acc = self.open.setdefault((key, start), [0, 0.0])
            acc[0] += 1
            acc[1] += amount

    def finish(self, partition_of_key: Mapping[str, int]) -> None:
        """Close the windows the final stream time of their key's partition closes."""
        for (key, start), (n, total) in self.open.items():
            end = start + self.spec.size_ms
            if end + self.spec.grace_ms <= self.stream_time[partition_of_key[key]]:
                self.closed[(key, start)] = (n, total, total / n)

    @property
    def all_windows(self) -> dict[tuple[str, int], tuple[int, float, float]]:
        """Every window of the input, closed or still open at its end, with its final count, sum
        and mean: what an engine that closes all windows when its input ends emits (Pathway in
        the suite's static-mode runs)."""
        return {k: (n, total, total / n) for k, (n, total) in self.open.items()}


@dataclass
class Expected:
    """Results computed by the harness from the input records themselves."""

    events: int = 0
    w1: dict[str, tuple] = field(default_factory=dict)  # eventId -> (orderId, itemCount, totalCents)
    w2: Counter = field(default_factory=Counter)  # key -> count
    windows: dict[str, _Windows] = field(
        default_factory=lambda: {w: _Windows(spec) for w, spec in WINDOWED.items()})
    partition_of_key: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, event: Mapping[str, Any], partition: int = 0) -> None:
        """Account for one input record (records of a partition in offset order)."""
        self.events += 1
        self.w2[key] += 1
        row = w1_row(event)
        if row is not None:
            self.w1[row["eventId"]] = (row["orderId"], row["itemCount"], row["totalCents"])
        self.partition_of_key[key] = partition
        t = event_time_ms(event["timestamp"])
        amount = float(event["data"]["payload"]["totalAmount"])
        for windows in self.windows.values():
            windows.add(partition, key, t, amount)

    def finish(self) -> None:
        """After the last record: close the windows the input's stream time closes."""
        for windows in self.windows.values():
            windows.finish(self.partition_of_key)


def event_time_ms(value: Any) -> int:
    """The envelope timestamp as epoch ms (fastavro decodes timestamp-millis as a datetime)."""
    return value if isinstance(value, int) else int(round(value.timestamp() * 1000))


def window_view(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[tuple[str, int], tuple]:
    """Windowed output (key, JSON value) as (key, window start) -> (count, sum, mean); the value
    holds ``window_start`` (headwater) or ``start`` (Quix) and ``count``, ``total``, ``avg``."""
    out: dict[tuple[str, int], tuple] = {}
    for key, value in records:
        if key is None or value is None:
            continue
        v = orjson.loads(value)
        start = v["window_start"] if "window_start" in v else v["start"]
        out[(key.decode(), int(start))] = (int(v["count"]), float(v["total"]), float(v["avg"]))
    return out


def w1_view(records: Iterable[dict[str, Any]]) -> dict[str, tuple]:
    """Decoded W1 output records as eventId -> (orderId, itemCount, totalCents)."""
    return {r["eventId"]: (r["orderId"], r["itemCount"], r["totalCents"]) for r in records}


def w1_json_view(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, tuple]:
    """W1j output (key, JSON value) records as eventId -> (orderId, itemCount, totalCents)."""
    return w1_view(orjson.loads(v) for _, v in records if v)


def final_state(records: Iterable[tuple[bytes | None, bytes | None]]) -> list[tuple[bytes | None, bytes]]:
    """An update stream's final state, for engines whose output carries ``diff`` (Pathway).

    Each JSON value is a row plus ``diff`` (+1 insert, -1 retraction) and ``time``. The rows
    (without those two fields) are summed by (key, row) over the whole output; rows whose sum is
    positive are the final state, returned once each as (key, JSON row), in first-seen order.
    Retractions and insertions of one logical time may come in any order; this does not depend
    on it. Values without ``diff`` count as inserts.
    """
    net: dict[tuple[bytes | None, bytes], int] = {}
    for key, value in records:
        if value is None:
            continue
        row = orjson.loads(value)
        diff = int(row.pop("diff", 1))
        row.pop("time", None)
        ident = (key, orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
        net[ident] = net.get(ident, 0) + diff
    return [ident for ident, n in net.items() for _ in range(n)]


def w2_view(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, int]:
    """W2 output (key, JSON value) records as key -> last count."""
    out: dict[str, int] = {}
    for key, value in records:
        if key is not None and value is not None:
            out[key.decode()] = int(orjson.loads(value)["count"])
    return out


def _same(workload: str, got: Any, want: Any) -> bool:
    if workload not in WINDOWED:
        return bool(got == want)
    return got[0] == want[0] and all(math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-6)
                                     for g, w in zip(got[1:], want[1:]))


def check(workload: str, view: Mapping[Any, Any], expected: Expected,
          windows_at_end: bool = False) -> tuple[bool, str]:
    """Whether an output view equals the expected result (window sums and means to 1e-9, as
    engines add in different orders); a short reason when it does not. ``windows_at_end``: the
    engine closes every window when its input ends, so all the input's windows are expected,
    not only those its stream time closes."""
    want: Mapping[Any, Any]
    if workload in ("W1", "W1j"):
        want = expected.w1
    elif workload in WINDOWED:
        windows = expected.windows[workload]
        want = windows.all_windows if windows_at_end else windows.closed
    else:
        want = dict(expected.w2)
    differ = sum(1 for k in set(want) & set(view) if not _same(workload, view[k], want[k]))
    if set(view) == set(want) and not differ:
        return True, ""
    missing = len(set(want) - set(view))
    extra = len(set(view) - set(want))
    return False, f"{len(view)} keys vs {len(want)} expected: {missing} missing, {extra} extra, {differ} differ"
