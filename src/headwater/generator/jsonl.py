"""The generator's side file: one JSON object per produced record, in produce order.

Fields: ``topic``, ``key`` (string or null), ``eventType``, ``event`` (the event dict as encoded,
timestamps in epoch millis; for malformed records the event the bytes were made from),
``invalid`` (violated rule or null), ``malformed`` (kind or null), ``late`` and ``outOfOrder``
(booleans: deliberately delayed), ``latenessMs`` (max event time emitted before it minus its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from headwater.generator.model import GeneratedEvent


def record_line(topic: str, key: str | None, event: GeneratedEvent) -> bytes:
    """One line (with its newline) describing a produced record."""
    return orjson.dumps({
        "topic": topic,
        "key": key,
        "eventType": event.event_type,
        "event": event.event,
        "invalid": event.invalid,
        "malformed": event.malformed,
        "late": event.delayed == "late",
        "outOfOrder": event.delayed == "out-of-order",
        "latenessMs": event.lateness_ms,
    }) + b"\n"


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a side file, as dicts, in order."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)
