"""Sub-topologies and tasks: what a task owns, and how rebalances move it (in the driver)."""

from __future__ import annotations

import polars as pl
import pytest

from headwater.streams import InProcessTestDriver, Topology, TopologyError, agg
from headwater.streams.batch import TaskError
from headwater.streams.partitioner import partition_for
from headwater.streams.sink import FlushSink, TaskCommit
from headwater.streams.task import Committed, TaskId


def two_chains() -> Topology:
    """orders -> key_by(user) -> count per user; and -> key_by(sku) -> count per sku."""
    topology = Topology("two-chains")
    orders = topology.source("orders", value_format="json")
    orders.key_by("user").aggregate("per-user", n=agg.count()).to_topic("users")
    orders.key_by("sku").aggregate("per-sku", n=agg.count()).to_topic("skus")
    return topology


def test_each_repartition_boundary_starts_a_subtopology() -> None:
    topology = two_chains()
    assert [s.source_topics for s in topology.subtopologies] == [
        ("orders",), ("per-user-repartition",), ("per-sku-repartition",)]
    assert topology.subtopology_of("orders") == 0
    assert topology.subtopology_of("per-sku-repartition") == 2
    assert topology.stores_of(0) == []
    assert [s.name for s in topology.stores_of(1)] == ["per-user"]
    assert topology.source_topics_of(2) == ["per-sku-repartition"]
    assert topology.copartition_groups() == []  # one source per stateful sub-topology


def test_stateful_source_without_key_by_is_one_subtopology_with_its_store() -> None:
    topology = Topology("direct")
    topology.source("in", value_format="json").filter(pl.col("x") > 0).aggregate(
        "counts", n=agg.count())
    [sub] = topology.subtopologies
    assert sub.source_topics == ("in",) and [s.name for s in sub.stores] == ["counts"]


def test_the_join_hook_merges_sources_into_one_copartitioned_subtopology() -> None:
    topology = Topology("joined")
    topology.source("left", value_format="json").aggregate("l", n=agg.count())
    topology.source("right", value_format="json").aggregate("r", n=agg.count())
    topology.source("other", value_format="json").to_topic("out")
    assert len(topology.subtopologies) == 3
    topology._copartition("left", "right")
    assert [s.source_topics for s in topology.subtopologies] == [("left", "right"), ("other",)]
    assert topology.subtopology_of("right") == 0
    assert {s.name for s in topology.stores_of(0)} == {"l", "r"}
    assert topology.copartition_groups() == [frozenset({"left", "right"})]
    with pytest.raises(TopologyError, match="differ in partitions"):
        InProcessTestDriver(topology, partitions={"left": 2, "right": 3})


def test_unknown_topics_and_subtopologies_fail_loudly() -> None:
    topology = two_chains()
    with pytest.raises(TopologyError, match="not a source"):
        topology.subtopology_of("nope")
    with pytest.raises(TopologyError, match="no sub-topology 7"):
        topology.stores_of(7)


def test_repartition_records_are_routed_by_murmur2_of_the_key() -> None:
    driver = InProcessTestDriver(two_chains(), partitions=4)
    users = [f"u{i}" for i in range(12)]
    driver.pipe("orders", [{"user": u, "sku": "s"} for u in users], partition=3)
    for p in range(4):
        keys = [r.key for r in driver.records("per-user-repartition", p)]
        assert keys == [u.encode() for u in users if partition_for(u.encode(), 4) == p]
        assert set(driver.store("per-user", p)) == set(keys)
    assert len({p for p in range(4) if driver.records("per-user-repartition", p)}) > 1


def test_two_key_by_aggregate_chains_each_count_by_their_own_key() -> None:
    driver = InProcessTestDriver(two_chains(), partitions=2)
    driver.pipe("orders", [{"user": "a", "sku": "x"}, {"user": "b", "sku": "x"}], partition=0)
    driver.pipe("orders", [{"user": "a", "sku": "y"}], partition=1)
    latest_users = {r.key: r for r in driver.read("users")}
    latest_skus = {r.key: r for r in driver.read("skus")}
    assert {k: pl.read_ndjson(r.value)["n"][0] for k, r in latest_users.items()} == {b"a": 2, b"b": 1}
    assert {k: pl.read_ndjson(r.value)["n"][0] for k, r in latest_skus.items()} == {b"x": 2, b"y": 1}


def test_tasks_for_maps_partitions_to_their_tasks() -> None:
    driver = InProcessTestDriver(two_chains(), partitions=2)
    assert driver.tasks_for([("orders", 1), ("per-sku-repartition", 0)]) == {
        TaskId(0, 1), TaskId(2, 0)}
    assert set(driver.tasks) == {TaskId(s, p) for s in range(3) for p in range(2)}
    assert str(TaskId(2, 0)) == "2_0"


