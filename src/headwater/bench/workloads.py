"""What each engine workload computes, independently of any engine, and how outputs are checked.

Input: ``order.created`` events (the catalog schema), keyed by ``userId``.

- W0: consume + decode only (no output).
- W1: keep orders with ``totalAmount > 0`` and a non-empty ``items``; emit, Avro
  (:data:`W1_SCHEMA`), ``eventId, userId, orderId, totalAmount, itemCount,
  totalCents = floor(totalAmount * 100 + 0.5)``; record key unchanged.
- W2: count per record key (the userId); emit JSON ``{"count": n}`` keyed by the userId (updates;
  the last one per key is the final count).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

WORKLOADS = ("W0", "W1", "W2")
WORKLOAD_TITLES = {
    "W0": "ceiling: batch consume + decode only",
    "W1": "stateless: decode -> validate -> map -> Avro to_topic",
    "W2": "stateful: count per key",
}

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
class Expected:
    """Results computed by the harness from the input records themselves."""

    events: int = 0
    w1: dict[str, tuple] = field(default_factory=dict)  # eventId -> (orderId, itemCount, totalCents)
    w2: Counter = field(default_factory=Counter)  # key -> count

    def add(self, key: str, event: Mapping[str, Any]) -> None:
        """Account for one input record."""
        self.events += 1
        self.w2[key] += 1
        row = w1_row(event)
        if row is not None:
            self.w1[row["eventId"]] = (row["orderId"], row["itemCount"], row["totalCents"])


def w1_view(records: Iterable[dict[str, Any]]) -> dict[str, tuple]:
    """Decoded W1 output records as eventId -> (orderId, itemCount, totalCents)."""
    return {r["eventId"]: (r["orderId"], r["itemCount"], r["totalCents"]) for r in records}


def w2_view(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, int]:
    """W2 output (key, JSON value) records as key -> last count."""
    out: dict[str, int] = {}
    for key, value in records:
        if key is not None and value is not None:
            out[key.decode()] = int(orjson.loads(value)["count"])
    return out


def check(workload: str, view: Mapping[str, Any], expected: Expected) -> tuple[bool, str]:
    """Whether an output view equals the expected result; a short reason when it does not."""
    want: Mapping[str, Any] = expected.w1 if workload == "W1" else dict(expected.w2)
    if view == want:
        return True, ""
    missing = len(set(want) - set(view))
    extra = len(set(view) - set(want))
    differ = sum(1 for k in set(want) & set(view) if want[k] != view[k])
    return False, f"{len(view)} keys vs {len(want)} expected: {missing} missing, {extra} extra, {differ} differ"
