"""What each engine workload computes, independently of any engine, and how outputs are checked.

Input: ``order.created`` events (the catalog schema), keyed by ``userId``.

- W0: consume + decode only (no output).
- W1: keep orders with ``totalAmount > 0`` and a non-empty ``items``; emit, Avro
  (:data:`W1_SCHEMA`), ``eventId, userId, orderId, totalAmount, itemCount,
  totalCents = floor(totalAmount * 100 + 0.5)``; record key unchanged.
- W1j: W1 with JSON output (the same fields as a JSON object), for engines that have no Avro
  writer (Pathway); every engine runs it the same way, so it compares like with like.
- W2: count per record key (the userId); emit JSON ``{"count": n}`` keyed by the userId (updates;
  the last one per key is the final count).
- W3: per userId, tumbling 1-minute windows (5 s grace) in event time (the envelope's
  ``timestamp``): count, sum and mean of ``totalAmount``; final results only, JSON keyed by userId.
- W3h: W3 over hopping windows, 5 minutes advancing by 1 minute.
- W3s: W3 over session windows per userId, gap 2 minutes (:data:`SESSIONS`), 5 s grace; each
  output record also holds ``window_end`` (last event time + gap), which is checked too.

Windows close per input partition when its stream time (max event time read) passes end + grace;
the expected windows are those the whole input closes (the input is in event-time order per
partition, so no record is late).

The join workloads read their own inputs (``headwater.bench.join_inputs``: two topics each, from
one pass of the generator, keyed by the join key, co-partitioned):

- W4: interval join of ``order.created`` with ``payment.succeeded`` by ``correlationId``, inner,
  a payment within [0, 10 min] of its order's event time (:data:`INTERVAL_JOINS`); one JSON row
  per matched pair ``{orderId, totalAmount, paymentId, amount}`` keyed by the correlationId.
- W4t: stream-table enrichment: every order (left join) with its user's profile from the
  ``user.registered`` events keyed by userId (a compacted topic); JSON ``{orderId, userId,
  totalAmount, email, firstName, lastName, country}`` (profile fields null when the user is
  unknown) keyed by the userId.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

WORKLOADS = ("W0", "W1", "W1j", "W2", "W3", "W3h", "W3s", "W4", "W4t")
#: Workloads a plain ``headwater bench engine`` runs. Opt-in (``--workloads W1j,W4,W4t``): W1j
#: (for engines without an Avro writer), and the join workloads W4/W4t, which pre-load inputs of
#: their own and whose Quix Streams runs are slow (see docs/benchmarks.md).
DEFAULT_WORKLOADS = ("W0", "W1", "W2", "W3", "W3h", "W3s")
WORKLOAD_TITLES = {
    "W0": "ceiling: batch consume + decode only",
    "W1": "stateless: decode -> validate -> map -> Avro to_topic",
    "W1j": "stateless: decode -> validate -> map -> JSON to_topic",
    "W2": "stateful: count per key",
    "W3": "tumbling 1 min windows: count, sum, mean per key",
    "W3h": "hopping 5 min / 1 min windows: count, sum, mean per key",
    "W3s": "session windows, 2 min gap: count, sum, mean per key",
    "W4": "interval join: order.created x payment.succeeded by correlationId, [0, 10 min]",
    "W4t": "stream-table join: orders enriched with the user's profile (users table)",
}


@dataclass(frozen=True)
class WindowSpec:
    """A windowed workload's windows (milliseconds)."""

    size_ms: int
    advance_ms: int
    grace_ms: int = 5_000

    def starts(self, t: int) -> range:
        """Starts of the windows ``[start, start + size)`` that contain event time ``t``."""
        last = t - t % self.advance_ms
        first = last - self.size_ms + self.advance_ms
        return range(first, last + 1, self.advance_ms)


WINDOWED = {"W3": WindowSpec(60_000, 60_000), "W3h": WindowSpec(300_000, 60_000)}


@dataclass(frozen=True)
class SessionSpec:
    """A session workload's windows (milliseconds): per key, a record at ``t`` opens
    ``[t, t + gap)`` and overlapping windows merge (headwater's rules, docs/windows.md)."""

    gap_ms: int
    grace_ms: int = 5_000


