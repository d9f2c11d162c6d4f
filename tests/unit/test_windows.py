"""Tumbling and hopping windows: assignment, closing on stream time, late records, emit modes,
crashes; and a property test against a brute-force oracle."""

from __future__ import annotations

from collections import defaultdict

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.streams import InProcessTestDriver, Topology, TopologyError, agg
from headwater.streams.task import TaskId
from headwater.streams.windows import (
    Window, WindowDefinitionError, hopping, parse_duration, tumbling,
)
from tests.unit.window_support import (
    approx,
    emitted,
    late_records,
    oracle_topology,
    pipe_batches,
    summary,
)


def test_durations_read_like_people_write_them() -> None:
    assert parse_duration("500ms", "x") == 500
    assert parse_duration("10s", "x") == 10_000
    assert parse_duration("1m", "x") == 60_000
    assert parse_duration("2h", "x") == 7_200_000
    assert parse_duration(250, "x") == 250
    with pytest.raises(WindowDefinitionError, match="grace: '10 minutes' is not a duration"):
        tumbling("1m", grace="10 minutes")


def test_impossible_windows_fail_when_defined() -> None:
    with pytest.raises(WindowDefinitionError, match="positive"):
        tumbling(0)
    with pytest.raises(WindowDefinitionError, match="exceeds its size"):
        hopping("1m", "2m")


def test_a_record_falls_in_every_window_that_contains_its_time() -> None:
    frame = pl.DataFrame({"_timestamp": [-1, 0, 59_999, 60_000]})
    assert tumbling("1m").assign(frame)["window_start"].to_list() == [-60_000, 0, 0, 60_000]
    pairs = hopping(250, 100).assign(pl.DataFrame({"_timestamp": [0, 55]}))
    assert pairs.select("window_start", "window_end").rows() == [
        (-200, 50), (-100, 150), (0, 250), (-100, 150), (0, 250)]


def windowed(window: Window, emit: str = "final") -> Topology:
    return oracle_topology("windows", "w", window, emit)


def test_a_window_is_emitted_once_when_stream_time_passes_its_end_plus_grace() -> None:
    driver = InProcessTestDriver(windowed(tumbling("1m", grace="10s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 3}], keys=["a", "a"], timestamps_ms=[1_000, 59_000])
    driver.pipe("in", [{"x": 5}], keys=["a"], timestamps_ms=[69_999])  # 60s + 10s not reached
    assert driver.read_json("out") == []
    driver.pipe("in", [{"x": None}], keys=["b"], timestamps_ms=[70_000])
    assert driver.read_json("out") == [{"window_start": 0, "window_end": 60_000, "n": 2,
                                        "total": 4.0, "avg": 2.0, "lo": 1.0, "hi": 3.0}]
    assert [r.key for r in driver.read("out")] == [b"a"]


def test_windows_follow_the_event_time_the_source_declares_not_the_kafka_timestamp() -> None:
    topology = Topology("envelope-time")
    topology.source("in", value_format="json", event_time="at").window(
        tumbling("1m")).aggregate("w", n=agg.count()).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"at": 1_000}, {"at": 61_000}], keys=["a", "a"],
                timestamps_ms=[500_000, 500_001])  # Kafka timestamps far in the future
    assert driver.read_json("out") == [{"window_start": 0, "window_end": 60_000, "n": 1}]
    assert [r.timestamp_ms for r in driver.read("out")] == [60_000]


def quiet(idle_timeout: str | None) -> Topology:
    topology = Topology("quiet", idle_timeout=idle_timeout)
    result = topology.source("in", value_format="json").window(tumbling("1m", grace="10s")) \
        .aggregate("w", n=agg.count())
    result.to_topic("out")
    result.late.select("x").to_topic("late")
    return topology


def test_a_quiet_task_closes_its_windows_once_idle_for_the_idle_timeout() -> None:
    driver = InProcessTestDriver(quiet("30s"), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}], keys=["a", "b"], timestamps_ms=[1_000, 2_000])
    driver.advance_time(29_999)  # not idle long enough
    assert driver.read_json("out") == []
    driver.advance_time(1)  # idle 30 s: stream time 2s + 30s, still before 60s + 10s
    assert driver.stream_time(TaskId(0, 0)) == 32_000
    assert driver.read_json("out") == []
    driver.advance_time(38_000)  # stream time 70 s: both windows close
    assert sorted(r["n"] for r in driver.read_json("out")) == [1, 1]
    assert orjson.loads(driver.committed[("in", 0)].metadata or "")["st"] == 70_000


