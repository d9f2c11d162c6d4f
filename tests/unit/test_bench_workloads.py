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


# --- W3s: session windows -------------------------------------------------------------------

def keyed_order(key: str, t: int, amount: float) -> dict:
    return {**order(t, amount), "userId": key}


def sessions_of(records: list[tuple[str, int, float, int]]) -> Expected:
    """Expected results of (key, event time, amount, partition) records, in that order."""
    expected = Expected()
    for key, t, amount, partition in records:
        expected.add(key, keyed_order(key, t, amount), partition)
    expected.finish()
    return expected


def test_w3s_sessions_are_first_to_last_plus_gap_and_the_gap_is_exclusive() -> None:
    from headwater.bench.workloads import SESSIONS

    assert SESSIONS["W3s"].gap_ms == 120_000 and SESSIONS["W3s"].grace_ms == 5_000
    expected = sessions_of([
        ("a", 0, 1.0, 0), ("a", 60_000, 2.0, 0),  # [0, 180 s)
        ("b", 10_000, 8.0, 0),                    # [10 s, 130 s)
        ("a", 180_000, 4.0, 0),                   # exactly one gap after a's last: a new session
        ("a", 299_999, 16.0, 0),                  # joins it: [180 s, 419.999 s)
        ("c", 1_000_000, 32.0, 1),                # partition 1: its own stream time
    ])
    s = expected.sessions["W3s"]
    # partition 0's stream time (299.999 s) closes a's first session (180 s + 5 s) and b's
    assert s.closed == {("a", 0): (2, 3.0, 1.5, 180_000), ("b", 10_000): (1, 8.0, 8.0, 130_000)}
    assert s.still_open == {("a", 180_000): (2, 20.0, 10.0, 419_999),
                            ("c", 1_000_000): (1, 32.0, 32.0, 1_120_000)}
    assert s.late == 0


def test_w3s_an_out_of_order_record_bridging_two_open_sessions_merges_them() -> None:
    expected = sessions_of([
        ("d", 0, 1.0, 0),          # [0, 120 s)
        ("d", 122_000, 2.0, 0),    # [122 s, 242 s): apart, and the first is still open (125 s)
        ("d", 3_000, 4.0, 0),      # [3 s, 123 s) overlaps both: one session [0, 242 s)
        ("x", 400_000, 0.0, 0),    # moves partition 0's stream time past 242 s + 5 s
    ])
    assert expected.sessions["W3s"].closed == {("d", 0): (3, 7.0, 7.0 / 3, 242_000)}


def test_w3s_a_record_meeting_only_a_closed_session_is_late() -> None:
    expected = sessions_of([
        ("e", 0, 1.0, 0),          # [0, 120 s), closed once stream time reaches 125 s
        ("e", 200_000, 2.0, 0),
        ("e", 50_000, 4.0, 0),     # [50 s, 170 s) would close at 175 s < 200 s: late
    ])
    s = expected.sessions["W3s"]
    assert s.late == 1
    assert s.closed == {("e", 0): (1, 1.0, 1.0, 120_000)}
    assert s.still_open == {("e", 200_000): (1, 2.0, 2.0, 320_000)}


def session_output(rows: list[tuple[str, int, int, int, float]], late: int = 0) -> list:
    """(key, start, end, count, total) rows as the JSON output records engines write."""
    out = [(k.encode(), orjson.dumps({"window_start": s, "window_end": e, "count": n,
                                       "total": total, "avg": total / n}))
           for k, s, e, n, total in rows]
    return out + [(b"a", orjson.dumps({"late": True, "t": 1}))] * late


def test_w3s_check_accepts_the_closed_sessions_or_those_plus_every_session_open_at_the_end() -> None:
    from headwater.bench.workloads import check_sessions, session_view

    expected = sessions_of([("a", 0, 0.1, 0), ("a", 60_000, 0.2, 0), ("b", 10_000, 8.0, 0),
                            ("a", 180_000, 4.0, 0), ("a", 299_999, 16.0, 0), ("c", 1_000_000, 32.0, 1)])
    closed = [("a", 0, 180_000, 2, 0.30000000000000004), ("b", 10_000, 130_000, 1, 8.0)]
    at_end = [("a", 180_000, 419_999, 2, 20.0), ("c", 1_000_000, 1_120_000, 1, 32.0)]

    assert check_sessions("W3s", session_view(session_output(closed)), expected) == (True, "")
    ok, note = check_sessions("W3s", session_view(session_output(closed + at_end)), expected)
    assert ok and "plus all 2 still open" in note
    # only some of the open sessions: neither headwater's nor a flush-at-end engine's result
    ok, why = check_sessions("W3s", session_view(session_output(closed + at_end[:1])), expected)
    assert not ok and "1 missing" in why
    # a session's end (last event + gap) is checked exactly: Bytewax's close_time unmapped
    wrong_end = [("a", 0, 60_000, 2, 0.3), closed[1]]
    assert check_sessions("W3s", session_view(session_output(wrong_end)), expected)[0] is False
    # a session split in two (e.g. an inclusive gap read as exclusive) is not a match
    split = [("a", 0, 120_000, 1, 0.1), ("a", 60_000, 180_000, 1, 0.2), closed[1]]
    assert "1 extra" in check_sessions("W3s", session_view(session_output(split)), expected)[1]
    # records an engine reported late fail the check, and the reason says how many
    ok, why = check_sessions("W3s", session_view(session_output(closed, late=3)), expected)
    assert not ok and "3 input records late" in why
