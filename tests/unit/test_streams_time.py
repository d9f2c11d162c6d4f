"""Stream time per task, its persistence in the commit metadata, and timers (in the driver)."""

from __future__ import annotations

import orjson
import polars as pl
import pytest

from headwater.streams import InProcessTestDriver, Topology, TopologyError, agg
from headwater.streams.batch import TaskError
from headwater.streams.operators import Operator
from headwater.streams.task import TaskId
from headwater.streams.time import EventTimeError, TimerKind, TimerOperator, TimerOutputError
from tests.unit.timer_support import Heartbeat, PeriodCounter, StreamTimeProbe


def passthrough(probe: Operator | None = None) -> Topology:
    topology = Topology("passthrough")
    stream = topology.source("in", value_format="json")
    (stream.apply(probe) if probe else stream).to_topic("out")
    return topology


def test_stream_time_is_the_max_event_time_per_task_and_never_goes_back() -> None:
    driver = InProcessTestDriver(passthrough(), partitions=2)
    driver.pipe("in", [{}, {}, {}], partition=0, timestamps_ms=[300, 100, 200])
    driver.pipe("in", [{}], partition=1, timestamps_ms=[50])
    driver.pipe("in", [{}], partition=0, timestamps_ms=[250])  # late: time stays
    assert driver.stream_time(TaskId(0, 0)) == 300
    assert driver.stream_time(TaskId(0, 1)) == 50


def test_operators_see_the_stream_time_before_their_batch() -> None:
    probe = StreamTimeProbe()
    driver = InProcessTestDriver(passthrough(probe), partitions=1)
    driver.pipe("in", [{}], timestamps_ms=[10])
    driver.pipe("in", [{}], timestamps_ms=[20])
    assert probe.seen == [None, 10]
    assert driver.stream_time(TaskId(0, 0)) == 20


def timed_passthrough(event_time: str | pl.Expr) -> Topology:
    topology = Topology("timed")
    topology.source("in", value_format="json", event_time=event_time).to_topic("out")
    return topology


def test_a_source_event_time_expression_replaces_the_record_timestamp() -> None:
    driver = InProcessTestDriver(timed_passthrough("at"), partitions=1)
    driver.pipe("in", [{"at": 7_000}, {"at": 9_000}], timestamps_ms=[1, 2])
    assert driver.stream_time(TaskId(0, 0)) == 9_000
    assert [r.timestamp_ms for r in driver.read("out")] == [7_000, 9_000]


def test_a_record_without_an_event_time_keeps_its_kafka_timestamp() -> None:
    driver = InProcessTestDriver(timed_passthrough("at"), partitions=1)
    driver.pipe("in", [{"at": 7_000}, {"at": None}], timestamps_ms=[1, 8_000])
    assert [r.timestamp_ms for r in driver.read("out")] == [7_000, 8_000]
    assert driver.stream_time(TaskId(0, 0)) == 8_000


def test_a_datetime_event_time_is_taken_as_epoch_milliseconds() -> None:
    parsed = pl.col("at").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC")
    driver = InProcessTestDriver(timed_passthrough(parsed), partitions=1)
    driver.pipe("in", [{"at": "1970-01-01T00:00:05.250Z"}], timestamps_ms=[1])
    assert [r.timestamp_ms for r in driver.read("out")] == [5_250]


def test_a_record_whose_event_time_is_not_a_time_is_dead_lettered_with_the_reason() -> None:
    driver = InProcessTestDriver(timed_passthrough("at"), partitions=1)
    driver.pipe("in", [{"at": "soon"}, {"at": "7000"}], timestamps_ms=[1, 2])
    assert [r.timestamp_ms for r in driver.read("out")] == [7_000]
    [letter] = driver.dead_letters
    assert letter.source_offset == 0 and letter.error_class == "EventTimeError"
    assert "neither epoch milliseconds nor a datetime" in letter.error_message


def test_a_json_batch_without_the_event_time_field_keeps_the_kafka_timestamps() -> None:
    driver = InProcessTestDriver(timed_passthrough("at"), partitions=1)
    driver.pipe("in", [{"x": 1}, {"at": None}], timestamps_ms=[5, 6])
    assert [r.timestamp_ms for r in driver.read("out")] == [5, 6]


def test_an_event_time_expression_that_cannot_apply_fails_the_run_naming_the_source() -> None:
    topology = Topology("bad-expression")
    topology.source("in", value_format="json", event_time=pl.col("at").str.to_datetime("%Q")) \
        .to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    with pytest.raises(EventTimeError, match="'in'"):
        driver.pipe("in", [{"at": "x"}], timestamps_ms=[1])
    assert driver.read("out") == []


def test_stream_time_is_committed_in_the_offset_metadata_and_restored_on_assignment() -> None:
    driver = InProcessTestDriver(passthrough(), partitions=1)
    driver.pipe("in", [{}, {}], timestamps_ms=[400, 500])
    assert orjson.loads(driver.committed[("in", 0)].metadata or "") == {"st": 500, "cs": 1}
    driver.revoke([("in", 0)])
    assert driver.stream_time(TaskId(0, 0)) is None
    driver.assign([("in", 0)])
    assert driver.stream_time(TaskId(0, 0)) == 500


def test_restore_time_ignores_metadata_that_is_not_ours() -> None:
    driver = InProcessTestDriver(passthrough(), partitions=1)
    for foreign in (None, "", "not json", "[1]", '{"st": "x"}'):
        driver.restore_time(TaskId(0, 0), foreign)
        assert driver.stream_time(TaskId(0, 0)) is None
    driver.restore_time(TaskId(0, 0), '{"st": 42, "cs": 3}')
    assert driver.stream_time(TaskId(0, 0)) == 42
    assert driver.offset_metadata(TaskId(0, 0)) == '{"cs":0,"st":42}'
    with pytest.raises(TaskError, match="1_0 is not assigned"):
        driver.restore_time(TaskId(1, 0), '{"st": 1}')


