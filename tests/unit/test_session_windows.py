"""Session windows: gaps split sessions, a late record bridging two merges them, closing on
stream time, late records, emit modes, crashes; and a property test against a brute-force
oracle."""

from __future__ import annotations

from collections import defaultdict

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.streams import InProcessTestDriver, Topology, agg
from headwater.streams.windows import SessionWindow, WindowDefinitionError, session
from tests.unit.window_support import (
    approx,
    emitted,
    late_records,
    oracle_topology,
    pipe_batches,
    summary,
)


def sessions(window: SessionWindow, emit: str = "final") -> Topology:
    return oracle_topology("sessions", "s", window, emit)


def bounds(rows: list[dict]) -> list[tuple[int, int, int]]:
    return [(r["window_start"], r["window_end"], r["n"]) for r in rows]


def test_a_session_gap_must_be_positive() -> None:
    with pytest.raises(WindowDefinitionError, match="session gap must be positive"):
        session(0)


def test_records_closer_than_the_gap_share_a_session_that_ends_one_gap_after_the_last() -> None:
    driver = InProcessTestDriver(sessions(session("10s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}, {"x": 3}], keys=["a"] * 3,
                timestamps_ms=[1_000, 9_000, 30_000])  # 9 s -> 30 s is more than the gap
    assert driver.read_json("out") == [{"window_start": 1_000, "window_end": 19_000, "n": 2,
                                        "total": 3.0, "avg": 1.5, "lo": 1.0, "hi": 2.0}]
    assert [r.key for r in driver.read("out")] == [b"a"]
    assert [r.timestamp_ms for r in driver.read("out")] == [19_000]


def test_a_late_record_that_bridges_two_sessions_merges_them() -> None:
    driver = InProcessTestDriver(sessions(session("10s", grace="30s")), partitions=1)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[0])
    driver.pipe("in", [{"x": 2}], keys=["a"], timestamps_ms=[15_000])  # a second session
    assert len(driver.store("s-sessions")) == 1 and len(driver.store("s")) == 2
    driver.pipe("in", [{"x": 3}], keys=["a"], timestamps_ms=[8_000])  # bridges both
    assert len(driver.store("s")) == 1
    driver.pipe("in", [{"x": None}], keys=["b"], timestamps_ms=[100_000])
    assert bounds(driver.read_json("out")) == [(0, 25_000, 3)]
    assert len(driver.store("s")) == 1 and len(driver.store("s-sessions")) == 1  # only "b"


def test_a_record_whose_session_closed_is_late_with_how_late() -> None:
    driver = InProcessTestDriver(sessions(session("10s", grace="5s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}, {"x": 9}], keys=["a", "b", "a"],
                timestamps_ms=[1_000, 40_000, 2_000])
    # the session [1 s, 11 s) closed at 16 s: the record cannot join it; its own window is late
    assert driver.read_json("late") == [{"x": 9, "window_start": 2_000, "window_end": 12_000,
                                         "stream_time": 40_000, "late_by_ms": 23_000,
                                         "ts": 2_000}]
    assert bounds(driver.read_json("out")) == [(1_000, 11_000, 1)]


def test_an_old_record_that_reaches_an_open_session_is_not_late() -> None:
    """Late is decided on the merged session, as Kafka Streams does: the record at 2 s is older
    than stream time - gap - grace, but it joins the open session starting at 8 s."""
    driver = InProcessTestDriver(sessions(session("10s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}, {"x": 3}], keys=["a", "a", "a"],
                timestamps_ms=[8_000, 15_000, 2_000])
    driver.pipe("in", [{"x": None}], keys=["b"], timestamps_ms=[100_000])
    assert driver.read_json("late") == []
    assert bounds(driver.read_json("out")) == [(2_000, 25_000, 3)]


def test_both_emits_final_sessions_and_every_update_to_different_outputs() -> None:
    driver = InProcessTestDriver(sessions(session("10s"), emit="both"), partitions=1)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[0])
    driver.pipe("in", [{"x": 2}], keys=["a"], timestamps_ms=[5_000])
    assert bounds(driver.read_json("updates")) == [(0, 10_000, 1), (0, 15_000, 2)]
    assert driver.read_json("out") == []
    driver.pipe("in", [{"x": 3}], keys=["b"], timestamps_ms=[60_000])
    assert bounds(driver.read_json("out")) == [(0, 15_000, 2)]


def test_a_crash_before_the_commit_redoes_the_batch_without_counting_it_twice() -> None:
    driver = InProcessTestDriver(sessions(session("10s")), partitions=1, auto_checkpoint=False)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[1_000])
    driver.checkpoint()
    driver.pipe("in", [{"x": 2}, {"x": 3}], keys=["a", "b"], timestamps_ms=[5_000, 61_000])
    driver.crash(after="pre_commit")
    driver.checkpoint()
    assert bounds(driver.read_json("out")) == [(1_000, 15_000, 2)]


# --- against a brute-force oracle ---------------------------------------------------------------

def oracle(window: SessionWindow, batches: list[list[tuple[str, int, float | None]]]):
    """Per record in order: stream time = max so far; the record's window [t, t + gap) merges
    with its key's open overlapping sessions; late when the merged session is already closed."""
    gap, grace = window.gap_ms, window.grace_ms
    stream_time, open_, late = None, defaultdict(list), []
    for batch in batches:
        for key, ts, x in batch:
            stream_time = ts if stream_time is None else max(stream_time, ts)
            mine = [s for s in open_[key] if s[1] + grace > stream_time
                    and s[0] < ts + gap and ts < s[1]]
            start = min([ts] + [s[0] for s in mine])
            end = max([ts + gap] + [s[1] for s in mine])
            if end + grace <= stream_time:
                late.append((key, ts, start, end))
                continue
            xs = [x] + [v for s in mine for v in s[2]]
            open_[key] = [s for s in open_[key] if s not in mine] + [(start, end, xs)]
    state = {(k, s, e): xs for k, ss in open_.items() for s, e, xs in ss}
    return state, late, stream_time



records = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 300),
                             st.one_of(st.none(), st.integers(-5, 5).map(float))),
                   min_size=1, max_size=40)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gap=st.integers(1, 40), grace=st.integers(0, 60),
       batches=st.lists(records, min_size=1, max_size=5),
       emit=st.sampled_from(["final", "update", "both"]))