def test_releasing_a_task_touches_only_that_tasks_stores() -> None:
    topology = two_chains()
    driver = InProcessTestDriver(topology, partitions=2, auto_checkpoint=False)
    driver.pipe("orders", [{"user": u, "sku": u} for u in ("a", "b", "c", "d")])
    dirty = {key for key, _ in driver.dirty_caches()}
    assert {("per-user", 0), ("per-user", 1), ("per-sku", 0)} <= dirty
    with pytest.raises(TaskError, match="uncheckpointed"):
        driver.release_tasks({TaskId(1, 0)}, discard=False)
    closed = driver.release_tasks({TaskId(1, 0)}, discard=True)
    assert closed == [("per-user", 0)]
    assert {key for key, _ in driver.dirty_caches()} == dirty - {("per-user", 0)}
    assert TaskId(1, 0) not in driver.tasks and TaskId(2, 0) in driver.tasks


def test_revoked_partitions_wait_and_resume_from_their_state_when_assigned_again() -> None:
    topology = Topology("counts")
    topology.source("in", value_format="json").aggregate("n", n=agg.count()).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=2)
    driver.pipe("in", [{"v": 1}], keys=["k"], partition=0)
    assert driver.revoke([("in", 0)]) == {TaskId(0, 0)}
    driver.pipe("in", [{"v": 2}], keys=["k"], partition=0)
    driver.pipe("in", [{"v": 3}], keys=["k"], partition=1)
    assert [r["n"] for r in driver.read_json("out")] == [1, 1]  # partition 0's record waits
    driver.assign([("in", 0)])
    assert [r["n"] for r in driver.read_json("out")] == [1, 1, 2]
    assert driver.committed[("in", 0)].offset == 2


def test_a_lost_task_forgets_uncommitted_state_and_replays_from_the_commit() -> None:
    topology = Topology("counts")
    topology.source("in", value_format="json").aggregate("n", n=agg.count()).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1, auto_checkpoint=False)
    driver.pipe("in", [{"v": 1}], keys=["k"])
    driver.checkpoint()
    driver.pipe("in", [{"v": 2}], keys=["k"])
    driver.lose([("in", 0)])
    assert driver.store("n") and driver.committed[("in", 0)].offset == 1
    driver.assign([("in", 0)])  # the record at offset 1 is processed again, counted once
    driver.checkpoint()
    assert [r["n"] for r in driver.read_json("out")] == [1, 2, 2]
    assert driver.committed[("in", 0)].offset == 2


def test_pipe_rejects_partitions_the_topic_does_not_have() -> None:
    driver = InProcessTestDriver(two_chains(), partitions=2)
    with pytest.raises(ValueError, match="no partition 2"):
        driver.pipe("orders", [{"user": "a"}], partition=2)
    with pytest.raises(ValueError, match="repartition topic"):
        driver.pipe("per-user-repartition", [{"user": "a"}])


def test_assignment_restores_a_joined_task_from_the_partitions_that_were_committed() -> None:
    recovered: list[tuple[TaskId, TaskCommit]] = []

    class Recording(FlushSink):
        def append(self, frame: pl.DataFrame) -> None: ...
        def flush(self) -> None: ...

        def recover(self, task: TaskId, committed: TaskCommit) -> None:
            recovered.append((task, committed))

    topology = Topology("joined")
    topology.source("left", value_format="json").sink(Recording())
    topology.source("right", value_format="json").aggregate("r", n=agg.count())
    topology._copartition("left", "right")
    driver = InProcessTestDriver(topology)  # no partition counts: nothing assigned up front
    assigned = driver.assign_tasks(
        [("right", 1)], {("left", 1): Committed(5, '{"st": 9, "cs": 4}')})
    assert assigned == {TaskId(0, 1)}
    assert recovered == [(TaskId(0, 1), TaskCommit(4, {("left", 1): 5}))]
    assert driver.stream_time(TaskId(0, 1)) == 9
    assert driver.offset_metadata(TaskId(0, 1)) == '{"cs":4,"st":9}'
    assert driver.assign_tasks([("left", 1)], {}) == set()  # already assigned: left alone


def test_records_of_a_task_never_assigned_fail_instead_of_starting_it_without_history() -> None:
    from headwater.streams.batch import plain_decoder
    from headwater.streams.records import RecordBatch

    topology = Topology("strict")
    topology.source("in", value_format="json").aggregate("counts", n=agg.count())
    driver = InProcessTestDriver(topology)  # no partition counts: nothing assigned up front
    batch = RecordBatch("in", [2], [0], [0], [b"k"], [b'{"x": 1}'])
    spec = topology.sources["in"]
    with pytest.raises(TaskError, match=r"in\[2\] arrived before its task"):
        driver.process(spec, plain_decoder(spec), batch)
