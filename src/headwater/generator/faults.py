"""Deliberate damage: business-rule violations (schema-valid) and malformed record bytes.

Violations by event type (the name is recorded in :attr:`GeneratedEvent.invalid`):

==============================  ===========================================================
order.created                   ``empty-items``, ``non-positive-quantity``,
                                ``total-mismatch``, ``unknown-currency``, ``unknown-user``
payment.succeeded/failed        ``non-positive-amount``, ``unknown-currency``
order.shipped/delivered         ``unknown-status``
order.canceled                  ``invalid-transition`` (canceled after DELIVERED)
user.registered                 ``bad-email``
inventory.updated               ``negative-stock``
system.health.check             ``negative-response-time``
ml.model.inference              ``confidence-out-of-range``
integration.webhook.received    ``empty-source``
==============================  ===========================================================

Malformed kinds (:attr:`GeneratedEvent.malformed`): ``random-bytes`` (first byte is never the
magic byte 0), ``unknown-schema-id`` (valid datum behind an id no registry has issued:
``UNKNOWN_SCHEMA_ID``), ``truncated`` (a valid framed record missing its last byte(s): decoding
always runs out of input).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

from headwater.generator.model import GeneratedEvent

UNKNOWN_SCHEMA_ID = 0x7FFF_FFF0
MALFORMED_KINDS = ("random-bytes", "unknown-schema-id", "truncated")
ACCEPTED_CURRENCIES = frozenset({"EUR", "USD", "GBP", "CHF", "JPY"})
ORDER_STATUSES = frozenset({"PENDING", "PAID", "SHIPPED", "DELIVERED", "CANCELED"})

Violation = Callable[[dict[str, Any], random.Random], None]


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    return event["data"]["payload"]


def _empty_items(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["items"] = []


def _non_positive_quantity(e: dict[str, Any], rng: random.Random) -> None:
    item = rng.choice(_payload(e)["items"])
    item["quantity"] = -rng.randrange(0, 3)


def _total_mismatch(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["totalAmount"] = round(_payload(e)["totalAmount"] + rng.uniform(1, 50), 2)


def _unknown_currency(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["currency"] = rng.choice(("XXX", "EURO", "BTC"))


def _unknown_user(e: dict[str, Any], rng: random.Random) -> None:
    ghost = f"u-ghost-{rng.getrandbits(32):08x}"
    _payload(e)["userId"] = ghost
    e["userId"] = ghost


def _non_positive_amount(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["amount"] = -round(rng.uniform(0, 100), 2)


def _unknown_status(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["status"] = rng.choice(("LOST", "RETURNED", "shipped"))


def _invalid_transition(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["previousStatus"] = "DELIVERED"


def _bad_email(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["email"] = _payload(e)["email"].replace("@", " at ")


def _negative_stock(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["newStockLevel"] = -rng.randrange(1, 20)


def _negative_response_time(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["responseTime"] = -1.0


def _confidence_out_of_range(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["confidence"] = rng.choice((1.5, -0.2))


def _empty_source(e: dict[str, Any], rng: random.Random) -> None:
    _payload(e)["source"] = ""


_PAYMENT = {"non-positive-amount": _non_positive_amount, "unknown-currency": _unknown_currency}
VIOLATIONS: dict[str, dict[str, Violation]] = {
    "order.created": {
        "empty-items": _empty_items,
        "non-positive-quantity": _non_positive_quantity,
        "total-mismatch": _total_mismatch,
        "unknown-currency": _unknown_currency,
        "unknown-user": _unknown_user,
    },
    "payment.succeeded": _PAYMENT,
    "payment.failed": _PAYMENT,
    "order.shipped": {"unknown-status": _unknown_status},
    "order.delivered": {"unknown-status": _unknown_status},
    "order.canceled": {"invalid-transition": _invalid_transition},
    "user.registered": {"bad-email": _bad_email},
    "inventory.updated": {"negative-stock": _negative_stock},
    "system.health.check": {"negative-response-time": _negative_response_time},
    "ml.model.inference": {"confidence-out-of-range": _confidence_out_of_range},
    "integration.webhook.received": {"empty-source": _empty_source},
}


def violate(event: GeneratedEvent, rng: random.Random) -> None:
    """Apply one random rule violation of ``event``'s type and record its name."""
    name, apply = rng.choice(list(VIOLATIONS[event.event_type].items()))
    apply(event.event, rng)
    event.invalid = name


def malform(framed: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Break a framed record (``0x00`` + id + datum); returns the bad bytes and the kind."""
    kind = rng.choice(MALFORMED_KINDS)
    if kind == "random-bytes":
        junk = rng.randbytes(rng.randrange(0, 64))
        return bytes([rng.randrange(1, 256)]) + junk, kind
    if kind == "unknown-schema-id":
        return b"\x00" + struct.pack(">I", UNKNOWN_SCHEMA_ID) + framed[5:], kind
    return framed[: rng.randrange(5, len(framed))], kind
