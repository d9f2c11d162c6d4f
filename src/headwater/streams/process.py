"""Keyed ``process``: per-key Python logic with JSON state (the stateful slow path).

Stored state is ``0x01`` (format ``json v1``, see ``headwater.state.codec``) + the orjson document;
``None`` deletes the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from headwater.state.codec import JSON_V1
from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC, user_columns

ProcessFn = Callable[[str, list[dict[str, Any]], Any], tuple[Any, list[dict[str, Any]]]]


@dataclass
class Process(Operator):
    """Calls ``fn(key, rows, state)`` once per key per batch; emits the returned rows.

    Each emitted row carries the key and the metadata of the key's last input row.
    """

    fn: ProcessFn
    store: str
    name: str = "process"
    stateful: bool = True

    def store_names(self) -> list[str]:
        return [self.store]

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        cols = user_columns(frame)
        emitted: list[dict[str, Any]] = []
        by_partition = frame.filter(pl.col(KEY).is_not_null()).partition_by(
            PARTITION, KEY, maintain_order=True, as_dict=True
        )
        updates: dict[int, tuple[list[bytes], list[bytes | None]]] = {}
        for (partition, key), group in by_partition.items():
            cache = ctx.state(self.store, int(partition))
            raw = cache.get_many([key.encode()])[0]
            state = None if raw is None else orjson.loads(
                JSON_V1.decode(raw, store=self.store, partition=int(partition), key=key.encode())
            )
            new_state, rows = self.fn(key, group.select(cols).to_dicts(), state)
            keys, values = updates.setdefault(int(partition), ([], []))
            keys.append(key.encode())
            values.append(None if new_state is None else JSON_V1.encode(orjson.dumps(new_state)))
            last = group.row(-1, named=True)
            meta = {k: last[k] for k in (TOPIC, PARTITION, OFFSET, TIMESTAMP)}
            emitted.extend({**row, **meta, KEY: key} for row in rows)
        for partition, (keys, values) in updates.items():
            ctx.state(self.store, partition).put_many(keys, values)
        if not emitted:
            return frame.select(KEY, TOPIC, PARTITION, OFFSET, TIMESTAMP).clear()
        return pl.from_dicts(emitted, infer_schema_length=None)
