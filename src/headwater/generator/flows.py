"""A deterministic, vectorized simulation of the platform's traffic, emitted in event-time order.

Arrivals follow a Poisson process on a simulated clock (``event_rate`` events per second of event
time, approximately). The simulation runs in chunks of :data:`CHUNK_ARRIVALS` arrivals; every
random choice of a chunk is drawn as a NumPy array and every event type's rows are built as
columns (one flat Polars frame per type, see :func:`headwater.generator.events.nest` for the
schema layout). Each arrival is one of:

- an order flow, decided in full when it starts and scheduled ahead (timescales compressed so flows
  complete within minutes of event time): the user registers first if new; ``order.created``
  (PENDING); then 5% ``order.canceled`` by the customer while PENDING, else a payment after
  0.5-5 s: each attempt fails with 10% probability (``payment.failed``; then a retry 2-10 s later
  half the time, otherwise ``order.canceled`` by the system), else ``payment.succeeded`` (PAID)
  followed by one ``inventory.updated`` SALE per item; then 4% ``order.canceled`` from PAID with a
  refund, else ``order.shipped`` after 5-60 s and ``order.delivered`` 10-120 s later. All events of
  a flow share ``correlationId``; the user's events carry ``userId`` and the ``sessionId`` of the
  user's session (a new session after 30 minutes of inactivity);
- a sign-up of a not yet registered user (three random picks; a health check when all three are
  registered already), an inventory restock, a health check (services have incidents: a run of
  DEGRADED/UNHEALTHY checks with latency and error spikes), an ML inference (models drift: runs of
  inferences with a much lower confidence), or a webhook call.

Events scheduled past the chunk's end wait in a pending set and are emitted, merged in event-time
order, by the chunk that reaches them. Stock levels are applied in emit order, so previous/new
levels chain correctly in event time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from headwater.generator import columns as C
from headwater.generator.model import GeneratorConfig
from headwater.schemas.catalog import EVENT_TYPE_NAMES

_SERVICES = (
    "order-service", "payment-service", "inventory-service", "user-service",
    "shipping-service", "ml-gateway", "webhook-gateway", "search-service",
)
_REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-1")
_ZONES = (("a", "b", "c"), ("a", "b", "d"), ("a", "b"))
_CURRENCIES = (("EUR", "EUR", "EUR", "GBP", "CHF"), ("USD",), ("USD", "JPY"))  # by region
_MODELS = ("fraud-detector", "recommender", "delivery-eta")
_MODEL_TYPES = ("CLASSIFICATION", "RECOMMENDATION", "REGRESSION")
_MODEL_VERSIONS = ("3.2.0", "12.0.1", "1.4.7")
_WEBHOOK_SOURCES = ("stripe", "github", "shopify", "twilio")
_WEBHOOK_NAMES = ("charge.succeeded", "push", "orders/create", "message.delivered")
_FIRST = ("Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger", "Radia", "Niklaus")
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen", "Dijkstra", "Perlman", "Wirth")
_CITIES = ("Berlin", "Paris", "Austin", "Leeds", "Osaka")
_COUNTRIES = ("DE", "FR", "US", "GB", "JP")
_POSTAL = ("10115", "75001", "73301", "LS1", "530-0001")
_SOURCES = ("WEB", "WEB", "IOS", "ANDROID", "PARTNER")
_METHODS = ("CARD", "CARD", "CARD", "PAYPAL", "WALLET", "BANK_TRANSFER")
_CHANNELS = ("web", "web", "app", "marketplace")
_CARRIERS = ("DHL", "UPS", "FedEx", "GLS")
_DECLINES = ("INSUFFICIENT_FUNDS", "CARD_EXPIRED", "FRAUD_SUSPECTED", "PROVIDER_ERROR")
_SESSION_GAP_MS = 30 * 60_000
_EVENTS_PER_ARRIVAL = 2.3  # measured mean of the arrival mix below; sets the arrival rate
# arrival kinds: order, health, ml, webhook, restock, signup
_ORDER, _HEALTH, _ML, _WEBHOOK, _RESTOCK, _SIGNUP = range(6)
_ARRIVAL_P = np.array([30, 25, 22, 8, 7, 8], dtype=np.float64) / 100
CHUNK_ARRIVALS = 16_384
TYPE_CODE = {name: i for i, name in enumerate(EVENT_TYPE_NAMES)}


@dataclass
class Emitted:
    """A run of the clean stream in emit (event-time) order.

    Attributes:
        frames: per event type, its flat rows (see :mod:`headwater.generator.events`) in emit order.
        types: type code (index in ``EVENT_TYPE_NAMES``) of each emitted event, in emit order.
        rows: row of each emitted event within its type's frame.
    """

    frames: dict[str, pl.DataFrame]
    types: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.types)


class FlowSimulator:
    """Yields the clean stream as :class:`Emitted` runs; equal configs give equal streams."""

    def __init__(self, config: GeneratorConfig) -> None:
        self._cfg = config
        self._rng = rng = C.rng_for(config.seed, "flows")
        self._reg_time = np.full(config.users, np.inf)  # event time each user registered
        self._last_touch = np.full(config.users, -np.inf)
        self._session_id = np.zeros(config.users, dtype=np.uint64)
        self._prices = np.round(rng.lognormal(3.0, 0.8, config.products), 2)
        self._stock = rng.integers(20, 500, config.products).tolist()
        self._incidents = [0] * len(_SERVICES)
        self._drift = [0] * len(_MODELS)
        self._gap_ms = 1000.0 * _EVENTS_PER_ARRIVAL / config.event_rate
        self._now = float(config.start_ms)
        self._seq = 0
        self._uw = C.digits_for(config.users - 1, 7)
        self._pw = C.digits_for(config.products - 1, 5)
        self._pending: dict[str, pl.DataFrame] = {}

    # -- the stream ----------------------------------------------------------------------
    def events(self, limit: int | None = None) -> Iterator[Emitted]:
        """The clean stream; with ``limit``, exactly ``limit`` events (new flows stop starting
        when the scheduled ones suffice, so nearly all flows complete)."""
        generated = emitted = 0
        size = CHUNK_ARRIVALS if limit is None else max(64, min(CHUNK_ARRIVALS, limit // 2))
        while limit is None or emitted < limit:
            frames, arrivals = self._chunk(size)
            counts = np.zeros(size, dtype=np.int64)
            for f in frames.values():
                counts += np.bincount(f["_arr"].to_numpy(), minlength=size)
            stopping = False
            if limit is not None:
                total = generated + np.cumsum(counts)
                if total[-1] >= limit:
                    cut = int(np.searchsorted(total, limit))
                    frames = {k: f.filter(pl.col("_arr") <= cut) for k, f in frames.items()}
                    stopping = True
            generated += sum(len(f) for f in frames.values())
            horizon = None if stopping else self._now
            batch = self._emit(frames, horizon, None if limit is None else limit - emitted)
            emitted += len(batch)
            if len(batch):
                yield batch
            if stopping:
                return

    def _emit(self, new: dict[str, pl.DataFrame], horizon: float | None, room: int | None) -> Emitted:
        """Merge the new rows into the pending ones; emit those before ``horizon`` (all when None,
        at most ``room``) in (event time, sequence) order."""
        frames: dict[str, pl.DataFrame] = {}
        for name in EVENT_TYPE_NAMES:
            parts = [f for f in (self._pending.get(name), new.get(name)) if f is not None and len(f)]
            if parts:
                frames[name] = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
        names = list(frames)
        ts = [frames[n]["_t"].to_numpy() for n in names]
        seqs = [frames[n]["_seq"].to_numpy() for n in names]
        codes = np.concatenate([np.full(len(t), TYPE_CODE[n], np.int8) for n, t in zip(names, ts)]) if names else np.zeros(0, np.int8)
        rows = np.concatenate([np.arange(len(t)) for t in ts]) if names else np.zeros(0, np.int64)
        t_all = np.concatenate(ts) if names else np.zeros(0)
        seq_all = np.concatenate(seqs) if names else np.zeros(0, np.int64)
        due = np.flatnonzero(t_all < horizon) if horizon is not None else np.arange(len(t_all))
        order = due[np.lexsort((seq_all[due], t_all[due]))]
        if room is not None:
            order = order[:room]
        codes, rows = codes[order], rows[order]
        out: dict[str, pl.DataFrame] = {}
        new_rows = np.empty(len(order), dtype=np.int64)
        self._pending = {}
        for name in names:
            mine = codes == TYPE_CODE[name]
            picked = rows[mine]
            new_rows[mine] = np.arange(len(picked))
            frame = frames[name]
            out[name] = frame[picked] if len(picked) else frame.clear()
            if horizon is not None:
                left = np.ones(len(frame), dtype=bool)
                left[picked] = False
                if left.any():
                    self._pending[name] = frame.filter(pl.Series(left))
        if "inventory.updated" in out:
            out["inventory.updated"] = self._apply_stock(out["inventory.updated"])
        return Emitted({n: f for n, f in out.items() if len(f)}, codes, new_rows)

    def _apply_stock(self, frame: pl.DataFrame) -> pl.DataFrame:
        stock = self._stock
        previous, new = [], []
        for p, delta in zip(frame["_p"].to_list(), frame["_delta"].to_list()):
            level = stock[p]
            previous.append(level)
            level += delta
            if level < 0:
                level = 0
            stock[p] = level
            new.append(level)
        return frame.with_columns(
            pl.Series("payload.previousStockLevel", previous, dtype=pl.Int32),
            pl.Series("payload.newStockLevel", new, dtype=pl.Int32),
        )

    # -- one chunk of arrivals -----------------------------------------------------------
    def _chunk(self, size: int) -> tuple[dict[str, pl.DataFrame], int]:
        rng, cfg = self._rng, self._cfg
        gaps = rng.exponential(1.0, size) * self._gap_ms
        t = self._now + np.concatenate(([0.0], np.cumsum(gaps[:-1])))
        self._now = float(t[-1] + gaps[-1])
        kinds = rng.choice(6, size=size, p=_ARRIVAL_P)
        parts: dict[str, list[pl.DataFrame]] = {}

        def add(name: str, frame: pl.DataFrame) -> None:
            if len(frame):
                parts.setdefault(name, []).append(frame)

        # registrations: orders by new users and sign-ups claim users in arrival order
        order_pos = np.flatnonzero(kinds == _ORDER)
        signup_pos = np.flatnonzero(kinds == _SIGNUP)
        u_order = rng.integers(cfg.users, size=len(order_pos))
        tries = rng.integers(cfg.users, size=(len(signup_pos), 3))
        unregistered = np.isinf(self._reg_time[tries])
        has = unregistered.any(axis=1)
        u_sign = tries[np.arange(len(signup_pos)), unregistered.argmax(axis=1)]
        claim_pos = np.concatenate((order_pos, signup_pos[has]))
        claim_user = np.concatenate((u_order, u_sign[has]))
        by_pos = np.argsort(claim_pos, kind="stable")
        claim_pos, claim_user = claim_pos[by_pos], claim_user[by_pos]
        _, first = np.unique(claim_user, return_index=True)
        first = first[np.isinf(self._reg_time[claim_user[first]])]
        reg_pos, reg_user = claim_pos[first], claim_user[first]
        reg_order = np.argsort(reg_pos, kind="stable")
        reg_pos, reg_user = reg_pos[reg_order], reg_user[reg_order]
        self._reg_time[reg_user] = t[reg_pos]
        registered_now = np.zeros(size, dtype=bool)
        registered_now[reg_pos] = True
        signup_ok = np.zeros(size, dtype=bool)
        signup_ok[signup_pos] = True
        signup_ok &= registered_now
        health_pos = np.flatnonzero((kinds == _HEALTH) | ((kinds == _SIGNUP) & ~signup_ok))

        # order times (a new user orders 1-30 s after registering), then sessions
        shift = rng.uniform(1_000, 30_000, len(order_pos))
        t_order = t[order_pos] + np.where(registered_now[order_pos], shift, 0.0)
        ml_pos = np.flatnonzero(kinds == _ML)
        ml_model = rng.integers(len(_MODELS), size=len(ml_pos))
        ml_user = rng.integers(cfg.users, size=len(ml_pos))
        ml_known = (self._reg_time[ml_user] <= t[ml_pos]) & (ml_model != 0)
        sessions = self._sessions(
            np.concatenate((reg_user, u_order, ml_user[ml_known])),
            np.concatenate((t[reg_pos], t_order, t[ml_pos][ml_known])),
        )
        s_reg, s_order = sessions[: len(reg_user)], sessions[len(reg_user): len(reg_user) + len(order_pos)]
        s_ml = np.zeros(len(ml_pos), dtype=np.uint64)
        s_ml[ml_known] = sessions[len(reg_user) + len(order_pos):]

        add("user.registered", self._registrations(reg_pos, reg_user, t[reg_pos], s_reg))
        for name, frame in self._orders(order_pos, u_order, t_order, s_order).items():
            add(name, frame)
        add("system.health.check", self._health(health_pos, t[health_pos]))
        add("ml.model.inference", self._inferences(ml_pos, t[ml_pos], ml_model, ml_user, ml_known, s_ml))
        hook_pos = np.flatnonzero(kinds == _WEBHOOK)
        add("integration.webhook.received", self._webhooks(hook_pos, t[hook_pos]))
        restock_pos = np.flatnonzero(kinds == _RESTOCK)
        add("inventory.updated", self._restocks(restock_pos, t[restock_pos]))

        frames: dict[str, pl.DataFrame] = {}
        for name in EVENT_TYPE_NAMES:  # fixed order: sequence numbers are deterministic
            if name in parts:
                frame = pl.concat(parts[name], how="vertical") if len(parts[name]) > 1 else parts[name][0]
                frames[name] = frame.with_columns(pl.Series("_seq", np.arange(self._seq, self._seq + len(frame), dtype=np.int64)))
                self._seq += len(frame)
        return frames, size

    def _sessions(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Session id (uint64) of each (user, time) touch; a new one after 30 minutes idle."""
        n = len(users)
        if n == 0:
            return np.zeros(0, dtype=np.uint64)
        order = np.lexsort((times, users))
        us, ts = users[order], times[order]
        idx = np.arange(n)
        first = np.ones(n, dtype=bool)
        first[1:] = us[1:] != us[:-1]
        prev = np.empty(n)
        prev[1:] = ts[:-1]
        prev[first] = self._last_touch[us[first]]
        new = (ts - prev) > _SESSION_GAP_MS
        fresh = np.zeros(n, dtype=np.uint64)
        fresh[new] = self._rng.integers(0, 2**63, size=int(new.sum()), dtype=np.int64).astype(np.uint64)
        last_new = np.maximum.accumulate(np.where(new, idx, -1))
        group_start = np.maximum.accumulate(np.where(first, idx, 0))
        sid = np.where(last_new >= group_start, fresh[last_new], self._session_id[us])
        last = np.ones(n, dtype=bool)
        last[:-1] = first[1:]
        self._last_touch[us[last]] = np.maximum(self._last_touch[us[last]], ts[last])
        self._session_id[us[last]] = sid[last]
        out = np.empty(n, dtype=np.uint64)
        out[order] = sid
        return out

    # -- row builders (flat columns; see headwater.generator.events) ---------------------
    def _envelope(self, n: int, arr: np.ndarray, t: np.ndarray, source: str | pl.Series, region: pl.Series | str,
                  corr: pl.Series | None = None, user: pl.Series | None = None,
                  session: pl.Series | None = None) -> dict[str, object]:
        none = pl.repeat(None, n, dtype=pl.String, eager=True)
        return {
            "_t": t, "_arr": arr,
            "eventId": C.random_uuids(self._rng, n),
            "eventSource": source if isinstance(source, pl.Series) else pl.repeat(source, n, eager=True),
            "timestamp": np.floor(t).astype(np.int64),
            "correlationId": none if corr is None else corr,
            "userId": none if user is None else user,
            "sessionId": none if session is None else session,
            "region": region if isinstance(region, pl.Series) else pl.repeat(region, n, eager=True),
        }

    def _user_ids(self, u: np.ndarray) -> pl.Series:
        return C.padded("u-", u, self._uw)

    def _product_ids(self, p: np.ndarray) -> pl.Series:
        return C.padded("p-", p, self._pw)

    def _registrations(self, arr: np.ndarray, u: np.ndarray, t: np.ndarray, sessions: np.ndarray) -> pl.DataFrame:
        n, rng = len(u), self._rng
        first, last = u % len(_FIRST), (u // len(_FIRST)) % len(_LAST)
        referrer = rng.integers(3, size=n)
        octet = rng.integers(1, 255, size=n)
        cols = self._envelope(n, arr, t, "user-service", C.take(_REGIONS, u % 3), None,
                              self._user_ids(u), C.hex_of(sessions, 16, "s-"))
        raw = pl.DataFrame({"first": C.take(_FIRST, first), "last": C.take(_LAST, last), "u": u,
                            "o": octet})
        derived = raw.select(
            pl.concat_str([pl.col("first").str.to_lowercase(), pl.lit("."), pl.col("last").str.to_lowercase(),
                           pl.lit("."), pl.col("u").cast(pl.String), pl.lit("@example.com")]).alias("email"),
            pl.concat_str([pl.lit("10."), (pl.col("u") % 256).cast(pl.String), pl.lit("."),
                           ((pl.col("u") // 256) % 256).cast(pl.String), pl.lit("."), pl.col("o").cast(pl.String)]).alias("ip"),
        )
        cols.update({
            "payload.userId": cols["userId"], "payload.email": derived["email"],
            "payload.firstName": raw["first"], "payload.lastName": raw["last"],
            "payload.registrationSource": C.take(_SOURCES, u % len(_SOURCES)),
            "payload.country": C.take(_COUNTRIES, u % len(_CITIES)),
            "metadata.ipAddress": derived["ip"], "metadata.userAgent": pl.repeat("Mozilla/5.0", n, eager=True),
            "metadata.referrer": C.take((None, "newsletter", "search"), referrer),
        })
        return pl.DataFrame(cols)

    def _orders(self, arr: np.ndarray, u: np.ndarray, t0: np.ndarray, sessions: np.ndarray) -> dict[str, pl.DataFrame]:
        rng, cfg, n = self._rng, self._cfg, len(u)
        out: dict[str, pl.DataFrame] = {}
        if n == 0:
            return out
        region = u % 3
        user, corr, session = self._user_ids(u), C.random_uuids(rng, n), C.hex_of(sessions, 16, "s-")
        region_s = C.take(_REGIONS, region)
        order_id = C.random_hex(rng, n, 12, "ord-")
        # lines
        nlines = 1 + np.minimum(np.floor(rng.exponential(1 / 0.8, n)).astype(np.int64), 4)
        line_order = np.repeat(np.arange(n), nlines)
        line_start = np.cumsum(nlines) - nlines
        products = rng.integers(cfg.products, size=len(line_order))
        qty = (1 + np.floor(rng.exponential(1 / 1.2, len(line_order)))).astype(np.int32)
        price = self._prices[products]
        total = np.round(np.bincount(line_order, weights=qty * price, minlength=n), 2)
        lens = np.array([len(c) for c in _CURRENCIES])
        cur_idx = np.floor(rng.random(n) * lens[region]).astype(np.int64)
        cur_table = [c for group in _CURRENCIES for c in group]
        cur_base = np.concatenate(([0], np.cumsum(lens)[:-1]))
        currency = C.take(cur_table, cur_base[region] + cur_idx)
        method = C.take(_METHODS, rng.integers(len(_METHODS), size=n))
        channel = C.take(_CHANNELS, rng.integers(len(_CHANNELS), size=n))
        items = pl.DataFrame({"productId": self._product_ids(products), "quantity": qty, "price": price,
                              "o": line_order}).group_by("o", maintain_order=True).agg(
            pl.struct("productId", "quantity", "price").alias("items"))["items"]
        city = u % len(_CITIES)
        address = pl.DataFrame({"street": pl.DataFrame({"n": 1 + u % 97}).select(
            pl.concat_str([pl.col("n").cast(pl.String), pl.lit(" Main Street")]).alias("n"))["n"],
            "city": C.take(_CITIES, city), "postalCode": C.take(_POSTAL, city),
            "country": C.take(_COUNTRIES, city)}).to_struct("metadata.shippingAddress")
        attributes = C.string_map([("abBucket", C.take(("A", "B"), u % 2))], n, present=(u % 3) != 0)

        env = self._envelope(n, arr, t0, "order-service", region_s, corr, user, session)
        env.update({
            "payload.orderId": order_id, "payload.userId": user, "payload.items": items,
            "payload.totalAmount": total, "payload.currency": currency,
            "payload.status": pl.repeat("PENDING", n, eager=True),
            "metadata.paymentMethod": method, "metadata.shippingAddress": address,
            "metadata.channel": channel, "metadata.attributes": attributes,
        })
        out["order.created"] = pl.DataFrame(env)

        # decisions, all drawn per order
        cancel_pending = rng.random(n) < 0.05
        t_cancel_pending = t0 + rng.uniform(1_000, 30_000, n)
        t_pay = t0 + rng.uniform(500, 5_000, n)
        retries = rng.geometric(0.95, n) - 1  # failed attempts followed by a retry
        fail_cancel = rng.random(n) < 0.05 / 0.95  # the last attempt fails and the system cancels
        cancel_paid = rng.random(n) < 0.04
        t_cancel_paid_gap = rng.uniform(5_000, 60_000, n)
        t_ship_gap = rng.uniform(5_000, 60_000, n)
        t_deliver_gap = rng.uniform(10_000, 120_000, n)
        carrier = rng.integers(len(_CARRIERS), size=n)
        signed = rng.random(n) < 0.5
        second_attempt = rng.random(n) < 0.1

        nfail = np.where(cancel_pending, 0, retries + fail_cancel)
        fo = np.repeat(np.arange(n), nfail)
        gaps = rng.uniform(2_000, 10_000, len(fo))
        cs = np.cumsum(gaps)
        start = np.repeat(np.cumsum(nfail) - nfail, nfail)
        before = cs - gaps - (cs[start] - gaps[start]) if len(fo) else cs
        t_fail = t_pay[fo] + before
        retry_gap = np.where(np.arange(len(fo)) == (start + nfail[fo] - 1), np.where(fail_cancel[fo], 0.0, gaps), gaps) \
            if len(fo) else gaps
        t_success = t_pay + np.bincount(fo, weights=retry_gap, minlength=n)
        succeeded = ~cancel_pending & ~fail_cancel
        shipped = succeeded & ~cancel_paid

        def flow(idx: np.ndarray, t: np.ndarray, source: str, with_session: bool) -> dict[str, object]:
            return self._envelope(len(idx), arr[idx], t, source, region_s.gather(idx), corr.gather(idx),
                                  user.gather(idx), session.gather(idx) if with_session else None)

        if len(fo):
            m = len(fo)
            env = flow(fo, t_fail, "payment-service", True)
            env.update({
                "payload.paymentId": C.random_hex(rng, m, 12, "pay-"), "payload.orderId": order_id.gather(fo),
                "payload.amount": total[fo], "payload.currency": currency.gather(fo),
                "payload.paymentMethod": method.gather(fo),
                "payload.reason": C.take(_DECLINES, rng.integers(len(_DECLINES), size=m)),
                "payload.status": pl.repeat("PENDING", m, eager=True),
                "metadata.provider": pl.repeat("acquirer-a", m, eager=True),
                "metadata.declineCode": C.padded("D", rng.integers(100, 999, size=m), 3),
                "metadata.retryable": np.ones(m, dtype=bool),
                "metadata.processingTimeMs": rng.integers(80, 900, size=m).astype(np.int32),
            })
            out["payment.failed"] = pl.DataFrame(env)

        ok = np.flatnonzero(succeeded)
        m = len(ok)
        env = flow(ok, t_success[ok], "payment-service", True)
        env.update({
            "payload.paymentId": C.random_hex(rng, m, 12, "pay-"), "payload.orderId": order_id.gather(ok),
            "payload.amount": total[ok], "payload.currency": currency.gather(ok),
            "payload.paymentMethod": method.gather(ok), "payload.status": pl.repeat("PAID", m, eager=True),
            "metadata.provider": pl.repeat("acquirer-a", m, eager=True),
            "metadata.authorizationCode": C.random_hex(rng, m, 6, upper=True),
            "metadata.processingTimeMs": rng.integers(80, 900, size=m).astype(np.int32),
        })
        out["payment.succeeded"] = pl.DataFrame(env)

        # one inventory SALE per line of a paid order
        sold = np.flatnonzero(succeeded[line_order])
        t_sale = t_success[line_order[sold]] + rng.uniform(100, 1_000, len(sold))
        out["inventory.updated"] = self._stock_rows(arr[line_order[sold]], t_sale, products[sold], -qty[sold].astype(np.int64),
                                                    "SALE", order_id.gather(line_order[sold]), None)

        # cancellations: customer while PENDING, system after a failed payment, customer from PAID
        sys_cancel = np.flatnonzero(~cancel_pending & fail_cancel)
        last_fail = (np.cumsum(nfail) - 1)[sys_cancel]
        t_sys = t_fail[last_fail] + rng.uniform(1_000, 10_000, len(sys_cancel)) if len(sys_cancel) else np.zeros(0)
        paid_cancel = np.flatnonzero(succeeded & cancel_paid)
        pend = np.flatnonzero(cancel_pending)
        cancels = []
        for idx, t, reason, previous, refund, actor, with_session in (
            (pend, t_cancel_pending[pend], "CUSTOMER_REQUEST", "PENDING", np.zeros(len(pend)), "CUSTOMER", True),
            (sys_cancel, t_sys, "PAYMENT_FAILED", "PENDING", np.zeros(len(sys_cancel)), "SYSTEM", False),
            (paid_cancel, t_success[paid_cancel] + t_cancel_paid_gap[paid_cancel], "CUSTOMER_REQUEST", "PAID",
             total[paid_cancel], "CUSTOMER", False),
        ):
            m = len(idx)
            env = flow(idx, t, "order-service", with_session)
            env.update({
                "payload.orderId": order_id.gather(idx), "payload.reason": pl.repeat(reason, m, eager=True, dtype=pl.String),
                "payload.previousStatus": pl.repeat(previous, m, eager=True, dtype=pl.String),
                "payload.refundAmount": refund.astype(np.float64), "payload.currency": currency.gather(idx),
                "payload.status": pl.repeat("CANCELED", m, eager=True, dtype=pl.String),
                "metadata.canceledBy": pl.repeat(actor, m, eager=True, dtype=pl.String),
            })
            cancels.append(pl.DataFrame(env))
        out["order.canceled"] = pl.concat(cancels, how="vertical")

        sh = np.flatnonzero(shipped)
        m = len(sh)
        t_ship = t_success[sh] + t_ship_gap[sh]
        tracking = C.random_hex(rng, m, 10, "TRK", upper=True)
        carriers = C.take(_CARRIERS, carrier[sh])
        env = flow(sh, t_ship, "shipping-service", False)
        env.update({
            "payload.orderId": order_id.gather(sh), "payload.carrier": carriers, "payload.trackingNumber": tracking,
            "payload.estimatedDelivery": np.floor(t_ship).astype(np.int64) + 86_400_000,
            "payload.status": pl.repeat("SHIPPED", m, eager=True, dtype=pl.String),
            "metadata.warehouseId": C.padded("wh-", products[line_start[sh]] % 4, 1),
            "metadata.packageCount": (1 + nlines[sh] // 3).astype(np.int32),
        })
        out["order.shipped"] = pl.DataFrame(env)
        t_del = t_ship + t_deliver_gap[sh]
        env = flow(sh, t_del, "shipping-service", False)
        env.update({
            "payload.orderId": order_id.gather(sh), "payload.carrier": carriers, "payload.trackingNumber": tracking,
            "payload.signedBy": C.masked(C.take(_FIRST, u[sh] % len(_FIRST)), signed[sh]),
            "payload.status": pl.repeat("DELIVERED", m, eager=True, dtype=pl.String),
            "metadata.deliveryAttempts": (1 + second_attempt[sh]).astype(np.int32),
            "metadata.proofOfDeliveryUrl": pl.repeat(None, m, dtype=pl.String, eager=True),
        })
        out["order.delivered"] = pl.DataFrame(env)
        return out

    def _stock_rows(self, arr: np.ndarray, t: np.ndarray, p: np.ndarray, delta: np.ndarray, reason: str,
                    order_id: pl.Series | None, batch: pl.Series | None) -> pl.DataFrame:
        n = len(p)
        none = pl.repeat(None, n, dtype=pl.String, eager=True)
        env = self._envelope(n, arr, t, "inventory-service", "eu-west-1")
        env.update({
            "payload.productId": self._product_ids(p), "payload.warehouseId": C.padded("wh-", p % 4, 1),
            "payload.previousStockLevel": np.zeros(n, np.int32), "payload.newStockLevel": np.zeros(n, np.int32),
            "payload.changeReason": pl.repeat(reason, n, eager=True, dtype=pl.String),
            "metadata.orderId": none if order_id is None else order_id,
            "metadata.batchId": none if batch is None else batch,
            "_p": p.astype(np.int64), "_delta": delta.astype(np.int64),
        })
        return pl.DataFrame(env)

    def _restocks(self, arr: np.ndarray, t: np.ndarray) -> pl.DataFrame:
        rng, n = self._rng, len(arr)
        p = rng.integers(self._cfg.products, size=n)
        delta = rng.integers(50, 500, size=n)
        return self._stock_rows(arr, t, p, delta, "RESTOCK", None, C.random_hex(rng, n, 8, "b-"))

    def _health(self, arr: np.ndarray, t: np.ndarray) -> pl.DataFrame:
        rng, n = self._rng, len(arr)
        service = rng.integers(len(_SERVICES), size=n)
        start = rng.random(n) < 0.01
        run = rng.integers(5, 30, size=n)
        incident = _episodes(service, start, run, self._incidents)
        status = np.where(incident, 1 + rng.integers(2, size=n), 0)
        latency = np.round(np.where(incident, rng.uniform(500, 5_000, n), rng.uniform(2, 80, n)), 3)
        errors = np.where(incident, rng.integers(5, 100, size=n), (rng.random(n) < 0.02).astype(np.int64))
        region = service % 3
        zone_lens = np.array([len(z) for z in _ZONES])
        zone = np.floor(rng.random(n) * zone_lens[region]).astype(np.int64)
        instance = rng.integers(3, size=n)
        names = C.take(_SERVICES, service)
        regions = C.take(_REGIONS, region)
        env = self._envelope(n, arr, t, names, regions)
        zones_flat = [r + z for r, zs in zip(_REGIONS, _ZONES) for z in zs]
        zone_base = np.concatenate(([0], np.cumsum(zone_lens)[:-1]))
        env.update({
            "payload.serviceName": names, "payload.status": C.take(("HEALTHY", "DEGRADED", "UNHEALTHY"), status),
            "payload.responseTime": latency, "payload.errorCount": errors.astype(np.int32),
            "payload.checks": C.string_map([("db", C.take(("ok", "timeout"), incident.astype(np.int64))), ("cache", "ok")], n),
            "metadata.instanceId": pl.DataFrame({"s": names, "i": instance}).select(
                pl.concat_str([pl.col("s"), pl.lit("-"), pl.col("i").cast(pl.String)]).alias("s"))["s"],
            "metadata.region": regions, "metadata.availabilityZone": C.take(zones_flat, zone_base[region] + zone),
        })
        return pl.DataFrame(env)

    def _inferences(self, arr: np.ndarray, t: np.ndarray, model: np.ndarray, u: np.ndarray, known: np.ndarray,
                    sessions: np.ndarray) -> pl.DataFrame:
        rng, n = self._rng, len(arr)
        start = rng.random(n) < 0.002
        run = rng.integers(200, 2_000, size=n)
        drift = _episodes(model, start, run, self._drift)
        confidence = np.where(drift, rng.beta(3, 3, n), rng.beta(9, 1.5, n))
        feature = rng.random(n)
        label = rng.integers(2, size=n)
        text = pl.DataFrame({"f": np.round(feature * 10_000).astype(np.int64),
                             "c": np.round(confidence * 10_000).astype(np.int64)}).select(
            *(pl.concat_str([(pl.col(c) // 10_000).cast(pl.String), pl.lit("."),
                             (pl.col(c) % 10_000).cast(pl.String).str.zfill(4)]).alias(c) for c in ("f", "c")))
        users = C.masked(self._user_ids(u), known)
        env = self._envelope(n, arr, t, "ml-gateway", "eu-west-1", None, users,
                             C.masked(C.hex_of(sessions, 16, "s-"), known))
        env.update({
            "payload.modelId": C.take(_MODELS, model), "payload.modelVersion": C.take(_MODEL_VERSIONS, model),
            "payload.input": C.string_map([("feature_a", text["f"]), ("segment", C.take(("A", "B"), u % 2))], n),
            "payload.output": C.string_map([("label", C.take(("yes", "no"), label)), ("score", text["c"])], n),
            "payload.confidence": np.round(confidence, 6),
            "metadata.inferenceTime": np.round(rng.uniform(1, 40, n), 3),
            "metadata.endpoint": C.take([f"/v1/models/{m}:predict" for m in _MODELS], model),
            "metadata.modelType": C.take(_MODEL_TYPES, model),
        })
        return pl.DataFrame(env)

    def _webhooks(self, arr: np.ndarray, t: np.ndarray) -> pl.DataFrame:
        rng, n = self._rng, len(arr)
        source = rng.integers(len(_WEBHOOK_SOURCES), size=n)
        hook_id = C.random_hex(rng, n, 12, "wh-")
        amount = rng.integers(100, 100_000, size=n)
        sources, names = C.take(_WEBHOOK_SOURCES, source), C.take(_WEBHOOK_NAMES, source)
        body = pl.DataFrame({"h": hook_id, "n": names, "a": amount}).select(pl.concat_str([
            pl.lit('{"id": "'), pl.col("h"), pl.lit('", "type": "'), pl.col("n"), pl.lit('", "amount": '),
            pl.col("a").cast(pl.String), pl.lit(', "livemode": false}')]).alias("h"))["h"]
        env = self._envelope(n, arr, t, "webhook-gateway", "eu-west-1")
        env.update({
            "payload.webhookId": hook_id, "payload.source": sources, "payload.eventName": names, "payload.payload": body,
            "metadata.headers": C.string_map([("content-type", "application/json"),
                                              ("user-agent", C.take([f"{s}-hooks/1.0" for s in _WEBHOOK_SOURCES], source))], n),
            "metadata.signature": C.masked(C.random_hex(rng, n, 16, "sha256="), source != 3),
            "metadata.processingTime": np.round(rng.uniform(0.5, 20, n), 3),
        })
        return pl.DataFrame(env)


def _episodes(owners: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
              remaining: list[int] | np.ndarray) -> np.ndarray:
    """Which events fall inside an episode (incident, drift) of their owner (service, model).

    An episode starts at an event whose ``starts`` flag is set while its owner has none running,
    and covers that owner's next ``lengths`` events. ``remaining`` (per owner) carries episodes
    across chunks and is updated in place. Sequential by nature: a small loop per chunk.
    """
    inside = np.zeros(len(owners), dtype=bool)
    for i, (owner, start, length) in enumerate(zip(owners.tolist(), starts.tolist(), lengths.tolist())):
        left = remaining[owner]
        if left == 0 and start:
            left = length
        if left:
            inside[i] = True
            left -= 1
        remaining[owner] = left
    return inside