#: W3s's gap: 2 minutes. On the bench input (generator seed 1, 10,000 users; measured on the
#: first 200,000 events of ``kafka_io.order_events``) a user's inter-arrival times in event time
#: have a median of 50 s (p10 7.5 s, p90 169 s, p99 339 s), so with a 2-minute gap ~81% of a
#: user's orders continue the current session and a session holds ~4 orders on average (1 minute:
#: ~2, too close to one order per session to exercise merging; 5 minutes: ~13, and ~98% of
#: orders join, so sessions rarely end). Sessions then end throughout the run and many hold
#: several records, which is what the benchmark is meant to exercise.
SESSIONS = {"W3s": SessionSpec(120_000)}

W1_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "ValidOrder", "namespace": "io.headwater.bench",
    "doc": "W1 output: a validated order.created event with derived columns.",
    "fields": [
        {"name": "eventId", "type": "string"},
        {"name": "userId", "type": ["null", "string"], "default": None},
        {"name": "orderId", "type": "string"},
        {"name": "totalAmount", "type": "double"},
        {"name": "itemCount", "type": "int"},
        {"name": "totalCents", "type": "long"},
    ],
}
W1_SCHEMA_STR = json.dumps(W1_SCHEMA, separators=(",", ":"))


def total_cents(amount: float) -> int:
    """The W1 derived column (same float operations as the Polars expression)."""
    return int(math.floor(amount * 100 + 0.5))