def test_a_record_behind_the_idle_advanced_stream_time_is_late() -> None:
    driver = InProcessTestDriver(quiet("30s"), partitions=1)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[1_000])
    driver.advance_time(70_000)  # stream time 71 s: window [0, 60 s) closed and emitted
    driver.pipe("in", [{"x": 9}], keys=["a"], timestamps_ms=[5_000])
    assert driver.read_json("late") == [{"x": 9}]
    assert [r["n"] for r in driver.read_json("out")] == [1]  # emitted once, never reopened


def test_an_idle_advance_alone_is_committed_at_the_next_checkpoint() -> None:
    topology = Topology("quiet-no-timer", idle_timeout="30s")
    topology.source("in", value_format="json").to_topic("out")  # no window: no state changes
    driver = InProcessTestDriver(topology, partitions=1, auto_checkpoint=False)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[1_000])
    driver.checkpoint()
    assert not driver.time_advanced
    driver.advance_time(40_000)
    assert driver.time_advanced and driver.stream_time(TaskId(0, 0)) == 41_000
    driver.checkpoint()
    assert not driver.time_advanced
    assert orjson.loads(driver.committed[("in", 0)].metadata or "")["st"] == 41_000


def test_tasks_behind_a_repartition_topic_never_idle() -> None:
    """Their upstream may be down or hold an open transaction: quiet proves nothing there."""
    topology = Topology("rekeyed", idle_timeout="30s")
    topology.source("in", value_format="json").key_by(pl.col("user")).window(
        tumbling("1m")).aggregate("w", n=agg.count()).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"user": "a"}], timestamps_ms=[1_000])
    driver.advance_time(600_000)
    assert driver.read_json("out") == []
    assert driver.stream_time(TaskId(0, 0)) == 601_000  # the source task itself does idle
    assert driver.stream_time(TaskId(1, 0)) == 1_000  # the window's task, behind the topic


def test_without_an_idle_timeout_stream_time_moves_only_with_records() -> None:
    driver = InProcessTestDriver(quiet(None), partitions=1)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[1_000])
    driver.advance_time(3_600_000)
    assert driver.read_json("out") == []
    assert driver.stream_time(TaskId(0, 0)) == 1_000


def test_an_idle_timeout_that_is_not_a_duration_fails_when_the_topology_is_built() -> None:
    with pytest.raises(WindowDefinitionError, match="idle_timeout: 'soon'"):
        Topology("t", idle_timeout="soon")
    with pytest.raises(TopologyError, match="idle_timeout must be positive"):
        Topology("t", idle_timeout=0)


def test_a_record_after_its_window_closed_goes_to_the_late_output_with_how_late() -> None:
    driver = InProcessTestDriver(windowed(tumbling("1m", grace="10s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}, {"x": 9}], keys=["a", "a", "a"],
                timestamps_ms=[1_000, 75_000, 30_000])  # the third is late in the same batch
    assert driver.read_json("late") == [{"x": 9, "window_start": 0, "window_end": 60_000,
                                         "stream_time": 75_000, "late_by_ms": 5_000,
                                         "ts": 30_000}]
    assert driver.read_json("out")[0]["n"] == 1


def test_late_records_nobody_routes_are_dead_lettered_not_dropped() -> None:
    topology = Topology("unrouted")
    topology.source("in", value_format="json").window(tumbling("1m")).aggregate(
        "w", n=agg.count()).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}], keys=["a", "a"], timestamps_ms=[61_000, 1_000])
    [letter] = driver.dead_letters
    assert letter.error_class == "LateRecordError" and letter.source_offset == 1


def test_update_mode_emits_each_change_and_never_a_closed_window() -> None:
    driver = InProcessTestDriver(windowed(tumbling("1m"), emit="update"), partitions=1)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[1_000])
    driver.pipe("in", [{"x": 3}], keys=["a"], timestamps_ms=[2_000])
    assert [r["n"] for r in driver.read_json("out")] == [1, 2]
    driver.pipe("in", [{"x": 3}, {"x": 4}], keys=["a", "a"], timestamps_ms=[60_000, 5_000])
    assert [r["n"] for r in driver.read_json("out")] == [1, 2, 1]
    assert len(driver.read_json("late")) == 1


