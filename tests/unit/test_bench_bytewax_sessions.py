"""The Bytewax peer's W3s dataflow (its own session windows) run in-process on a hand-made
input, and checked with the harness's own W3s check: no broker."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytest.importorskip("bytewax")

from bytewax import operators as op  # noqa: E402
from bytewax.connectors.kafka import KafkaSourceMessage  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.testing import TestingSink, TestingSource, run_main  # noqa: E402

from headwater.bench.workloads import SESSIONS, Expected, check_sessions, session_view  # noqa: E402

PEER = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "bytewax_peer.py"


def _peer():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("bench_bytewax_peer", PEER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _event(key: str, t: int, amount: float, avro: bool) -> dict:
    ts = datetime.fromtimestamp(t / 1000, tz=timezone.utc) if avro else t
    return {"eventId": f"{key}{t}", "userId": key, "timestamp": ts,
            "data": {"payload": {"orderId": "o", "totalAmount": amount, "items": [1]}}}


def _run(records: list[tuple[str, int, float]], avro: bool) -> list:
    peer = _peer()
    flow = Dataflow("w3s-test")
    msgs = [KafkaSourceMessage(k.encode(), _event(k, t, a, avro)) for k, t, a in records]
    out = peer.session_records(op.input("in", flow, TestingSource(msgs)), SESSIONS["W3s"])
    got: list = []
    op.output("out", op.map("kv", out, lambda m: (m.key, m.value)), TestingSink(got))
    run_main(flow)
    return got


@pytest.mark.parametrize("avro", [True, False])
def test_bytewax_sessions_map_to_headwater_sessions_and_flush_at_the_end(avro: bool) -> None:
    t0 = 1_767_225_600_860  # the bench input's first event time (2026-01-01)
    records = [  # in event-time order, as the bench input
        ("a", t0, 1.0), ("b", t0 + 10_000, 8.0), ("a", t0 + 60_000, 2.0),
        ("b", t0 + 129_999, 1.5),    # 1 ms under the gap after b's last: same session
        ("a", t0 + 180_000, 4.0),    # exactly one gap after a's last: a new session for both
        ("a", t0 + 299_999, 16.0), ("c", t0 + 1_000_000, 32.0),
    ]
    expected = Expected()
    for key, t, amount in records:  # c alone in partition 1: its session stays open
        expected.add(key, _event(key, t, amount, avro=False), partition=1 if key == "c" else 0)
    expected.finish()
    sessions = expected.sessions["W3s"]
    assert len(sessions.closed) == 2 and len(sessions.still_open) == 2

    ok, note = check_sessions("W3s", session_view(_run(records, avro)), expected)
    assert ok, note
    assert "plus all 2 still open" in note  # Bytewax closes every session at end of input