def w1_row(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """W1 for one decoded event: the output record, or None when validation drops it."""
    payload = event["data"]["payload"]
    if not (payload["totalAmount"] > 0 and len(payload["items"]) > 0):
        return None
    return {
        "eventId": str(event["eventId"]), "userId": event["userId"], "orderId": payload["orderId"],
        "totalAmount": payload["totalAmount"], "itemCount": len(payload["items"]),
        "totalCents": total_cents(payload["totalAmount"]),
    }


@dataclass
class _Windows:
    """The windowed results of one workload, built record by record in partition order."""

    spec: WindowSpec
    open: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # -> [n, sum]
    closed: dict[tuple[str, int], tuple[int, float, float]] = field(default_factory=dict)
    stream_time: dict[int, int] = field(default_factory=dict)  # per partition
    late: int = 0

    def add(self, partition: int, key: str, t: int, amount: float) -> None:
        observed = max(self.stream_time.get(partition, t), t)
        self.stream_time[partition] = observed
        for start in self.spec.starts(t):
            if start + self.spec.size_ms + self.spec.grace_ms <= observed:
                self.late += 1
                continue
            acc = self.open.setdefault((key, start), [0, 0.0])
            acc[0] += 1
            acc[1] += amount

    def finish(self, partition_of_key: Mapping[str, int]) -> None:
        """Close the windows the final stream time of their key's partition closes."""
        for (key, start), (n, total) in self.open.items():
            end = start + self.spec.size_ms
            if end + self.spec.grace_ms <= self.stream_time[partition_of_key[key]]:
                self.closed[(key, start)] = (n, total, total / n)

    @property
    def all_windows(self) -> dict[tuple[str, int], tuple[int, float, float]]:
        """Every window of the input, closed or still open at its end, with its final count, sum
        and mean: what an engine that closes all windows when its input ends emits (Pathway in
        the suite's static-mode runs)."""
        return {k: (n, total, total / n) for k, (n, total) in self.open.items()}


@dataclass
class _Sessions:
    """The session windows of one workload, built record by record in partition order with
    headwater's rules (docs/windows.md): a record at ``t`` first lets its partition's stream
    time close the key's sessions with ``end + grace <= stream time``, then merges with every
    open session of its key overlapping ``[t, t + gap)``; the merged session is late (its
    records counted in ``late``, not aggregated) when ``end + grace <= stream time``."""

    spec: SessionSpec
    open: dict[str, list[list[Any]]] = field(default_factory=dict)  # key -> [[start, end, n, sum]]
    closed: dict[tuple[str, int], tuple[int, float, float, int]] = field(default_factory=dict)
    #: sessions still open when the input ends (what engines that flush at the end also emit)
    still_open: dict[tuple[str, int], tuple[int, float, float, int]] = field(default_factory=dict)
    stream_time: dict[int, int] = field(default_factory=dict)  # per partition
    late: int = 0

    def add(self, partition: int, key: str, t: int, amount: float) -> None:
        observed = max(self.stream_time.get(partition, t), t)
        self.stream_time[partition] = observed
        gap, grace = self.spec.gap_ms, self.spec.grace_ms
        sessions = self.open.setdefault(key, [])
        keep: list[list[Any]] = []
        for s in sessions:
            if s[1] + grace <= observed:
                self.closed[(key, s[0])] = (s[2], s[3], s[3] / s[2], s[1])
            else:
                keep.append(s)
        merged = [t, t + gap, 1, amount]
        rest: list[list[Any]] = []
        for s in keep:
            if s[0] < t + gap and s[1] > t:  # [s0, s1) overlaps [t, t + gap)
                merged = [min(merged[0], s[0]), max(merged[1], s[1]), merged[2] + s[2], merged[3] + s[3]]
            else:
                rest.append(s)
        if merged[1] + grace <= observed:
            self.late += 1
            rest = keep
        else:
            rest.append(merged)
        if rest:
            self.open[key] = rest
        else:
            del self.open[key]

    def finish(self, partition_of_key: Mapping[str, int]) -> None:
        """Split the sessions left open into those the final stream time of their key's
        partition closes and those still open at the end of the input."""
        for key, sessions in self.open.items():
            time = self.stream_time[partition_of_key[key]]
            for start, end, n, total in sessions:
                into = self.closed if end + self.spec.grace_ms <= time else self.still_open
                into[(key, start)] = (n, total, total / n, end)


@dataclass
class Expected:
    """Results computed by the harness from the input records themselves."""

    events: int = 0
    w1: dict[str, tuple] = field(default_factory=dict)  # eventId -> (orderId, itemCount, totalCents)
    w2: Counter = field(default_factory=Counter)  # key -> count
    windows: dict[str, _Windows] = field(
        default_factory=lambda: {w: _Windows(spec) for w, spec in WINDOWED.items()})
    partition_of_key: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, _Sessions] = field(
        default_factory=lambda: {w: _Sessions(spec) for w, spec in SESSIONS.items()})

    def add(self, key: str, event: Mapping[str, Any], partition: int = 0) -> None:
        """Account for one input record (records of a partition in offset order)."""
        self.events += 1
        self.w2[key] += 1
        row = w1_row(event)
        if row is not None:
            self.w1[row["eventId"]] = (row["orderId"], row["itemCount"], row["totalCents"])
        self.partition_of_key[key] = partition
        t = event_time_ms(event["timestamp"])
        amount = float(event["data"]["payload"]["totalAmount"])
        for windows in self.windows.values():
            windows.add(partition, key, t, amount)
        for sessions in self.sessions.values():
            sessions.add(partition, key, t, amount)

    def finish(self) -> None:
        """After the last record: close the windows the input's stream time closes."""
        for windows in self.windows.values():
            windows.finish(self.partition_of_key)
        for sessions in self.sessions.values():
            sessions.finish(self.partition_of_key)


def event_time_ms(value: Any) -> int:
    """The envelope timestamp as epoch ms (fastavro decodes timestamp-millis as a datetime)."""
    return value if isinstance(value, int) else int(round(value.timestamp() * 1000))


