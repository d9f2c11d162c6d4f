"""The bench harness's own computation of the windowed workloads (W3, W3h) and its checks."""

from __future__ import annotations

import orjson

from headwater.bench.workloads import WINDOWED, Expected, WindowSpec, check, window_view


def order(t: int, amount: float) -> dict:
    return {"eventId": f"e{t}", "userId": "u", "timestamp": t,
            "data": {"payload": {"orderId": "o", "totalAmount": amount, "items": [1]}}}


def test_window_starts_cover_every_window_holding_the_time() -> None:
    assert list(WindowSpec(60_000, 60_000).starts(61_000)) == [60_000]
    assert list(WindowSpec(300_000, 60_000).starts(61_000)) == [
        -180_000, -120_000, -60_000, 0, 60_000]


def test_expected_windows_are_those_the_partitions_stream_time_closes() -> None:
    expected = Expected()
    expected.add("a", order(1_000, 2.0), partition=0)
    expected.add("a", order(30_000, 4.0), partition=0)
    expected.add("b", order(10_000, 1.0), partition=1)
    expected.add("a", order(65_000, 8.0), partition=0)  # closes a's [0, 60 s) (grace 5 s)
    expected.finish()
    assert expected.windows["W3"].closed == {("a", 0): (2, 6.0, 3.0)}  # b's partition: 10 s only
    assert ("a", 60_000) not in expected.windows["W3"].closed


def test_records_behind_a_closed_window_are_counted_late_not_aggregated() -> None:
    expected = Expected()
    expected.add("a", order(70_000, 1.0), partition=0)
    expected.add("a", order(2_000, 5.0), partition=0)  # [0, 60 s) closed at 65 s
    assert expected.windows["W3"].late == 1


def test_engines_agree_when_windows_match_up_to_float_summation_order() -> None:
    expected = Expected()
    for i, t in enumerate([1_000, 2_000, 3_000, 70_000]):
        expected.add("a", order(t, [0.1, 0.2, 0.3, 1.0][i]), partition=0)
    expected.finish()
    ours = [(b"a", orjson.dumps({"window_start": 0, "window_end": 60_000, "count": 3,
                                 "total": 0.6000000000000001, "avg": 0.2}))]
    quix = [(b"a", orjson.dumps({"start": 0, "end": 60_000, "count": 3, "total": 0.6,
                                 "avg": 0.19999999999999998}))]
    assert check("W3", window_view(ours), expected) == (True, "")
    assert check("W3", window_view(quix), expected) == (True, "")
    wrong = [(b"a", orjson.dumps({"start": 0, "end": 60_000, "count": 2, "total": 0.6, "avg": 0.3}))]
    assert check("W3", window_view(wrong), expected)[0] is False
    assert check("W3", {}, expected) == (False, "0 keys vs 1 expected: 1 missing, 0 extra, 0 differ")
    assert set(WINDOWED) == {"W3", "W3h"}


def test_charts_show_every_workload_with_engines_side_by_side(tmp_path) -> None:
    from headwater.bench.charts import _ratio, _title, write_charts
    from headwater.bench.report import BenchReport, ResultRow

    rows = [ResultRow("engine", w, e, 1, 1000, rate, p50_ms=p50, p95_ms=p50, p99_ms=p50)
            for w in ("W1", "W3", "W3h", "W9")
            for e, rate, p50 in (("headwater", 80_000.0, 150.0), ("quixstreams", 4_000.0, 30.0))]
    report = BenchReport("engine", "headwater bench engine", {}, {}, results=rows)
    written = write_charts(report, tmp_path / "run")
    assert [p.name for p in written] == ["run-throughput.png", "run-latency.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    assert _ratio(rows[1], rows[:2]) == "\n(headwater 20.0x)" and _ratio(rows[0], rows[:2]) == ""
    assert _title("W3").startswith("W3: tumbling") and _title("W9") == "W9"
    assert _title("decode@10000") == "Avro decode, batches of 10,000 records (one core)"