def test_both_sends_final_results_and_updates_to_different_outputs() -> None:
    topology = Topology("both")
    result = topology.source("in", value_format="json").window(tumbling("1m")).aggregate(
        "w", emit="both", n=agg.count())
    result.to_topic("final")
    result.updates.to_topic("updates")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{}], keys=["a"], timestamps_ms=[1_000])
    driver.pipe("in", [{}], keys=["a"], timestamps_ms=[2_000])
    assert [r["n"] for r in driver.read_json("updates")] == [1, 2]
    assert driver.read_json("final") == []
    driver.pipe("in", [{}], keys=["b"], timestamps_ms=[60_000])
    assert driver.read_json("final") == [{"window_start": 0, "window_end": 60_000, "n": 2}]
    assert [r["n"] for r in driver.read_json("updates")] == [1, 2, 1]


def test_updates_exist_only_when_both_are_emitted() -> None:
    result = Topology("t").source("in", value_format="json").window(tumbling("1m")).aggregate(
        "w", n=agg.count())
    with pytest.raises(TopologyError, match="needs emit='both'"):
        result.updates  # noqa: B018


def test_closed_windows_leave_the_store() -> None:
    driver = InProcessTestDriver(windowed(tumbling("1m")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 1}], keys=["a", "b"], timestamps_ms=[1_000, 2_000])
    assert len(driver.store("w")) == 2
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[60_000])
    assert len(driver.store("w")) == 1  # only the open window [60s, 120s) of "a"


def test_a_crash_before_the_commit_redoes_the_batch_without_counting_it_twice() -> None:
    driver = InProcessTestDriver(windowed(tumbling("1m")), partitions=1, auto_checkpoint=False)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[1_000])
    driver.checkpoint()
    driver.pipe("in", [{"x": 2}, {"x": 3}], keys=["a", "a"], timestamps_ms=[2_000, 61_000])
    driver.crash(after="pre_commit")
    driver.checkpoint()
    assert driver.read_json("out") == [{"window_start": 0, "window_end": 60_000, "n": 2,
                                        "total": 3.0, "avg": 1.5, "lo": 1.0, "hi": 2.0}]


def test_a_windowed_stream_can_only_be_aggregated() -> None:
    stream = Topology("t").source("in", value_format="json")
    with pytest.raises(TopologyError, match=r"takes tumbling\(...\), hopping"):
        stream.window("1m")  # type: ignore[arg-type]
    windowed_stream = stream.window(tumbling("1m"))
    assert not hasattr(windowed_stream, "to_topic") and not hasattr(windowed_stream, "filter")
    with pytest.raises(TopologyError, match="no aggregates"):
        windowed_stream.aggregate("w")
    with pytest.raises(TopologyError, match="mean is for windows"):
        stream.aggregate("running", m=agg.mean("x"))


# --- against a brute-force oracle ---------------------------------------------------------------

def oracle(window: Window, batches: list[list[tuple[str, int, float | None]]]):
    """Per record in order: stream time = max so far; windows containing it that closed at that
    stream time are late pairs, the others accumulate."""
    stream_time, state, late = None, defaultdict(list), []
    for batch in batches:
        for key, ts, x in batch:
            stream_time = ts if stream_time is None else max(stream_time, ts)
            first = (ts // window.advance_ms) * window.advance_ms
            for start in range(first, ts - window.size_ms, -window.advance_ms):
                end = start + window.size_ms
                if end + window.grace_ms <= stream_time:
                    late.append((key, ts, start, end))
                else:
                    state[(key, start, end)].append(x)
    return state, late, stream_time



windows = st.one_of(
    st.builds(lambda s, g: tumbling(s, grace=g), st.integers(5, 40), st.integers(0, 20)),
    st.builds(lambda s, a, g: hopping(s * a, a, grace=g), st.integers(1, 4), st.integers(3, 15),
              st.integers(0, 20)),
)
records = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 200),
                             st.one_of(st.none(), st.integers(-5, 5).map(float))),
                   min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=windows, batches=st.lists(records, min_size=1, max_size=4),
       emit=st.sampled_from(["final", "update", "both"]))
def test_results_and_late_records_equal_a_brute_force_oracle(window, batches, emit) -> None:
    driver = InProcessTestDriver(windowed(window, emit), partitions=1)
    pipe_batches(driver, batches)
    state, late, stream_time = oracle(window, batches)
    flush = stream_time + window.size_ms + window.grace_ms + 1_000
    driver.pipe("in", [{"x": None}], keys=["~flush"], timestamps_ms=[flush])

    expected = {w: approx(summary(xs)) for w, xs in state.items()}
    final = emitted(driver, "out")
    assert {w: rows[-1] for w, rows in final.items()} == expected
    if emit != "update":
        assert all(len(rows) == 1 for rows in final.values())  # each window exactly once
    if emit == "both":
        updates = emitted(driver, "updates")
        assert {w: rows[-1] for w, rows in updates.items()} == expected
    assert late_records(driver) == sorted(late)
