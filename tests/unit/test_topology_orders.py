"""The orders-per-user domain topology, run in the in-process test driver."""

from __future__ import annotations

from headwater.streams import InProcessTestDriver
from headwater.topologies.orders import orders_per_user


def order(user: str, total: float, quantities: list[int]) -> dict:
    items = [{"productId": f"p{i}", "quantity": q, "price": 1.0} for i, q in enumerate(quantities)]
    return {"eventType": "order.created",
            "data": {"payload": {"userId": user, "totalAmount": total, "items": items}}}


def test_valid_orders_are_aggregated_per_user_and_invalid_ones_ignored() -> None:
    driver = InProcessTestDriver(orders_per_user("orders", "stats"))
    driver.pipe("orders", [
        order("u1", 10.0, [1, 2]),
        order("u2", 7.5, [1]),
        order("u1", 30.0, [3]),
        order("u2", 0.0, [1]),      # zero total
        order("u2", 5.0, []),       # no items
        order("u1", 4.0, [1, 0]),   # a zero quantity
    ], keys=["c1", "c2", "c3", "c4", "c5", "c6"])
    latest = {row["userId"]: row for row in driver.read_avro("stats")}
    assert latest == {
        "u1": {"userId": "u1", "orders": 2, "revenue": 40.0, "largestOrder": 30.0},
        "u2": {"userId": "u2", "orders": 1, "revenue": 7.5, "largestOrder": 7.5},
    }
    assert [r.key for r in driver.read("stats")] == [b"u1", b"u2"]