def test_sessions_and_late_records_equal_a_brute_force_oracle(gap, grace, batches, emit) -> None:
    window = session(gap, grace=grace)
    driver = InProcessTestDriver(sessions(window, emit), partitions=1)
    pipe_batches(driver, batches)
    state, late, stream_time = oracle(window, batches)
    driver.pipe("in", [{"x": None}], keys=["~flush"],
                timestamps_ms=[stream_time + gap + grace + 1_000])

    expected = {w: approx(summary(xs)) for w, xs in state.items()}
    if emit in ("final", "both"):
        final = emitted(driver, "out")
        assert {w: rows[-1] for w, rows in final.items()} == expected
        assert all(len(rows) == 1 for rows in final.values())  # each session exactly once
    if emit in ("update", "both"):
        updates = emitted(driver, "updates" if emit == "both" else "out")
        assert {w: updates[w][-1] for w in expected} == expected  # the last update is final
    assert late_records(driver) == sorted(late)
    assert len(driver.store("s")) == 1 and len(driver.store("s-sessions")) == 1  # "~flush"


def test_merging_sessions_merges_every_kind_of_aggregate() -> None:
    topology = Topology("rich-sessions")
    topology.source("in", value_format="json").window(session("10s", grace="30s")).aggregate(
        "s", first=agg.first("x"), last=agg.last("x"), distinct=agg.count_distinct("u"),
        approx=agg.approx_count_distinct("u"), p50=agg.percentile("x", 0.5),
        seen=agg.collect("u", limit=5)).to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"x": 1.0, "u": "a"}], keys=["k"], timestamps_ms=[0])
    driver.pipe("in", [{"x": 9.0, "u": "b"}], keys=["k"], timestamps_ms=[15_000])
    driver.pipe("in", [{"x": 5.0, "u": "a"}], keys=["k"], timestamps_ms=[8_000])  # the bridge
    driver.pipe("in", [{"x": None, "u": None}], keys=["z"], timestamps_ms=[100_000])
    assert driver.read_json("out") == [{
        "window_start": 0, "window_end": 25_000, "first": 1.0, "last": 9.0, "distinct": 2,
        "approx": 2, "p50": 5.0, "seen": ["a", "a", "b"]}]


def counting_that_fails_on_13() -> agg.Agg:
    """A udf count whose accumulate raises on a record with ``x == 13`` (forces a retry)."""
    def accumulate(acc: int, rows: pl.DataFrame) -> int:
        if (rows.get_column("x") == 13).any():
            raise ValueError("13")
        return acc + rows.height
    return agg.udf(lambda: 0, accumulate, lambda a, b: a + b, lambda a: a, columns=["x"])


def test_a_retried_batch_keeps_each_records_stream_time_and_dead_letters_once() -> None:
    """A failing row makes the engine retry the batch row by row: the record at 0 stays late
    (it arrived after the one at 100), and the keyless record is dead-lettered once."""
    topology = Topology("retry")
    result = topology.source("in", value_format="json").window(session(10)).aggregate(
        "s", n=counting_that_fails_on_13())
    result.to_topic("out")
    result.late.select("x").to_topic("late")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}, {"x": 13}, {"x": 4}], keys=["a", "a", "b", None],
                timestamps_ms=[100, 0, 100, 100])
    assert driver.read_json("late") == [{"x": 2}]
    assert sorted((d.error_class, d.source_offset) for d in driver.dead_letters) == [
        ("MissingKeyError", 3), ("ValueError", 2)]


def test_update_rows_of_data_dependent_types_concatenate() -> None:
    """Retried row by row (the record with x=13 fails), the updates of a window that collected
    nothing (an empty list) and of one that collected strings are one output."""
    topology = Topology("types")
    result = topology.source("in", value_format="json").window(session(10)).aggregate(
        "s", emit="both", seen=agg.collect("u"),
        n=counting_that_fails_on_13())
    result.to_topic("out")
    result.updates.to_topic("updates")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("in", [{"u": None, "x": 1}, {"u": "x", "x": 2}, {"u": "y", "x": 13}],
                keys=["a", "b", "c"], timestamps_ms=[0, 0, 0])
    assert sorted((r["seen"], r["n"]) for r in driver.read_json("updates")) == [([], 1),
                                                                               (["x"], 1)]
