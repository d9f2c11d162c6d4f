"""Two-phase sinks: the reference ``LocalDirectorySink`` alone, then with crashes in the driver."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from headwater.streams import InProcessTestDriver, Topology, TopologyError
from headwater.streams.local_sink import LocalDirectorySink
from headwater.streams.sink import (
    Checkpoint, FlushSink, SourceRange, Staged, TaskCommit, TaskPosition,
)
from headwater.streams.task import TaskId
from tests.unit.timer_support import Heartbeat

TASK = TaskId(0, 3)
RANGE = (SourceRange("orders", 3, 10, 15),)


def staged_sink(directory: Path) -> tuple[LocalDirectorySink, Staged]:
    sink = LocalDirectorySink(directory)
    sink.on_assign({TASK})
    sink.write(TASK, pl.DataFrame({"_offset": [10, 11], "v": ["a", "b"]}))
    sink.write(TASK, pl.DataFrame({"_offset": [14], "v": ["c"]}))
    return sink, sink.pre_commit(Checkpoint(1, {TASK: TaskPosition(4, RANGE)}))


def rows(sink: LocalDirectorySink) -> list[str]:
    return [v for path in sink.published() for v in pl.read_parquet(path)["v"].to_list()]


def test_pre_commit_stages_invisibly_and_commit_publishes_under_a_deterministic_name(
    tmp_path: Path,
) -> None:
    sink, staged = staged_sink(tmp_path)
    assert sink.published() == []
    [part] = staged.parts
    assert (part.task, part.seq, part.ranges) == (TASK, 4, RANGE)
    assert [p.name for p in sink.staged()] == ["0_3-0000000004-orders.3.10-15.parquet"]
    sink.commit(staged)
    assert [p.name for p in sink.published()] == ["0_3-0000000004-orders.3.10-15.parquet"]
    assert rows(sink) == ["a", "b", "c"] and sink.staged() == []


def test_committing_twice_is_harmless(tmp_path: Path) -> None:
    sink, staged = staged_sink(tmp_path)
    sink.commit(staged)
    sink.commit(staged)
    assert rows(sink) == ["a", "b", "c"]


def test_abort_discards_what_was_staged(tmp_path: Path) -> None:
    sink, staged = staged_sink(tmp_path)
    sink.abort(staged)
    assert sink.staged() == [] and sink.published() == []


def test_recover_publishes_staged_data_whose_commit_happened(tmp_path: Path) -> None:
    staged_sink(tmp_path)  # the process dies after pre_commit, after the Kafka commit
    successor = LocalDirectorySink(tmp_path)
    successor.on_assign({TASK})
    committed = TaskCommit(seq=4, offsets={("orders", 3): 15})
    successor.recover(TASK, committed)
    successor.recover(TASK, committed)  # idempotent
    assert rows(successor) == ["a", "b", "c"] and successor.staged() == []


def test_recover_discards_staged_data_whose_commit_did_not_happen(tmp_path: Path) -> None:
    staged_sink(tmp_path)  # the process dies after pre_commit, before the Kafka commit
    successor = LocalDirectorySink(tmp_path)
    successor.recover(TASK, TaskCommit(seq=3, offsets={("orders", 3): 10}))
    assert successor.published() == [] and successor.staged() == []


def test_recover_leaves_other_tasks_staged_data_alone(tmp_path: Path) -> None:
    staged_sink(tmp_path)
    LocalDirectorySink(tmp_path).recover(TaskId(0, 4), TaskCommit(seq=0, offsets={}))
    assert len(LocalDirectorySink(tmp_path).staged()) == 1


@pytest.mark.parametrize(("committed_offset", "published"), [(15, True), (16, True), (14, False)])
def test_without_a_committed_sequence_the_offsets_decide(
    tmp_path: Path, committed_offset: int, published: bool
) -> None:
    staged_sink(tmp_path)
    successor = LocalDirectorySink(tmp_path)
    successor.recover(TASK, TaskCommit(seq=None, offsets={("orders", 3): committed_offset}))
    assert bool(successor.published()) is published and successor.staged() == []


# --- with the driver ------------------------------------------------------------------------

def sink_topology(sink: LocalDirectorySink) -> Topology:
    topology = Topology("to-files")
    topology.source("in", value_format="json").filter(pl.col("v") != "skip").sink(sink)
    return topology


def test_each_checkpoint_publishes_one_file_per_task_that_wrote(tmp_path: Path) -> None:
    sink = LocalDirectorySink(tmp_path)
    driver = InProcessTestDriver(sink_topology(sink), partitions=2)
    driver.pipe("in", [{"v": "a"}, {"v": "b"}], partition=0)
    driver.pipe("in", [{"v": "c"}], partition=1)
    driver.pipe("in", [{"v": "skip"}], partition=1)
    assert [p.name for p in sink.published()] == [
        "0_0-0000000001-in.0.0-2.parquet", "0_1-0000000002-in.1.0-1.parquet"]
    assert rows(sink) == ["a", "b", "c"]


def test_a_crash_before_the_kafka_commit_discards_staged_data_and_replays_it_once(
    tmp_path: Path,
) -> None:
    sink = LocalDirectorySink(tmp_path)
    driver = InProcessTestDriver(sink_topology(sink), partitions=1, auto_checkpoint=False)
    driver.pipe("in", [{"v": "a"}])
    driver.checkpoint()
    driver.pipe("in", [{"v": "b"}, {"v": "c"}])
    driver.crash(after="pre_commit")
    assert rows(sink) == ["a"] and sink.staged() == []  # recovered: discarded
    driver.checkpoint()  # the replayed records
    assert rows(sink) == ["a", "b", "c"]


def test_a_crash_after_the_kafka_commit_publishes_staged_data_without_replay(
    tmp_path: Path,
) -> None:
    sink = LocalDirectorySink(tmp_path)
    driver = InProcessTestDriver(sink_topology(sink), partitions=1, auto_checkpoint=False)
    driver.pipe("in", [{"v": "a"}, {"v": "b"}])
    driver.crash(after="commit")
    assert rows(sink) == ["a", "b"] and sink.staged() == []
    driver.checkpoint()
    assert rows(sink) == ["a", "b"]


@pytest.mark.parametrize(("after", "beats"), [("pre_commit", 0), ("commit", 1)])
def test_output_of_an_interval_without_records_is_decided_by_the_checkpoint_sequence(
    tmp_path: Path, after: str, beats: int
) -> None:
    sink = LocalDirectorySink(tmp_path)
    topology = Topology("beats")
    topology.source("in", value_format="json").apply(Heartbeat()).sink(sink)
    driver = InProcessTestDriver(topology, partitions=1, auto_checkpoint=False)
    driver.pipe("in", [{}])
    driver.checkpoint()
    published = len(sink.published())
    driver.advance_time(1_000)  # a heartbeat; the offsets do not move
    driver.crash(after=after)  # type: ignore[arg-type]
    assert len(sink.published()) == published + beats and sink.staged() == []


def test_a_failing_pre_commit_aborts_the_staged_sinks_and_keeps_the_sequence(
    tmp_path: Path,
) -> None:
    class Broken(FlushSink):
        def append(self, frame: pl.DataFrame) -> None:
            pass

        def flush(self) -> None:
            raise OSError("disk full")

    good = LocalDirectorySink(tmp_path)
    topology = Topology("two-sinks")
    stream = topology.source("in", value_format="json")
    stream.sink(good)
    stream.sink(Broken())
    driver = InProcessTestDriver(topology, partitions=1, auto_checkpoint=False)
    driver.pipe("in", [{"v": "a"}])
    with pytest.raises(OSError, match="disk full"):
        driver.checkpoint()
    assert good.staged() == [] and good.published() == []
    assert driver.offset_metadata(TaskId(0, 0)) == '{"cs":0,"st":0}'


def test_a_flushing_sink_is_flushed_at_each_checkpoint_before_the_commit() -> None:
    events: list[object] = []

    class ListSink(FlushSink):
        def append(self, frame: pl.DataFrame) -> None:
            events.extend(frame["v"].to_list())

        def flush(self) -> None:
            events.append(("flush", dict(driver.committed)))

    topology = Topology("flushing")
    topology.source("in", value_format="json").sink(ListSink())
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"v": "a"}, {"v": "b"}])
    assert events == ["a", "b", ("flush", {})]  # flushed before the offsets were committed
    assert driver.committed[("in", 0)].offset == 2


def test_a_plain_write_flush_close_object_is_flushed_at_each_checkpoint() -> None:
    class Plain:
        def __init__(self) -> None:
            self.rows: list[str] = []
            self.flushed: list[int] = []

        def write(self, frame: pl.DataFrame) -> None:
            self.rows.extend(frame["v"].to_list())

        def flush(self) -> None:
            self.flushed.append(len(self.rows))

        def close(self) -> None: ...

    plain = Plain()
    topology = Topology("plain")
    topology.source("in", value_format="json").sink(plain)
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"v": "a"}, {"v": "b"}])
    driver.pipe("in", [{"v": "c"}])
    assert plain.rows == ["a", "b", "c"] and plain.flushed == [2, 3]
    assert len(topology.sinks) == 1


def test_an_object_that_is_no_sink_is_rejected_when_building() -> None:
    class WriteOnly:
        def write(self, frame: pl.DataFrame) -> None: ...

    with pytest.raises(TopologyError, match="WriteOnly is not a Sink"):
        Topology("bad").source("in", value_format="json").sink(WriteOnly())  # type: ignore[arg-type]
