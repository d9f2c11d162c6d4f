"""Sliding windows (Kafka Streams' record-driven semantics): windows aligned to records, closing
on stream time, late records, emit modes, expired state, crashes; and a property test against a
brute-force oracle."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.streams import InProcessTestDriver, Topology, TopologyError, agg
from headwater.streams.windows import SlidingWindow, WindowDefinitionError, sliding
from tests.unit.window_support import (
    approx,
    emitted,
    late_records,
    oracle_topology,
    pipe_batches,
    summary,
)


def slides(window: SlidingWindow, emit: str = "final") -> Topology:
    return oracle_topology("slides", "s", window, emit)


def bounds(rows: list[dict]) -> list[tuple[int, int, int]]:
    return sorted((r["window_start"], r["window_end"], r["n"]) for r in rows)


def test_a_sliding_size_must_be_positive() -> None:
    with pytest.raises(WindowDefinitionError, match="sliding size must be positive"):
        sliding(0)


def test_two_records_within_size_share_a_window_and_the_first_gets_a_right_window() -> None:
    driver = InProcessTestDriver(slides(sliding("10s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}], keys=["a", "a"], timestamps_ms=[1_000, 11_000])
    driver.pipe("in", [{"x": None}], keys=["b"], timestamps_ms=[100_000])
    # left windows [t - 10 s, t] of both records (the second holds both: 11 s - 1 s = size),
    # and the right window [1.001 s, 11.001 s) of the first, holding the second
    assert bounds(driver.read_json("out")) == [
        (-9_000, 1_001, 1), (1_000, 11_001, 2), (1_001, 11_001 + 1, 1)]
    assert [r for r in driver.read_json("out") if r["window_start"] == 1_000] == [
        {"window_start": 1_000, "window_end": 11_001, "n": 2, "total": 3.0, "avg": 1.5,
         "lo": 1.0, "hi": 2.0}]
    assert {r.timestamp_ms for r in driver.read("out")} == {1_001, 11_001, 11_002}


def test_records_further_apart_than_size_share_no_window() -> None:
    driver = InProcessTestDriver(slides(sliding("10s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}], keys=["a", "a"], timestamps_ms=[1_000, 11_001])
    driver.pipe("in", [{"x": None}], keys=["b"], timestamps_ms=[100_000])
    assert bounds(driver.read_json("out")) == [(-9_000, 1_001, 1), (1_001, 11_002, 1)]


def test_an_out_of_order_record_creates_its_right_window_from_earlier_records() -> None:
    driver = InProcessTestDriver(slides(sliding("10s", grace="20s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}], keys=["a", "a"], timestamps_ms=[5_000, 12_000])
    driver.pipe("in", [{"x": 4}], keys=["a"], timestamps_ms=[3_000])  # in a later batch
    driver.pipe("in", [{"x": None}], keys=["b"], timestamps_ms=[100_000])
    assert bounds(driver.read_json("out")) == [
        (-7_000, 3_001, 1),   # left of 3 s
        (-5_000, 5_001, 2),   # left of 5 s: 3 s joined it
        (2_000, 12_001, 3),   # left of 12 s
        (3_001, 13_002, 2),   # right of 3 s: created with the stored 5 s and 12 s
        (5_001, 15_002, 1)]   # right of 5 s
    assert driver.read_json("late") == []


def test_a_window_closes_when_stream_time_reaches_its_end_plus_grace() -> None:
    driver = InProcessTestDriver(slides(sliding("10s", grace="5s")), partitions=1)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[20_000])
    driver.pipe("in", [{"x": None}], keys=["b"], timestamps_ms=[25_000])  # 20.001 s + 5 s
    assert driver.read_json("out") == []
    driver.pipe("in", [{"x": None}], keys=["b"], timestamps_ms=[25_001])
    assert bounds(driver.read_json("out")) == [(10_000, 20_001, 1)]


def test_a_record_all_of_whose_windows_closed_is_late_once_with_its_own_window() -> None:
    driver = InProcessTestDriver(slides(sliding("10s", grace="5s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}, {"x": 9}, {"x": 8}], keys=["a", "b", "a", "a"],
                timestamps_ms=[1_000, 40_000, 2_000, 25_000])
    # 2 s + 10 s + 1 ms <= 40 s - 5 s: late. Not 25 s: a window [25 s, 35.001 s) would be open
    assert driver.read_json("late") == [{"x": 9, "window_start": -8_000, "window_end": 2_001,
                                         "stream_time": 40_000, "late_by_ms": 32_999,
                                         "ts": 2_000}]
    driver.pipe("in", [{"x": None}], keys=["b"], timestamps_ms=[100_000])
    # 25 s only joins windows still open: its own left window closed, none holds it
    assert bounds(r for r in driver.read_json("out") if r["lo"] != 2.0) == [(-9_000, 1_001, 1)]
    assert driver.read_json("late")[1:] == []


def test_update_and_both_emit_every_change_and_final_results_once() -> None:
    driver = InProcessTestDriver(slides(sliding("10s"), emit="both"), partitions=1)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[0])
    driver.pipe("in", [{"x": 2}], keys=["a"], timestamps_ms=[5_000])
    assert bounds(driver.read_json("updates")) == [
        (-10_000, 1, 1), (-5_000, 5_001, 2), (1, 10_002, 1)]
    assert bounds(driver.read_json("out")) == [(-10_000, 1, 1)]  # closed at 5 s
    driver.pipe("in", [{"x": 3}], keys=["b"], timestamps_ms=[60_000])
    assert bounds(driver.read_json("out")) == [
        (-10_000, 1, 1), (-5_000, 5_001, 2), (1, 10_002, 1)]


def test_the_stores_empty_once_every_window_closed() -> None:
    driver = InProcessTestDriver(slides(sliding("10s")), partitions=1)
    driver.pipe("in", [{"x": 1}, {"x": 2}, {"x": 3}], keys=["a", "b", "a"],
                timestamps_ms=[1_000, 2_000, 4_000])
    assert len(driver.store("s")) > 0 and len(driver.store("s-records")) > 0
    driver.pipe("in", [{"x": None}], keys=["c"], timestamps_ms=[100_000])
    assert len(driver.store("s")) == 1  # "c"'s own window
    assert len(driver.store("s-records")) == 2  # "c"'s record and its expiry marker


def test_a_crash_before_the_commit_redoes_the_batch_without_counting_it_twice() -> None:
    driver = InProcessTestDriver(slides(sliding("10s")), partitions=1, auto_checkpoint=False)
    driver.pipe("in", [{"x": 1}], keys=["a"], timestamps_ms=[1_000])
    driver.checkpoint()
    driver.pipe("in", [{"x": 2}, {"x": 3}], keys=["a", "b"], timestamps_ms=[5_000, 61_000])
    driver.crash(after="pre_commit")
    driver.checkpoint()
    assert bounds(driver.read_json("out")) == [
        (-9_000, 1_001, 1), (-5_000, 5_001, 2), (1_001, 11_002, 1)]


# --- against a brute-force oracle ---------------------------------------------------------------

def oracle(window: SlidingWindow, batches: list[list[tuple[str, int, float | None]]]):
    """Per record in order, C = max event time so far - grace; a window [s, e) is closed once
    e <= C. Late: t + size + 1 <= C. Else the record joins its key's existing open windows that
    hold t, then every window called for by the key's records (left [u - size, u + 1) of each,
    right [u + 1, u + size + 2) of each with a later record within size + 1) that was never
    created and is open is created with all the key's accepted records inside."""
    size, grace = window.size_ms, window.grace_ms
    stream_time, accepted, windows, late = None, defaultdict(list), {}, []
    for batch in batches:
        for key, ts, x in batch:
            stream_time = ts if stream_time is None else max(stream_time, ts)
            close = stream_time - grace
            if ts + size + 1 <= close:
                late.append((key, ts, ts - size, ts + 1))
                continue
            for (k, s, e), xs in windows.items():
                if k == key and s <= ts < e and e > close:
                    xs.append(x)
            accepted[key].append((ts, x))
            times = {u for u, _ in accepted[key]}
            wanted = {(u - size, u + 1) for u in times} | {
                (u + 1, u + size + 2) for u in times if any(u < v <= u + size + 1 for v in times)}
            for s, e in wanted:
                if (key, s, e) not in windows and e > close:
                    windows[(key, s, e)] = [v for u, v in accepted[key] if s <= u < e]
    return windows, late, stream_time



records = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 100),
                             st.one_of(st.none(), st.integers(-5, 5).map(float))),
                   min_size=1, max_size=40)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(1, 40), grace=st.integers(0, 40),
       batches=st.lists(records, min_size=1, max_size=5),
       emit=st.sampled_from(["final", "update", "both"]))
def test_windows_and_late_records_equal_a_brute_force_oracle(size, grace, batches, emit) -> None:
    window = sliding(size, grace=grace)
    driver = InProcessTestDriver(slides(window, emit), partitions=1)
    pipe_batches(driver, batches)
    windows, late, stream_time = oracle(window, batches)
    driver.pipe("in", [{"x": None}], keys=["~flush"],
                timestamps_ms=[stream_time + size + grace + 1_000])

    expected = {w: approx(summary(xs)) for w, xs in windows.items()}
    if emit in ("final", "both"):
        final = emitted(driver, "out")
        assert {w: rows[-1] for w, rows in final.items()} == expected
        assert all(len(rows) == 1 for rows in final.values())  # each window exactly once
    if emit in ("update", "both"):
        updates = emitted(driver, "updates" if emit == "both" else "out")
        assert set(updates) == set(expected)
        assert {w: updates[w][-1] for w in expected} == expected  # the last update is final
    assert late_records(driver) == sorted(late)
    assert len(driver.store("s")) == 1  # "~flush"'s own window
    assert len(driver.store("s-records")) == 2  # "~flush"'s record and its expiry marker


def test_sliding_windows_take_fixed_width_aggregates_only() -> None:
    stream = Topology("t").source("in", value_format="json").window(sliding("10s"))
    with pytest.raises(TopologyError, match="fixed-width aggregates only"):
        stream.aggregate("s", n=agg.count(), users=agg.count_distinct("u"))
