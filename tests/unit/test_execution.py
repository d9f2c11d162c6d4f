"""Error isolation (streams.execution): bad rows are isolated without running an operator twice
over the same rows, and infrastructure errors fail the worker instead of dead-lettering rows."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest

from headwater.schemas.errors import SchemaRegistryUnavailable
from headwater.streams import InProcessTestDriver, Topology
from headwater.streams.execution import Node, run_node
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC


@dataclass
class CountThenCheck(Operator):
    """Counts rows per key in state *before* validating them: the write precedes the failure."""

    name: str = "count-then-check"
    stateful: bool = True

    def store_names(self) -> list[str]:
        return ["seen"]

    def apply(self, frame: pl.DataFrame, ctx) -> pl.DataFrame:
        cache = ctx.state("seen", 0)
        keys = [k.encode() for k in frame.get_column(KEY).to_list()]
        old = cache.get_many(keys)
        counts: dict[bytes, int] = {}
        for key, value in zip(keys, old):
            counts[key] = counts.get(key, int(value or b"0")) + 1
        cache.put_many(list(counts), [str(n).encode() for n in counts.values()])
        if frame.get_column("poison").any():
            raise ValueError("poison row")
        return frame


@dataclass
class RegistryDown(Operator):
    name: str = "encode"

    def apply(self, frame: pl.DataFrame, ctx) -> pl.DataFrame:
        raise SchemaRegistryUnavailable("get schema 7", "connection refused")


def frame(poison: list[bool]) -> pl.DataFrame:
    n = len(poison)
    return pl.DataFrame({
        KEY: ["k"] * n, TOPIC: ["in"] * n, PARTITION: [0] * n, OFFSET: list(range(n)),
        TIMESTAMP: [0] * n, "poison": poison,
    })


def driver() -> InProcessTestDriver:
    topology = Topology("t")
    topology.source("in", value_format="json")
    return InProcessTestDriver(topology)


def test_state_written_before_a_failure_is_rolled_back_before_rows_are_re_run() -> None:
    ctx = driver()
    ctx.state("seen", 0).put_many([b"k"], [b"10"])  # state from earlier batches
    run_node(Node(CountThenCheck()), frame([False, True, False]), ctx, "skip")
    # two good rows counted once each on top of 10; the failed batch attempt and the poison
    # row's own attempt left nothing behind
    assert ctx.state("seen", 0).get_many([b"k"]) == [b"12"]


def test_state_of_a_cache_opened_by_the_failed_attempt_is_discarded() -> None:
    ctx = driver()
    run_node(Node(CountThenCheck()), frame([True, False]), ctx, "skip")
    assert ctx.state("seen", 0).get_many([b"k"]) == [b"1"]


def test_an_infrastructure_error_fails_the_batch_instead_of_dead_lettering_rows() -> None:
    ctx = driver()
    with pytest.raises(SchemaRegistryUnavailable):
        run_node(Node(RegistryDown()), frame([False, False]), ctx, "dlq")
    assert ctx.dead_letters == []
