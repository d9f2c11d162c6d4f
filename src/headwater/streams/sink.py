"""The sink hook: external side effects that take part in checkpoints (lake, read models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import polars as pl

from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator


class Sink(Protocol):
    """An external sink. The engine calls, in this order:

    - ``write(frame)`` for every batch (stage the data; do not publish yet);
    - ``flush()`` at each checkpoint, before offsets are committed (publish what was staged;
      must be idempotent, since a crash after ``flush`` and before the commit replays the batch);
    - ``close()`` on shutdown or when the worker stops.
    """

    def write(self, frame: pl.DataFrame) -> None:
        """Stage one batch."""

    def flush(self) -> None:
        """Publish everything staged since the last flush."""

    def close(self) -> None:
        """Release resources."""


@dataclass
class SinkOperator(Operator):
    """Hands each batch to a :class:`Sink`."""

    sink: Sink
    name: str = "sink"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        if frame.height:
            self.sink.write(frame)
        return frame
