"""Which engines run which workloads, and how update-stream outputs (Pathway) are checked."""

from __future__ import annotations

import sys

import orjson

from headwater.bench import engine_suite
from headwater.bench.engine_suite import EngineSuiteConfig, available_engines, plan
from headwater.bench.workloads import (
    DEFAULT_WORKLOADS,
    Expected,
    check,
    final_state,
    w1_json_view,
    w2_view,
    window_view,
)


def order(t: int, amount: float, user: str = "u", items: int = 1) -> dict:
    return {"eventId": f"e{t}", "userId": user, "timestamp": t,
            "data": {"payload": {"orderId": f"o{t}", "totalAmount": amount, "items": [1] * items}}}


def update(key: str, diff: int, **row: object) -> tuple[bytes, bytes]:
    return key.encode(), orjson.dumps({**row, "diff": diff, "time": 2})


def test_final_state_sums_diffs_whatever_the_order_within_a_time() -> None:
    records = [update("a", 1, userId="a", count=1), update("b", 1, userId="b", count=1),
               # time 4: the new count of a arrives before the retraction of the old one
               update("a", 1, userId="a", count=2), update("a", -1, userId="a", count=1)]
    assert w2_view(final_state(records)) == {"a": 2, "b": 1}
    assert final_state([(b"k", b'{"count": 3}')]) == [(b"k", b'{"count":3}')]  # no diff: insert


def test_w2_of_an_update_stream_agrees_only_on_its_final_state() -> None:
    expected = Expected()
    for i, user in enumerate(["a", "a", "b"]):
        expected.add(user, order(i, 1.0, user))
    expected.finish()
    stream = [update("a", 1, count=1), update("b", 1, count=1), update("a", 1, count=2),
              update("a", -1, count=1)]
    assert check("W2", w2_view(final_state(stream)), expected) == (True, "")
    # read naively (last record per key) the retraction, last in its time, would win
    assert check("W2", w2_view(stream), expected)[0] is False


def test_w1j_is_w1_with_json_output() -> None:
    expected = Expected()
    expected.add("u", order(1, 12.345, items=2))
    expected.add("u", order(2, 0.0))  # invalid: dropped
    expected.add("u", order(3, 5.0, items=0))  # invalid: dropped
    expected.finish()
    out = [(b"u", orjson.dumps({"eventId": "e1", "userId": "u", "orderId": "o1", "totalAmount": 12.345,
                                "itemCount": 2, "totalCents": 1235, "diff": 1, "time": 0}))]
    assert check("W1j", w1_json_view(final_state(out)), expected) == (True, "")
    assert check("W1j", w1_json_view(out), expected) == (True, "")


def test_windows_at_end_expects_the_windows_still_open_when_the_input_ends() -> None:
    expected = Expected()
    expected.add("a", order(1_000, 2.0, "a"), partition=0)
    expected.add("a", order(70_000, 3.0, "a"), partition=0)  # closes [0, 60 s); [60, 120 s) open
    expected.finish()
    windows = expected.windows["W3"]
    assert windows.closed == {("a", 0): (1, 2.0, 2.0)}
    assert windows.all_windows == {("a", 0): (1, 2.0, 2.0), ("a", 60_000): (1, 3.0, 3.0)}
    out = [update("a", 1, userId="a", window_start=s, count=1, total=v, avg=v)
           for s, v in ((0, 2.0), (60_000, 3.0))]
    view = window_view(final_state(out))
    assert check("W3", view, expected, windows_at_end=True) == (True, "")
    assert check("W3", view, expected)[0] is False  # one extra window for a closing engine


def test_pathway_runs_w1j_w2_w3_on_json_input_only() -> None:
    cfg = EngineSuiteConfig(engines=["headwater", "pathway"], workers=[1], input_format="json",
                            workloads=["W1", "W1j", "W2", "W3", "W3h"], exactly_once=False)
    runs = {(r.workload, r.engine) for r in plan(cfg)}
    assert {w for w, e in runs if e == "pathway"} == {"W1j", "W2", "W3"}
    assert {w for w, e in runs if e == "headwater"} == {"W1", "W1j", "W2", "W3", "W3h"}
    avro = EngineSuiteConfig(engines=["headwater", "pathway"], workers=[1], exactly_once=False)
    assert not [r for r in plan(avro) if r.engine == "pathway"]
    assert "W1j" not in DEFAULT_WORKLOADS and avro.workloads == list(DEFAULT_WORKLOADS)


def test_pathway_is_reported_unavailable_without_its_venv_or_on_avro_input(monkeypatch, tmp_path) -> None:
    ok, skipped = available_engines(["headwater", "pathway"], "avro")
    assert ok == ["headwater"] and "--input-format json" in skipped["pathway"]
    monkeypatch.setenv("HEADWATER_PATHWAY_PYTHON", str(tmp_path / "nowhere" / "python"))
    ok, skipped = available_engines(["pathway"], "json")
    assert ok == [] and "venv is missing" in skipped["pathway"] and "make pathway-venv" in skipped["pathway"]
    # an interpreter that exists but has no pathway package
    monkeypatch.setenv("HEADWATER_PATHWAY_PYTHON", sys.executable)
    engine_suite.PEER_MODULES["pathway"] = "headwater_no_such_module"
    try:
        ok, skipped = available_engines(["pathway"], "json")
    finally:
        engine_suite.PEER_MODULES["pathway"] = "pathway"
    assert ok == [] and "cannot import" in skipped["pathway"]
