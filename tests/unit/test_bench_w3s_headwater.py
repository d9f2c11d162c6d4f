"""headwater's W3s topology (benchmarks/peers/headwater_topologies.py:w3s) in the in-process
driver, checked with the harness's own W3s expectation: no broker."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from headwater.bench.workloads import Expected, check_sessions, session_view
from headwater.streams import InProcessTestDriver

TOPOLOGIES = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "headwater_topologies.py"

#: (key, event time, amount, partition), in consumption order per partition; partition 2 holds
#: disorder: a record bridging two open sessions, then one that meets only a closed session.
RECORDS = [
    ("a", 0, 0.1, 0), ("b", 10_000, 8.0, 0), ("a", 60_000, 0.2, 0), ("b", 129_999, 1.5, 0),
    ("a", 180_000, 4.0, 0), ("a", 299_999, 16.0, 0),
    ("c", 1_000_000, 32.0, 1),
    ("d", 0, 1.0, 2), ("d", 122_000, 2.0, 2), ("d", 3_000, 4.0, 2), ("e", 400_000, 0.5, 2),
    ("d", 50_000, 64.0, 2), ("e", 700_000, 0.25, 2),
]


def _event(key: str, t: int, amount: float) -> dict:
    return {"eventId": f"{key}{t}", "userId": key, "timestamp": t,
            "data": {"payload": {"orderId": "o", "totalAmount": amount, "items": [1]}}}


@pytest.mark.parametrize("one_batch", [True, False])
def test_headwater_w3s_equals_the_harness_sessions(monkeypatch: pytest.MonkeyPatch,
                                                   one_batch: bool) -> None:
    for name, value in {"BENCH_BOOTSTRAP": "unused:9092", "BENCH_INPUT": "in",
                        "BENCH_OUTPUT": "out", "BENCH_GROUP": "g", "BENCH_FORMAT": "json"}.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("bench_headwater_topologies", TOPOLOGIES)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    expected = Expected()
    for key, t, amount, partition in RECORDS:
        expected.add(key, _event(key, t, amount), partition)
    expected.finish()
    sessions = expected.sessions["W3s"]
    assert sessions.late == 1 and ("d", 0) in sessions.closed  # the merged session [0, 242 s)

    driver = InProcessTestDriver(module.w3s(), partitions=3)
    for partition in range(3):
        rows = [(k, t, a) for k, t, a, p in RECORDS if p == partition]
        batches = [rows] if one_batch else [[r] for r in rows]
        for batch in batches:
            driver.pipe("in", [_event(*r) for r in batch], keys=[r[0] for r in batch],
                        partition=partition)
    out = [(r.key, r.value) for r in driver.read("out")]
    assert check_sessions("W3s", session_view(out), expected) == (True, "")
    assert len(driver.dead_letters) == 1  # the late record (no .late consumer in the topology)