def period_topology(every: int = 1_000) -> Topology:
    topology = Topology("periods")
    topology.source("in", value_format="json").apply(PeriodCounter(every)).to_topic("ticks")
    return topology


def test_a_stream_time_timer_fires_when_its_tasks_time_enters_a_new_period() -> None:
    driver = InProcessTestDriver(period_topology(), partitions=2)
    driver.pipe("in", [{}, {}], partition=0, timestamps_ms=[100, 900])
    driver.pipe("in", [{}], partition=1, timestamps_ms=[1_500])
    assert driver.read_json("ticks") == []  # first period seen on both
    driver.pipe("in", [{}], partition=0, timestamps_ms=[1_200])
    assert driver.read_json("ticks") == [{"period": 1_000, "seen": 3}]
    assert [r.key for r in driver.read("ticks")] == [b"p0"]
    driver.pipe("in", [{}], partition=0, timestamps_ms=[800])  # late: no advance, no timer
    driver.pipe("in", [{}], partition=1, timestamps_ms=[3_100])
    assert driver.read_json("ticks")[1:] == [{"period": 3_000, "seen": 2}]


def test_timer_rows_flow_downstream_like_batch_rows_through_a_repartition() -> None:
    topology = Topology("periods-per-key")
    topology.source("in", value_format="json").apply(PeriodCounter(1_000)).key_by(
        pl.lit("all")).aggregate("ticks", n=agg.count(), seen=agg.sum("seen")).to_topic("totals")
    driver = InProcessTestDriver(topology, partitions=2)
    driver.pipe("in", [{}], partition=0, timestamps_ms=[10])
    driver.pipe("in", [{}], partition=1, timestamps_ms=[20])
    driver.pipe("in", [{}], partition=0, timestamps_ms=[1_010])
    driver.pipe("in", [{}], partition=1, timestamps_ms=[1_020])
    assert driver.read_json("totals") == [{"n": 1, "seen": 2.0}, {"n": 2, "seen": 4.0}]
    [partition] = {p for p in range(2) if driver.records("ticks-repartition", p)}
    assert [r.timestamp_ms for r in driver.records("ticks-repartition", partition)] == [1_000] * 2


def test_a_wall_clock_timer_fires_for_every_assigned_task_when_time_advances() -> None:
    topology = Topology("beats")
    topology.source("in", value_format="json").apply(Heartbeat()).to_topic("beats")
    driver = InProcessTestDriver(topology, start_time_ms=1_000, partitions=2)
    driver.pipe("in", [{}], partition=1, timestamps_ms=[77])
    beats = len(driver.read_json("beats"))  # the checkpoint punctuated once at 1_000
    driver.advance_time(500)
    assert driver.read_json("beats")[beats:] == [
        {"task": "0_0", "wall": 1_500, "st": None}, {"task": "0_1", "wall": 1_500, "st": 77}]
    driver.advance_time(0)
    driver.checkpoint()
    assert len(driver.read_json("beats")) == beats + 2  # no advance, no firing


def test_topologies_without_timers_register_none() -> None:
    topology = period_topology()
    assert [n.operator.name for n in topology.timers_of(0, TimerKind.STREAM_TIME)] == [
        "period-counter"]
    assert topology.timers_of(0, TimerKind.WALL_CLOCK) == []
    assert passthrough().timers_of(0, TimerKind.STREAM_TIME | TimerKind.WALL_CLOCK) == []


def test_a_timer_operator_must_declare_what_fires_it() -> None:
    class Silent(TimerOperator):
        name = "silent"

    with pytest.raises(TopologyError, match="declares no fires_on"):
        Topology("t").source("in", value_format="json").apply(Silent())


def test_timer_rows_without_metadata_stop_the_worker() -> None:
    class Sloppy(Heartbeat):
        def on_time(self, ctx, task, stream_time_ms, wall_ms):  # type: ignore[no-untyped-def]
            return pl.DataFrame({"x": [1]})

    topology = Topology("sloppy")
    topology.source("in", value_format="json").apply(Sloppy(name="sloppy")).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1, auto_checkpoint=False)
    with pytest.raises(TimerOutputError, match="without"):
        driver.advance_time(1)


def test_timer_rows_failing_downstream_are_dead_lettered_as_rows() -> None:
    def refuse(row: dict) -> dict:
        raise ValueError(f"refused {row['task']}")

    topology = Topology("beats")
    topology.source("in", value_format="json").apply(Heartbeat()).map_rows(
        refuse, name="refuse").to_topic("out")
    driver = InProcessTestDriver(topology, start_time_ms=5, partitions=1)
    driver.advance_time(1)
    letter = driver.dead_letters[-1]
    assert (letter.operator, letter.key, letter.source_topic, letter.source_offset) == (
        "refuse", b"0_0", "in", -1)
    assert orjson.loads(letter.value or b"") == {"task": "0_0", "wall": 6, "st": None}


def test_max_event_time_is_per_partition_and_ignores_rows_without_an_event_time() -> None:
    from headwater.streams.records import PARTITION
    from headwater.streams.time import max_event_time

    frame = pl.DataFrame({PARTITION: [0, 1, 0, 2, 2], "t": [5, 9, 7, None, None]},
                         schema={PARTITION: pl.Int32, "t": pl.Int64})
    assert sorted(max_event_time(frame, pl.col("t"))) == [(0, 7), (1, 9)]
    assert max_event_time(frame.head(0), pl.col("t")) == []

