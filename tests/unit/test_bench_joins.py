"""The join workloads' plumbing (W4 interval join, W4t stream-table join): the harness's expected
results, the output views and checks, the input selection from the generator, the peers' row
functions, and which engines run them. No broker, no engine."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import orjson

from headwater.bench import join_inputs
from headwater.bench.engine_suite import EngineSuiteConfig, plan
from headwater.bench.workloads import (
    DEFAULT_WORKLOADS,
    INTERVAL_JOINS,
    JOINS,
    WORKLOADS,
    IntervalJoinSpec,
    Timed,
    check_join,
    checksum,
    enrich,
    interval_join,
    join_view,
    order_side,
    payment_side,
    user_side,
)
from headwater.generator import GeneratorConfig, generate_batches
from headwater.generator.events import nest, to_dicts

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers"))

from peer_env import merge_enriched, w4_order, w4_payment, w4t_order, w4t_profile  # noqa: E402

MIN = 60_000


def test_the_join_workloads_are_registered_and_opt_in() -> None:
    assert set(JOINS) <= set(WORKLOADS)
    assert not set(JOINS) & set(DEFAULT_WORKLOADS)
    assert INTERVAL_JOINS["W4"] == IntervalJoinSpec(before_ms=0, after_ms=10 * MIN, grace_ms=10 * MIN)


def test_interval_join_pairs_every_right_record_within_the_bounds_inclusive() -> None:
    orders = [Timed("c1", 1_000, ("o1", 10.0)), Timed("c2", 1_000, ("o2", 20.0)),
              Timed("c3", 1_000, ("o3", 30.0))]
    payments = [Timed("c1", 1_000, ("p1", 10.0)),  # same instant: in
                Timed("c1", 1_000 + 10 * MIN, ("p1b", 10.0)),  # upper bound: in
                Timed("c2", 1_000 + 10 * MIN + 1, ("p2", 20.0)),  # 1 ms too late
                Timed("c3", 999, ("p3", 30.0)),  # before the order
                Timed("cX", 1_000, ("px", 1.0))]  # no order
    got = interval_join(orders, payments, INTERVAL_JOINS["W4"])
    assert got.rows == Counter({("o1", 10.0, "p1", 10.0): 1, ("o1", 10.0, "p1b", 10.0): 1})
    assert (got.left, got.right) == (3, 5)
    # a backward bound lets earlier right records in
    wide = interval_join(orders, payments, IntervalJoinSpec(before_ms=1))
    assert ("o3", 30.0, "p3", 30.0) in wide.rows


def test_enrich_looks_the_profile_up_as_of_the_orders_event_time() -> None:
    users = [Timed("u1", 100, ("a@x", "A", "One", "DE")), Timed("u1", 500, ("a2@x", "A", "One", "FR")),
             Timed("u2", 100, ("b@x", "B", "Two", None))]
    orders = [Timed("u1", 300, ("o1", "u1", 5.0)), Timed("u1", 600, ("o2", "u1", 6.0)),
              Timed("u2", 50, ("o3", "u2", 7.0)), Timed("ghost", 50, ("o4", "ghost", 8.0))]
    got = enrich(orders, users)
    assert got.rows == Counter({
        ("o1", "u1", 5.0, "a@x", "A", "One", "DE"): 1,  # the update at 500 is after it
        ("o2", "u1", 6.0, "a2@x", "A", "One", "FR"): 1,
        ("o3", "u2", 7.0, None, None, None, None): 1,  # the user registered after the order
        ("o4", "ghost", 8.0, None, None, None, None): 1,
    })
    assert got.asof_differs == 2  # o1 and o3: a table read to its end first would differ


def test_join_views_and_checks_compare_multisets_and_report_a_checksum() -> None:
    want = interval_join([Timed("c", 0, ("o1", 1.5))], [Timed("c", 10, ("p1", 1.5))],
                         INTERVAL_JOINS["W4"])
    row = orjson.dumps({"orderId": "o1", "totalAmount": 1.5, "paymentId": "p1", "amount": 1.5})
    ok, note = check_join(join_view("W4", [(b"c", row)]), want)
    assert ok and note == f"1 rows, checksum {checksum(want.rows)}"
    ok, why = check_join(join_view("W4", [(b"c", row), (b"c", row)]), want)
    assert not ok and "1 extra (1 duplicates)" in why and "0 missing" in why
    ok, why = check_join(join_view("W4", []), want)
    assert not ok and why.startswith("0 rows") and "1 missing" in why
    # W4t: missing profile fields read as nulls, whatever the engine's field order
    enriched = orjson.dumps({"country": None, "userId": "g", "orderId": "o", "totalAmount": 2,
                             "email": None, "firstName": None, "lastName": None})
    assert join_view("W4t", [(b"g", enriched), (b"g", None)]) == Counter(
        {("o", "g", 2.0, None, None, None, None): 1})
    assert checksum(Counter({("a",): 1, ("b",): 2})) == checksum(Counter({("b",): 2, ("a",): 1}))


def test_peer_rows_are_the_checked_fields() -> None:
    order = {"userId": "u1", "correlationId": "c1", "timestamp": 5,
             "data": {"payload": {"orderId": "o1", "totalAmount": 12.5}}}
    payment = {"correlationId": "c1", "timestamp": 9,
               "data": {"payload": {"paymentId": "p1", "amount": 12.5}}}
    user = {"userId": "u1", "timestamp": 1, "data": {"payload": {
        "email": "e", "firstName": "f", "lastName": "l", "country": None, "registrationSource": "WEB"}}}
    row = orjson.dumps({**w4_order(order), **w4_payment(payment)})
    want = interval_join([order_side(order, "correlationId")], [payment_side(payment)],
                         INTERVAL_JOINS["W4"])
    assert check_join(join_view("W4", [(b"c1", row)]), want)[0]
    want_t = enrich([order_side(order, "userId")], [user_side(user)])
    rows = [orjson.dumps(merge_enriched(w4t_order(order), w4t_profile(user)))]
    assert check_join(join_view("W4t", [(b"u1", r) for r in rows]), want_t)[0]
    assert merge_enriched(w4t_order(order), None)["email"] is None


def _generated(workload: str, events: int) -> dict[str, list[dict]]:
    """What the pre-load would write for ``workload`` (per role, event dicts in stream order)."""
    config = GeneratorConfig(seed=3, users=200, invalid_fraction=0.05)
    sides = join_inputs.SIDES[workload]
    out: dict[str, list[dict]] = {s.role: [] for s in sides}
    left = events
    for batch in generate_batches(config):
        chosen = join_inputs.select(batch.frames, sides, left)
        for side in sides:
            if side.role in chosen:
                dicts = to_dicts(side.event_type, nest(side.event_type, chosen[side.role], "dev"))
                out[side.role] += dicts
                left -= len(dicts)
        if not left:
            return out
    raise AssertionError("the generator ended")


def test_w4_input_holds_orders_and_their_payments_and_nearly_all_match() -> None:
    got = _generated("W4", 3_000)
    orders, payments = got["orders"], got["payments"]
    assert len(orders) + len(payments) == 3_000
    assert all(e["eventType"] == "order.created" for e in orders)
    assert all(e["eventType"] == "payment.succeeded" for e in payments)
    expected = interval_join([order_side(e, "correlationId") for e in orders],
                             [payment_side(e) for e in payments], INTERVAL_JOINS["W4"])
    # every payment's order is in the input (orders come first) and within 10 minutes of it
    assert sum(expected.rows.values()) == len(payments) > 0.6 * len(orders)


def test_w4t_as_of_and_latest_profile_agree_on_the_generated_input() -> None:
    got = _generated("W4t", 3_000)
    orders, users = got["orders"], got["users"]
    assert len(orders) + len(users) == 3_000 and len(users) <= 200
    expected = enrich([order_side(e, "userId") for e in orders], [user_side(e) for e in users])
    # users register before their first order, once: the two table semantics agree
    assert expected.asof_differs == 0
    unknown = sum(n for row, n in expected.rows.items() if row[3] is None)
    assert 0 < unknown < 0.05 * len(orders)  # the generator's unknown-user violations


def test_join_input_topics_and_the_runs_the_suite_plans() -> None:
    inputs = join_inputs.join_inputs(["W1", "W4", "W4t"], "avro", 1, 10_000, 1_000, 4)
    assert set(inputs) == {"W4", "W4t"}
    assert inputs["W4"].topics == ("bench.w4.orders.avro.v1.s1.u10000.n1000.p4",
                                   "bench.w4.payments.avro.v1.s1.u10000.n1000.p4")
    assert inputs["W4"].timed == list(inputs["W4"].topics)
    assert inputs["W4t"].timed == ["bench.w4t.orders.avro.v1.s1.u10000.n1000.p4"]
    runs = plan(EngineSuiteConfig(workloads=["W4", "W4t"], workers=[1],
                                  engines=["headwater", "quixstreams", "faust", "bytewax"]))
    assert [(r.workload, r.engine) for r in runs] == [
        ("W4", "headwater"), ("W4", "quixstreams"), ("W4t", "headwater"), ("W4t", "quixstreams")]