def window_view(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[tuple[str, int], tuple]:
    """Windowed output (key, JSON value) as (key, window start) -> (count, sum, mean); the value
    holds ``window_start`` (headwater) or ``start`` (Quix) and ``count``, ``total``, ``avg``."""
    out: dict[tuple[str, int], tuple] = {}
    for key, value in records:
        if key is None or value is None:
            continue
        v = orjson.loads(value)
        start = v["window_start"] if "window_start" in v else v["start"]
        out[(key.decode(), int(start))] = (int(v["count"]), float(v["total"]), float(v["avg"]))
    return out


def w1_view(records: Iterable[dict[str, Any]]) -> dict[str, tuple]:
    """Decoded W1 output records as eventId -> (orderId, itemCount, totalCents)."""
    return {r["eventId"]: (r["orderId"], r["itemCount"], r["totalCents"]) for r in records}


def w1_json_view(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, tuple]:
    """W1j output (key, JSON value) records as eventId -> (orderId, itemCount, totalCents)."""
    return w1_view(orjson.loads(v) for _, v in records if v)


def final_state(records: Iterable[tuple[bytes | None, bytes | None]]) -> list[tuple[bytes | None, bytes]]:
    """An update stream's final state, for engines whose output carries ``diff`` (Pathway).

    Each JSON value is a row plus ``diff`` (+1 insert, -1 retraction) and ``time``. The rows
    (without those two fields) are summed by (key, row) over the whole output; rows whose sum is
    positive are the final state, returned once each as (key, JSON row), in first-seen order.
    Retractions and insertions of one logical time may come in any order; this does not depend
    on it. Values without ``diff`` count as inserts.
    """
    net: dict[tuple[bytes | None, bytes], int] = {}
    for key, value in records:
        if value is None:
            continue
        row = orjson.loads(value)
        diff = int(row.pop("diff", 1))
        row.pop("time", None)
        ident = (key, orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
        net[ident] = net.get(ident, 0) + diff
    return [ident for ident, n in net.items() for _ in range(n)]


def w2_view(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, int]:
    """W2 output (key, JSON value) records as key -> last count."""
    out: dict[str, int] = {}
    for key, value in records:
        if key is not None and value is not None:
            out[key.decode()] = int(orjson.loads(value)["count"])
    return out


def _same(workload: str, got: Any, want: Any) -> bool:
    if workload not in WINDOWED:
        return bool(got == want)
    return got[0] == want[0] and all(math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-6)
                                     for g, w in zip(got[1:], want[1:]))


def check(workload: str, view: Mapping[Any, Any], expected: Expected,
          windows_at_end: bool = False) -> tuple[bool, str]:
    """Whether an output view equals the expected result (window sums and means to 1e-9, as
    engines add in different orders); a short reason when it does not. ``windows_at_end``: the
    engine closes every window when its input ends, so all the input's windows are expected,
    not only those its stream time closes."""
    want: Mapping[Any, Any]
    if workload in ("W1", "W1j"):
        want = expected.w1
    elif workload in WINDOWED:
        windows = expected.windows[workload]
        want = windows.all_windows if windows_at_end else windows.closed
    else:
        want = dict(expected.w2)
    differ = sum(1 for k in set(want) & set(view) if not _same(workload, view[k], want[k]))
    if set(view) == set(want) and not differ:
        return True, ""
    missing = len(set(want) - set(view))
    extra = len(set(view) - set(want))
    return False, f"{len(view)} keys vs {len(want)} expected: {missing} missing, {extra} extra, {differ} differ"


@dataclass
class SessionView:
    """A session workload's output: (key, window_start) -> (count, sum, mean, window_end), and
    how many input records the engine reported late (records whose JSON value holds
    ``"late": true``; the Bytewax peer writes one per record its window operator put on its
    late stream)."""

    sessions: dict[tuple[str, int], tuple[int, float, float, int]] = field(default_factory=dict)
    late: int = 0


def session_view(records: Iterable[tuple[bytes | None, bytes | None]]) -> SessionView:
    """Session output (key, JSON value ``{window_start, window_end, count, total, avg}``, all
    engines in headwater's convention: ``window_end`` = last event time + gap) as a
    :class:`SessionView`."""
    view = SessionView()
    for key, value in records:
        if key is None or value is None:
            continue
        v = orjson.loads(value)
        if v.get("late"):
            view.late += 1
            continue
        view.sessions[(key.decode(), int(v["window_start"]))] = (
            int(v["count"]), float(v["total"]), float(v["avg"]), int(v["window_end"]))
    return view


def _same_session(got: tuple, want: tuple) -> bool:
    return got[0] == want[0] and got[3] == want[3] and all(
        math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-6) for g, w in zip(got[1:3], want[1:3]))


