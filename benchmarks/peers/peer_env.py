"""Settings every peer reads from the environment (set by the harness), the start probe, and the
W1 logic the dict-based peers (Quix Streams, Faust, Bytewax) share."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class PeerEnv:
    """BENCH_* variables: topics (``input2``: the right side of W4/W4t), group, format, registry,
    guarantee, commit interval."""

    bootstrap: str
    registry: str
    input: str
    output: str
    group: str
    fmt: str
    guarantee: str
    commit_interval_s: float
    state_dir: str
    batch_size: int
    input2: str = ""  # a join workload's right side (W4: payments, W4t: users)

    @classmethod
    def load(cls) -> PeerEnv:
        e = os.environ
        return cls(
            bootstrap=e["BENCH_BOOTSTRAP"], registry=e.get("BENCH_REGISTRY", ""),
            input=e["BENCH_INPUT"], output=e.get("BENCH_OUTPUT", ""), group=e["BENCH_GROUP"],
            fmt=e.get("BENCH_FORMAT", "avro"), guarantee=e.get("BENCH_GUARANTEE", "at-least-once"),
            commit_interval_s=float(e.get("BENCH_COMMIT_INTERVAL_S", "0.5")),
            state_dir=e.get("BENCH_STATE_DIR", "/tmp/bench-state"),
            batch_size=int(e.get("BENCH_BATCH_SIZE", "10000")),
            input2=e.get("BENCH_INPUT2", ""),
        )


class FirstConsumed:
    """Call it on each record/batch: prints the first_consumed event once, then costs one check."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, *_: object) -> None:
        if not self.seen:
            self.seen = True
            sys.stdout.write(json.dumps({"event": "first_consumed", "t": time.time()}) + "\n")
            sys.stdout.flush()


def order_is_valid(order: dict) -> bool:
    """W1's validation: a positive total and at least one item."""
    payload = order["data"]["payload"]
    return payload["totalAmount"] > 0 and len(payload["items"]) > 0


def derive_order(order: dict) -> dict:
    """W1's output record for a valid order."""
    payload = order["data"]["payload"]
    return {
        "eventId": str(order["eventId"]), "userId": order["userId"], "orderId": payload["orderId"],
        "totalAmount": payload["totalAmount"], "itemCount": len(payload["items"]),
        "totalCents": int(math.floor(payload["totalAmount"] * 100 + 0.5)),
    }


# --- W4 / W4t (joins): the fields each side contributes, as plain dicts --------------------

def w4_order(order: dict) -> dict:
    """W4's left side: an order.created event as ``{orderId, totalAmount}``."""
    payload = order["data"]["payload"]
    return {"orderId": payload["orderId"], "totalAmount": payload["totalAmount"]}


def w4_payment(payment: dict) -> dict:
    """W4's right side: a payment.succeeded event as ``{paymentId, amount}``."""
    payload = payment["data"]["payload"]
    return {"paymentId": payload["paymentId"], "amount": payload["amount"]}


def w4t_order(order: dict) -> dict:
    """W4t's stream: an order.created event as ``{orderId, userId, totalAmount}``."""
    payload = order["data"]["payload"]
    return {"orderId": payload["orderId"], "userId": order["userId"],
            "totalAmount": payload["totalAmount"]}


PROFILE_FIELDS = ("email", "firstName", "lastName", "country")


def w4t_profile(user: dict) -> dict:
    """W4t's table value: a user.registered event's profile fields."""
    payload = user["data"]["payload"]
    return {f: payload.get(f) for f in PROFILE_FIELDS}


def merge_enriched(order: dict, profile: dict | None) -> dict:
    """A W4t output row: the order with its user's profile (nulls when the user is unknown)."""
    return {**order, **(profile or dict.fromkeys(PROFILE_FIELDS))}
