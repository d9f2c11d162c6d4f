"""``process`` state encoding: a json v1 format byte in front of the JSON document."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from headwater.state import MemoryStore, StateError, WriteBackCache
from headwater.streams import InProcessTestDriver, Topology
from headwater.streams.process import Process
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC


def count_events(key: str, rows: list[dict[str, Any]], state: Any) -> tuple[Any, list[dict]]:
    seen = (state or {"events": 0})["events"] + len(rows)
    return ({"events": seen} if seen < 3 else None), [{"events": seen}]


def test_process_state_is_stored_as_json_v1_and_none_deletes() -> None:
    topology = Topology("sessions")
    topology.source("in", value_format="json").process(count_events, store="s").to_topic("out")
    driver = InProcessTestDriver(topology)
    driver.pipe("in", [{"e": 1}, {"e": 2}], keys=["u", "u"])
    assert driver.store("s") == {b"u": b'\x01{"events":2}'}
    driver.pipe("in", [{"e": 3}], keys=["u"])
    assert driver.store("s") == {}
    assert [r["events"] for r in driver.read_json("out")] == [2, 3]


def test_process_refuses_state_in_another_format() -> None:
    store = MemoryStore("s", 1)
    store.write_batch({b"u": b'{"events":2}'}, None)  # unversioned JSON
    cache = WriteBackCache(store)

    class Ctx:
        def state(self, name: str, partition: int) -> WriteBackCache:
            return cache

    frame = pl.DataFrame({KEY: ["u"], TOPIC: ["in"], PARTITION: [1], OFFSET: [0],
                          TIMESTAMP: [0], "e": [1]})
    with pytest.raises(StateError, match="unknown format byte 0x7b") as info:
        Process(count_events, store="s").apply(frame, Ctx())  # type: ignore[arg-type]
    assert (info.value.store, info.value.partition) == ("s", 1)
    assert cache.dirty() == {}  # nothing written before the failure