def check_sessions(workload: str, view: SessionView, expected: Expected) -> tuple[bool, str]:
    """Whether a session output equals the sessions the input closes (count and window end
    exact, sum and mean to 1e-9), optionally plus *every* session still open at the end of the
    input with its values so far (an engine that closes all sessions when its input ends:
    Bytewax); a short note when it agrees that way, a reason when it does not. Records the
    engine reported late fail the check (none is late on this input)."""
    sessions = expected.sessions[workload]
    closed, still_open = sessions.closed, sessions.still_open
    got = view.sessions
    extra_keys = set(got) - set(closed)
    with_open = bool(extra_keys) and extra_keys <= set(still_open)
    want = {**closed, **still_open} if with_open else closed
    differ = sum(1 for k in set(want) & set(got) if not _same_session(got[k], want[k]))
    if set(got) == set(want) and not differ and not view.late:
        note = (f"{len(closed):,} closed sessions plus all {len(still_open):,} still open at the "
                "end of the input (emitted when the input ended)") if with_open else ""
        return True, note
    missing = len(set(want) - set(got))
    extra = len(set(got) - set(want))
    reason = (f"{len(got)} sessions vs {len(want)} expected"
              f"{' (closed + open at end)' if with_open else ''}: {missing} missing, {extra} extra, "
              f"{differ} differ")
    if view.late:
        reason += f"; the engine reported {view.late:,} input records late (not aggregated)"
    return False, reason


# --- W4 / W4t: joins -------------------------------------------------------------------------

#: The join workloads; they read the inputs of ``headwater.bench.join_inputs``, not the orders
#: topic the other workloads share.
JOINS = ("W4", "W4t")


@dataclass(frozen=True)
class IntervalJoinSpec:
    """An interval join's bounds (milliseconds): a right record at ``tr`` matches a left record
    at ``tl`` when ``tl - before_ms <= tr <= tl + after_ms`` (both ends inclusive)."""

    before_ms: int = 0
    after_ms: int = 600_000
    grace_ms: int = 0


#: W4: payments within [0, 10 min] after the order (the generator pays 0.5 s to ~1 minute after
#: the order, so every order.created whose payment.succeeded is in the input matches it), with a
#: 10-minute grace: the two topics are read side by side, and the batches of one may move the
#: stream time ahead of the other's records (headwater drops a record as late once stream time
#: passes its bound + grace; see docs/benchmarks.md). The grace does not change the pairs.
INTERVAL_JOINS = {"W4": IntervalJoinSpec(grace_ms=600_000)}

#: The user profile fields W4t adds to each order (from ``user.registered``'s payload).
PROFILE_FIELDS = ("email", "firstName", "lastName", "country")
#: Output fields of the join workloads, in the order of the checked tuples.
JOIN_OUTPUT_FIELDS = {
    "W4": ("orderId", "totalAmount", "paymentId", "amount"),
    "W4t": ("orderId", "userId", "totalAmount", *PROFILE_FIELDS),
}


@dataclass(frozen=True)
class Timed:
    """One join-input record as the expected results need it: its join key, event time (ms)
    and the output fields it contributes."""

    key: str
    t: int
    fields: tuple


def order_side(event: Mapping[str, Any], key_field: str) -> Timed:
    """An ``order.created`` event as the left side of W4 (``key_field`` correlationId) or W4t
    (userId): (orderId, totalAmount) for W4, (orderId, userId, totalAmount) for W4t."""
    payload = event["data"]["payload"]
    fields = ((payload["orderId"], float(payload["totalAmount"])) if key_field == "correlationId"
              else (payload["orderId"], event["userId"], float(payload["totalAmount"])))
    return Timed(event[key_field], event_time_ms(event["timestamp"]), fields)


def payment_side(event: Mapping[str, Any]) -> Timed:
    """A ``payment.succeeded`` event as W4's right side: (paymentId, amount)."""
    payload = event["data"]["payload"]
    return Timed(event["correlationId"], event_time_ms(event["timestamp"]),
                 (payload["paymentId"], float(payload["amount"])))


def user_side(event: Mapping[str, Any]) -> Timed:
    """A ``user.registered`` event as W4t's table side: the profile fields."""
    payload = event["data"]["payload"]
    return Timed(event["userId"], event_time_ms(event["timestamp"]),
                 tuple(payload.get(f) for f in PROFILE_FIELDS))


