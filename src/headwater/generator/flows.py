"""A deterministic simulation of the platform's traffic, yielding events in event-time order.

Arrivals follow a Poisson process on a simulated clock (``event_rate`` events per second of event
time, approximately). Each arrival is one of:

- an order flow, decided in full when it starts and scheduled ahead (timescales compressed so flows
  complete within minutes of event time): the user registers first if new; ``order.created``
  (PENDING); then 5% ``order.canceled`` by the customer while PENDING, else a payment after
  0.5-5 s: 10% ``payment.failed`` (then a retry half the time, otherwise ``order.canceled`` by the
  system), else ``payment.succeeded`` (PAID) followed by one ``inventory.updated`` SALE per item;
  then 4% ``order.canceled`` from PAID with a refund, else ``order.shipped`` after 5-60 s and
  ``order.delivered`` 10-120 s later. All events of a flow share ``correlationId``; the user's
  events carry ``userId`` and the ``sessionId`` of the user's session (a new session after 30
  minutes of inactivity);
- a sign-up of a not yet registered user, an inventory restock, a health check (services have
  incidents: a run of DEGRADED/UNHEALTHY checks with latency and error spikes), an ML inference
  (models drift: runs of inferences with a much lower confidence), or a webhook call.

Stock levels are applied when an ``inventory.updated`` event is emitted, so previous/new levels
chain correctly in event time.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator
from typing import Any

from headwater.generator.model import GeneratedEvent, GeneratorConfig

_SERVICES = (
    "order-service", "payment-service", "inventory-service", "user-service",
    "shipping-service", "ml-gateway", "webhook-gateway", "search-service",
)
_REGIONS = (("eu-west-1", ("a", "b", "c")), ("us-east-1", ("a", "b", "d")), ("ap-southeast-1", ("a", "b")))
_CURRENCY_BY_REGION = {"eu-west-1": ("EUR", "EUR", "EUR", "GBP", "CHF"), "us-east-1": ("USD",), "ap-southeast-1": ("USD", "JPY")}
_MODELS = (
    ("fraud-detector", "CLASSIFICATION", "3.2.0"),
    ("recommender", "RECOMMENDATION", "12.0.1"),
    ("delivery-eta", "REGRESSION", "1.4.7"),
)
_WEBHOOK_SOURCES = (("stripe", "charge.succeeded"), ("github", "push"), ("shopify", "orders/create"), ("twilio", "message.delivered"))
_FIRST = ("Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger", "Radia", "Niklaus")
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen", "Dijkstra", "Perlman", "Wirth")
_CITIES = (("Berlin", "DE", "10115"), ("Paris", "FR", "75001"), ("Austin", "US", "73301"), ("Leeds", "GB", "LS1"), ("Osaka", "JP", "530-0001"))
_SOURCES = ("WEB", "WEB", "IOS", "ANDROID", "PARTNER")
_METHODS = ("CARD", "CARD", "CARD", "PAYPAL", "WALLET", "BANK_TRANSFER")
_CARRIERS = ("DHL", "UPS", "FedEx", "GLS")
_DECLINES = ("INSUFFICIENT_FUNDS", "CARD_EXPIRED", "FRAUD_SUSPECTED", "PROVIDER_ERROR")
_SESSION_GAP_MS = 30 * 60_000
_EVENTS_PER_ARRIVAL = 2.3  # measured mean of the arrival mix below; sets the arrival rate
_ARRIVALS = ("order",) * 30 + ("health",) * 25 + ("ml",) * 22 + ("webhook",) * 8 + ("restock",) * 7 + ("signup",) * 8


class FlowSimulator:
    """Yields :class:`GeneratedEvent` in event-time order; equal configs give equal streams."""

    def __init__(self, config: GeneratorConfig) -> None:
        self._cfg = config
        self._rng = random.Random(f"{config.seed}:flows")
        rng = self._rng
        self._heap: list[tuple[float, int, GeneratedEvent, tuple[int, int] | None]] = []
        self._seq = 0
        self._registered = bytearray(config.users)
        self._unregistered = config.users
        self._sessions: dict[int, tuple[str, float]] = {}
        self._prices = [round(rng.lognormvariate(3.0, 0.8), 2) for _ in range(config.products)]
        self._stock = [rng.randrange(20, 500) for _ in range(config.products)]
        self._incidents = dict.fromkeys(_SERVICES, 0)
        self._drift = {m[0]: 0 for m in _MODELS}
        self._arrival_gap_ms = 1000.0 * _EVENTS_PER_ARRIVAL / config.event_rate

    def events(self, limit: int | None = None) -> Iterator[GeneratedEvent]:
        """The stream; with ``limit``, exactly ``limit`` events (new flows stop starting when
        the scheduled ones suffice, so nearly all flows complete)."""
        heap, emitted, stopping = self._heap, 0, False
        now = float(self._cfg.start_ms)
        while limit is None or emitted < limit:
            if heap and (stopping or heap[0][0] <= now):
                _, _, event, stock = heapq.heappop(heap)
                if stock is not None:
                    self._apply_stock(event, *stock)
                emitted += 1
                yield event
                continue
            if stopping:
                return
            self._arrive(now)
            now += self._rng.expovariate(1.0) * self._arrival_gap_ms
            stopping = limit is not None and emitted + len(heap) >= limit

    # -- arrivals -------------------------------------------------------------------------
    def _arrive(self, t: float) -> None:
        kind = self._rng.choice(_ARRIVALS)
        if kind == "order":
            self._order_flow(t)
        elif kind == "health":
            self._health_check(t)
        elif kind == "ml":
            self._inference(t)
        elif kind == "webhook":
            self._webhook(t)
        elif kind == "restock":
            self._restock(t)
        elif not self._signup(t):
            self._health_check(t)

    def _signup(self, t: float) -> bool:
        for _ in range(3):
            u = self._rng.randrange(self._cfg.users)
            if not self._registered[u]:
                self._register(u, t)
                return True
        return False

    def _order_flow(self, t: float) -> None:
        rng = self._rng
        u = rng.randrange(self._cfg.users)
        if not self._registered[u]:
            self._register(u, t)
            t += rng.uniform(1_000, 30_000)
        user, region = _user_id(u), _REGIONS[u % len(_REGIONS)][0]
        corr, session = self._uuid(), self._session(u, t)
        order_id = f"ord-{self._hex(12)}"
        lines = [(rng.randrange(self._cfg.products), 1 + int(rng.expovariate(1.2))) for _ in range(1 + min(int(rng.expovariate(0.8)), 4))]
        items = [{"productId": _product_id(p), "quantity": q, "price": self._prices[p]} for p, q in lines]
        total = round(sum(i["quantity"] * i["price"] for i in items), 2)
        currency = rng.choice(_CURRENCY_BY_REGION[region])
        method = rng.choice(_METHODS)
        city, country, postal = _CITIES[u % len(_CITIES)]
        flow = {"corr": corr, "user": user, "region": region}
        self._flow_event(t, "order.created", "order-service", flow, session, {
            "payload": {"orderId": order_id, "userId": user, "items": items, "totalAmount": total, "currency": currency, "status": "PENDING"},
            "metadata": {"paymentMethod": method, "shippingAddress": {"street": f"{1 + u % 97} Main Street", "city": city, "postalCode": postal, "country": country},
                         "channel": rng.choice(("web", "web", "app", "marketplace")), "attributes": {"abBucket": "AB"[u % 2]} if u % 3 else {}},
        })
        if rng.random() < 0.05:
            self._cancel(t + rng.uniform(1_000, 30_000), flow, order_id, "CUSTOMER_REQUEST", "PENDING", 0.0, currency, "CUSTOMER", session)
            return
        t += rng.uniform(500, 5_000)
        pay = {"orderId": order_id, "amount": total, "currency": currency, "paymentMethod": method}
        while rng.random() < 0.10:
            self._flow_event(t, "payment.failed", "payment-service", flow, session, {
                "payload": {"paymentId": f"pay-{self._hex(12)}", **pay, "reason": rng.choice(_DECLINES), "status": "PENDING"},
                "metadata": {"provider": "acquirer-a", "declineCode": f"D{rng.randrange(100, 999)}", "retryable": True, "processingTimeMs": rng.randrange(80, 900)},
            })
            if rng.random() < 0.5:
                self._cancel(t + rng.uniform(1_000, 10_000), flow, order_id, "PAYMENT_FAILED", "PENDING", 0.0, currency, "SYSTEM", None)
                return
            t += rng.uniform(2_000, 10_000)
        self._flow_event(t, "payment.succeeded", "payment-service", flow, session, {
            "payload": {"paymentId": f"pay-{self._hex(12)}", **pay, "status": "PAID"},
            "metadata": {"provider": "acquirer-a", "authorizationCode": self._hex(6).upper(), "processingTimeMs": rng.randrange(80, 900)},
        })
        for p, q in lines:
            self._stock_event(t + rng.uniform(100, 1_000), p, -q, "SALE", order_id, None)
        if rng.random() < 0.04:
            self._cancel(t + rng.uniform(5_000, 60_000), flow, order_id, "CUSTOMER_REQUEST", "PAID", total, currency, "CUSTOMER", None)
            return
        carrier, tracking = rng.choice(_CARRIERS), f"TRK{self._hex(10).upper()}"
        t += rng.uniform(5_000, 60_000)
        self._flow_event(t, "order.shipped", "shipping-service", flow, None, {
            "payload": {"orderId": order_id, "carrier": carrier, "trackingNumber": tracking, "estimatedDelivery": int(t) + 86_400_000, "status": "SHIPPED"},
            "metadata": {"warehouseId": _warehouse(lines[0][0]), "packageCount": 1 + len(lines) // 3},
        })
        t += rng.uniform(10_000, 120_000)
        self._flow_event(t, "order.delivered", "shipping-service", flow, None, {
            "payload": {"orderId": order_id, "carrier": carrier, "trackingNumber": tracking, "signedBy": rng.choice((None, _FIRST[u % len(_FIRST)])), "status": "DELIVERED"},
            "metadata": {"deliveryAttempts": 1 + int(rng.random() < 0.1), "proofOfDeliveryUrl": None},
        })

    def _cancel(self, t: float, flow: dict[str, str], order_id: str, reason: str, previous: str,
                refund: float, currency: str, actor: str, session: str | None) -> None:
        self._flow_event(t, "order.canceled", "order-service", flow, session, {
            "payload": {"orderId": order_id, "reason": reason, "previousStatus": previous, "refundAmount": refund, "currency": currency, "status": "CANCELED"},
            "metadata": {"canceledBy": actor},
        })

    def _register(self, u: int, t: float) -> None:
        self._registered[u] = 1
        self._unregistered -= 1
        first, last = _FIRST[u % len(_FIRST)], _LAST[(u // len(_FIRST)) % len(_LAST)]
        region = _REGIONS[u % len(_REGIONS)][0]
        user = _user_id(u)
        self._push(t, "user.registered", self._envelope("user.registered", "user-service", t, {
            "payload": {"userId": user, "email": f"{first}.{last}.{u}@example.com".lower(), "firstName": first, "lastName": last,
                        "registrationSource": _SOURCES[u % len(_SOURCES)], "country": _CITIES[u % len(_CITIES)][1]},
            "metadata": {"ipAddress": f"10.{u % 256}.{(u // 256) % 256}.{self._rng.randrange(1, 255)}", "userAgent": "Mozilla/5.0", "referrer": self._rng.choice((None, "newsletter", "search"))},
        }, None, user, self._session(u, t), region))

    def _restock(self, t: float) -> None:
        self._stock_event(t, self._rng.randrange(self._cfg.products), self._rng.randrange(50, 500), "RESTOCK", None, f"b-{self._hex(8)}")

    def _stock_event(self, t: float, p: int, delta: int, reason: str, order_id: str | None, batch: str | None) -> None:
        self._push(t, "inventory.updated", self._envelope("inventory.updated", "inventory-service", t, {
            "payload": {"productId": _product_id(p), "warehouseId": _warehouse(p), "previousStockLevel": 0, "newStockLevel": 0, "changeReason": reason},
            "metadata": {"orderId": order_id, "batchId": batch},
        }), (p, delta))

    def _apply_stock(self, event: GeneratedEvent, p: int, delta: int) -> None:
        payload = event.event["data"]["payload"]
        previous = self._stock[p]
        self._stock[p] = max(0, previous + delta)
        payload["previousStockLevel"], payload["newStockLevel"] = previous, self._stock[p]

    def _health_check(self, t: float) -> None:
        rng = self._rng
        service = rng.choice(_SERVICES)
        region, zones = _REGIONS[_SERVICES.index(service) % len(_REGIONS)]
        if self._incidents[service] == 0 and rng.random() < 0.01:
            self._incidents[service] = rng.randrange(5, 30)
        if self._incidents[service]:
            self._incidents[service] -= 1
            status = rng.choice(("DEGRADED", "UNHEALTHY"))
            latency, errors, checks = rng.uniform(500, 5_000), rng.randrange(5, 100), {"db": "timeout", "cache": "ok"}
        else:
            status, latency, errors, checks = "HEALTHY", rng.uniform(2, 80), int(rng.random() < 0.02), {"db": "ok", "cache": "ok"}
        self._push(t, "system.health.check", self._envelope("system.health.check", service, t, {
            "payload": {"serviceName": service, "status": status, "responseTime": round(latency, 3), "errorCount": errors, "checks": checks},
            "metadata": {"instanceId": f"{service}-{rng.randrange(3)}", "region": region, "availabilityZone": region + rng.choice(zones)},
        }, region=region))

    def _inference(self, t: float) -> None:
        rng = self._rng
        model, kind, version = rng.choice(_MODELS)
        if self._drift[model] == 0 and rng.random() < 0.002:
            self._drift[model] = rng.randrange(200, 2_000)
        if self._drift[model]:
            self._drift[model] -= 1
            confidence = rng.betavariate(3, 3)
        else:
            confidence = rng.betavariate(9, 1.5)
        u = rng.randrange(self._cfg.users)
        user = _user_id(u) if self._registered[u] and model != "fraud-detector" else None
        self._push(t, "ml.model.inference", self._envelope("ml.model.inference", "ml-gateway", t, {
            "payload": {"modelId": model, "modelVersion": version, "input": {"feature_a": f"{rng.random():.4f}", "segment": "AB"[u % 2]},
                        "output": {"label": rng.choice(("yes", "no")), "score": f"{confidence:.4f}"}, "confidence": round(confidence, 6)},
            "metadata": {"inferenceTime": round(rng.uniform(1, 40), 3), "endpoint": f"/v1/models/{model}:predict", "modelType": kind},
        }, None, user, self._session(u, t) if user else None))

    def _webhook(self, t: float) -> None:
        rng = self._rng
        source, name = rng.choice(_WEBHOOK_SOURCES)
        hook_id = f"wh-{self._hex(12)}"
        body = json.dumps({"id": hook_id, "type": name, "amount": rng.randrange(100, 100_000), "livemode": False})
        self._push(t, "integration.webhook.received", self._envelope("integration.webhook.received", "webhook-gateway", t, {
            "payload": {"webhookId": hook_id, "source": source, "eventName": name, "payload": body},
            "metadata": {"headers": {"content-type": "application/json", "user-agent": f"{source}-hooks/1.0"},
                         "signature": f"sha256={self._hex(16)}" if source != "twilio" else None, "processingTime": round(rng.uniform(0.5, 20), 3)},
        }))

    # -- helpers -------------------------------------------------------------------------
    def _flow_event(self, t: float, etype: str, source: str, flow: dict[str, str], session: str | None, data: dict[str, Any]) -> None:
        self._push(t, etype, self._envelope(etype, source, t, data, flow["corr"], flow["user"], session, flow["region"]))

    def _envelope(self, etype: str, source: str, t: float, data: dict[str, Any], corr: str | None = None,
                  user: str | None = None, session: str | None = None, region: str = "eu-west-1") -> dict[str, Any]:
        return {"eventId": self._uuid(), "eventType": etype, "eventSource": source, "timestamp": int(t), "version": "1.0",
                "correlationId": corr, "userId": user, "sessionId": session, "environment": self._cfg.environment,
                "region": region, "data": data}

    def _push(self, t: float, etype: str, event: dict[str, Any], stock: tuple[int, int] | None = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, GeneratedEvent(etype, event), stock))

    def _session(self, u: int, t: float) -> str:
        current = self._sessions.get(u)
        if current is None or t - current[1] > _SESSION_GAP_MS:
            current = (f"s-{self._hex(16)}", t)
        self._sessions[u] = (current[0], max(t, current[1]))
        return current[0]

    def _uuid(self) -> str:
        h = f"{self._rng.getrandbits(122):031x}"  # 122 random bits + version 4 + variant 10xx
        return f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{'89ab'[int(h[15], 16) & 3]}{h[16:19]}-{h[19:31]}"

    def _hex(self, digits: int) -> str:
        return f"{self._rng.getrandbits(4 * digits):0{digits}x}"


def _user_id(u: int) -> str:
    return f"u-{u:07d}"


def _product_id(p: int) -> str:
    return f"p-{p:05d}"


def _warehouse(p: int) -> str:
    return f"wh-{p % 4}"