@dataclass
class JoinExpected:
    """A join workload's expected output as a multiset of output tuples
    (:data:`JOIN_OUTPUT_FIELDS` order), plus facts about the input worth reporting."""

    workload: str
    left: int = 0
    right: int = 0
    rows: Counter = field(default_factory=Counter)
    #: W4t: orders whose as-of-event-time profile (what Quix's ``join_asof`` looks up) differs
    #: from the user's latest profile in the whole table (what a table read to its end first
    #: gives); 0 on the generated input (one registration per user, before the user's orders),
    #: so the two semantics must agree on it.
    asof_differs: int = 0


def interval_join(left: Iterable[Timed], right: Iterable[Timed], spec: IntervalJoinSpec,
                  workload: str = "W4") -> JoinExpected:
    """Inner interval join: every (left, right) pair with equal keys and
    ``tl - before <= tr <= tl + after``; one output tuple per pair (left fields + right fields)."""
    by_key: dict[str, list[Timed]] = defaultdict(list)
    out = JoinExpected(workload)
    for r in right:
        by_key[r.key].append(r)
        out.right += 1
    for lrec in left:
        out.left += 1
        for r in by_key.get(lrec.key, ()):
            if lrec.t - spec.before_ms <= r.t <= lrec.t + spec.after_ms:
                out.rows[lrec.fields + r.fields] += 1
    return out


def enrich(left: Iterable[Timed], table: Iterable[Timed], workload: str = "W4t") -> JoinExpected:
    """Left stream-table join: every left record with the table value of its key as of its own
    event time (the latest table record with ``t <= tl``; ties: the later one in the table's
    order), nulls when there is none."""
    versions: dict[str, list[Timed]] = defaultdict(list)
    out = JoinExpected(workload)
    for rec in table:
        versions[rec.key].append(rec)
        out.right += 1
    for recs in versions.values():
        recs.sort(key=lambda r: r.t)  # stable: equal times keep the table's order
    nulls = (None,) * len(PROFILE_FIELDS)
    for lrec in left:
        out.left += 1
        recs = versions.get(lrec.key, [])
        asof = next((r for r in reversed(recs) if r.t <= lrec.t), None)
        profile = asof.fields if asof else nulls
        if recs and recs[-1].fields != profile:
            out.asof_differs += 1
        out.rows[lrec.fields + profile] += 1
    return out


def join_view(workload: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> Counter:
    """A join workload's JSON output as a multiset of tuples of :data:`JOIN_OUTPUT_FIELDS`
    (amounts as floats; missing fields as None)."""
    names = JOIN_OUTPUT_FIELDS[workload]
    floats = {"totalAmount", "amount"}
    out: Counter = Counter()
    for _key, value in records:
        if value is None:
            continue
        v = orjson.loads(value)
        out[tuple(float(v[n]) if n in floats and v.get(n) is not None else v.get(n)
                  for n in names)] += 1
    return out


def checksum(rows: Counter) -> str:
    """An order-independent digest of a multiset of output tuples (12 hex digits), to compare
    engines' outputs at a glance in the result notes."""
    digest = hashlib.sha256()
    for row, n in sorted(rows.items(), key=lambda item: repr(item[0])):
        digest.update(f"{row!r}x{n}\n".encode())
    return digest.hexdigest()[:12]


def check_join(view: Counter, expected: JoinExpected) -> tuple[bool, str]:
    """Whether a join output equals the expected multiset exactly; a note with the row count and
    checksum either way (plus what is missing or extra when it differs)."""
    got, want = view, expected.rows
    n_got, n_want = sum(got.values()), sum(want.values())
    note = f"{n_got:,} rows, checksum {checksum(got)}"
    if got == want:
        return True, note
    missing = sum((want - got).values())
    extra = sum((got - want).values())
    dupes = sum(n - 1 for n in got.values() if n > 1)
    return False, (f"{note}; expected {n_want:,} rows, checksum {checksum(want)}: {missing:,} "
                   f"missing, {extra:,} extra ({dupes:,} duplicates)")
