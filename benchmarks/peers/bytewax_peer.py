"""Bytewax peer: ``python -m bytewax.run "benchmarks/peers/bytewax_peer.py:flow('W1')"``.

Idiomatic Bytewax: the Kafka operators of ``bytewax.connectors.kafka`` (``kop.input`` /
``kop.deserialize_value`` / ``kop.serialize_value`` / ``kop.output``) with confluent-kafka's
registry-backed ``AvroDeserializer``/``AvroSerializer`` (the serde Bytewax's docs pair with its
Kafka operators), ``op.filter``/``op.map`` for W1, and for W2 ``op.key_on`` + ``op.stateful_map``
(a running count per userId, emitted on every record like the other engines' updates).
2 workers = two ``bytewax.run`` processes of one cluster (``-i``/``-a``); keyed state is
exchanged between them by Bytewax.

The end of a run: Bytewax's Kafka source assigns partitions itself and never commits consumer
group offsets (it keeps offsets in its own recovery store), so the harness cannot watch the
group. With ``BENCH_STOP_AT_END=1`` (throughput runs) the source is built with ``tail=False``:
it stops at each partition's end offset, the dataflow drains, every sink flushes
(``KafkaSink`` flushes its producer per batch and on close) and ``cli_main`` returns; an
``atexit`` hook then prints ``{"event": "done", "t": <epoch s>}``, which the harness takes as
the end instant (the latest over the run's processes; a non-zero exit code fails the run).
Latency runs leave ``tail=True``, get ``{"event": "ready"}`` once the dataflow is built (there is
no group to watch for the assignment) and are stopped with SIGTERM.

W3s (session windows, :func:`sessions`): Bytewax's own ``fold_window`` with a ``SessionWindower``
and an ``EventClock`` on the envelope's ``timestamp``, count/sum/mean per userId; each closed
window's aggregate is joined (``op.join`` keyed by userId + window id) with its
``WindowMetadata`` for the session's bounds. How its semantics map to headwater's
(``SESSIONS["W3s"]``, docs/windows.md), read from bytewax 0.21.1's ``operators/windowing.py``:

- Clock: the window operator is a ``stateful_batch``, so its clock, windower and watermark are
  *per key*, not per partition or per worker. The watermark is the key's largest event time
  minus ``wait_for_system_duration``, plus the system time elapsed since that record was seen;
  a record below it is late (on ``WindowOut.late``). Here the input replays ~130 minutes of
  event time from 2026 in ~1-2 minutes, so the system-time term would make lateness and closing
  depend on how fast the run goes, and ``notify_at`` (a session's close time in event time, in
  the past) would wake every key on every activation. So the clock is configured for pure
  event time: ``now_getter`` returns a constant (the watermark moves with the key's records
  only), ``to_system_utc`` returns None (no wake-ups; closes happen on new records or at the end
  of input), ``wait_for_system_duration`` = the workload's 5 s grace. A key's records are in
  event-time order (one partition, generated in order), so no record is late; the runner still
  writes each late record to the output as ``{"late": true, "t": ...}`` so the harness would see
  any (the check then fails and says how many).
- Gap: Bytewax adds a record to a session when it is within ``gap`` of it *inclusive*
  (``since_close <= gap``; sessions merge when ``open - close <= gap``); headwater's windows
  ``[t, t + gap)`` overlap only when strictly closer than ``gap``. Event times are whole
  milliseconds, so ``SessionWindower(gap = 2 min - 1 ms)`` is exactly headwater's 2-minute rule.
- Bounds: Bytewax's ``open_time``/``close_time`` are the session's first and last event times
  (close inclusive); headwater's session is ``[first, last + gap)``. The output is written in
  headwater's convention: ``window_start = open_time``, ``window_end = close_time + gap``.
- Closing: a session closes when its key's watermark passes ``close_time + gap`` (the key's
  own next record, ~5 s + gap later), and at the end of input (``tail=False``) Bytewax closes
  every window still open. So it emits every session of the input: those headwater's
  per-partition stream time closes plus those still open at the end, which the harness accepts
  only if all of them are there with equal values (``workloads.check_sessions``).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(__file__))

from peer_env import FirstConsumed, PeerEnv, derive_order, order_is_valid  # noqa: E402

import bytewax.connectors.kafka.operators as kop  # noqa: E402
import bytewax.operators as op  # noqa: E402
import bytewax.operators.windowing as win  # noqa: E402
import orjson  # noqa: E402
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: E402
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from confluent_kafka.serialization import Deserializer  # noqa: E402

from headwater.bench.workloads import SESSIONS, W1_SCHEMA_STR, SessionSpec  # noqa: E402
from headwater.schemas.catalog import event_type  # noqa: E402


class JsonDeserializer(Deserializer):
    """JSON values (``--input-format json``)."""

    def __call__(self, value: bytes | None, ctx: object = None) -> object:
        return None if value is None else orjson.loads(value)


def valid(msg: KafkaSourceMessage) -> bool:
    return order_is_valid(msg.value)


def derive(output: str):  # noqa: ANN201
    def mapper(msg: KafkaSourceMessage) -> KafkaSinkMessage:
        return KafkaSinkMessage(msg.key, derive_order(msg.value), topic=output)
    return mapper


def count(n: int | None, _msg: KafkaSourceMessage) -> tuple[int, int]:
    n = (n or 0) + 1
    return n, n


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_FROZEN_NOW = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _event_time(msg: KafkaSourceMessage) -> datetime:
    """The envelope's ``timestamp`` as an aware UTC datetime (Avro: already one; JSON: epoch ms)."""
    ts = msg.value["timestamp"]
    return ts if isinstance(ts, datetime) else _EPOCH + int(ts) * _MS


def _ms(dt: datetime) -> int:
    return (dt - _EPOCH) // _MS


def _frozen_now() -> datetime:
    """The clock's "system time": constant, so the watermark moves with event time only."""
    return _FROZEN_NOW


def _no_wake_up(_close: datetime) -> None:
    """No system-time wake-ups: sessions close on new records of their key or at end of input."""
    return None


def _new_acc() -> list:
    return [0, 0.0]


def _fold(acc: list, msg: KafkaSourceMessage) -> list:
    acc[0] += 1
    acc[1] += msg.value["data"]["payload"]["totalAmount"]
    return acc


def _merge(a: list, b: list) -> list:
    return [a[0] + b[0], a[1] + b[1]]


def sessions(orders: object, spec: SessionSpec, brokers: list[str], output: str) -> None:
    """W3s: :func:`session_records` to the output topic."""
    kop.output("out", session_records(orders, spec), brokers=brokers, topic=output)


def session_records(orders: object, spec: SessionSpec) -> object:
    """Bytewax session windows per userId over decoded order messages, as a stream of
    ``KafkaSinkMessage`` in headwater's convention (see the module docstring):
    ``{window_start, window_end, count, total, avg}`` keyed by userId, plus
    ``{"late": true, "t": ...}`` for any record Bytewax judged late."""
    keyed = op.key_on("by-user", orders, lambda msg: msg.key.decode())
    clock = win.EventClock(_event_time, wait_for_system_duration=spec.grace_ms * _MS,
                           now_getter=_frozen_now, to_system_utc=_no_wake_up)
    windower = win.SessionWindower(gap=spec.gap_ms * _MS - _MS)  # inclusive gap: see docstring
    out = win.fold_window("sessions", keyed, clock, windower, _new_acc, _fold, _merge)
    # a closed window's aggregate and its metadata, matched by (userId, window id)
    down = op.map("down-by-window", out.down, lambda kv: (f"{kv[0]}\x00{kv[1][0]}", (kv[0], kv[1][1])))
    meta = op.map("meta-by-window", out.meta, lambda kv: (f"{kv[0]}\x00{kv[1][0]}", kv[1][1]))
    joined = op.join("with-meta", down, meta)

    def to_record(item: tuple) -> KafkaSinkMessage:
        (user, (n, total)), m = item[1]
        return KafkaSinkMessage(user.encode(), orjson.dumps({
            "window_start": _ms(m.open_time), "window_end": _ms(m.close_time) + spec.gap_ms,
            "count": n, "total": total, "avg": total / n}))

    def late_record(kv: tuple) -> KafkaSinkMessage:
        return KafkaSinkMessage(kv[0].encode(), orjson.dumps(
            {"late": True, "t": _ms(_event_time(kv[1][1]))}))

    return op.merge("records", op.map("to-json", joined, to_record),
                    op.map("late-to-json", out.late, late_record))


def _raise(step_id: str, err: object) -> None:
    raise RuntimeError(f"{step_id}: {err}")


def _report_done() -> None:
    sys.stdout.write(json.dumps({"event": "done", "t": time.time()}) + "\n")
    sys.stdout.flush()


def flow(workload: str) -> Dataflow:
    """The dataflow for ``workload`` (W1, W2 or W3s), configured from the BENCH_* environment."""
    env = PeerEnv.load()
    stop_at_end = os.environ.get("BENCH_STOP_AT_END") == "1"
    if stop_at_end:
        atexit.register(_report_done)
    brokers = [env.bootstrap]
    registry = SchemaRegistryClient({"url": env.registry}) if env.registry else None
    df = Dataflow(f"bench-{workload.lower()}")
    source = kop.input("in", df, brokers=brokers, topics=[env.input], tail=not stop_at_end,
                       batch_size=env.batch_size)
    op.inspect("in-errors", source.errs, _raise)
    first = FirstConsumed()
    raw = op.inspect("first-consumed", source.oks, lambda _step, _msg: first())
    if env.fmt == "avro":
        assert registry is not None
        deserializer: Deserializer = AvroDeserializer(registry, event_type("order.created").schema_str)
    else:
        deserializer = JsonDeserializer()
    decoded = kop.deserialize_value("decode", raw, deserializer)
    op.inspect("decode-errors", decoded.errs, _raise)
    orders = decoded.oks

    if workload == "W1":
        assert registry is not None, "W1 writes Avro through the registry"
        out = op.map("derive", op.filter("validate", orders, valid), derive(env.output))
        encoded = kop.serialize_value("encode", out, AvroSerializer(registry, W1_SCHEMA_STR))
        kop.output("out", encoded, brokers=brokers, topic=env.output)
    elif workload == "W2":
        keyed = op.key_on("by-user", orders, lambda msg: msg.key.decode())
        counts = op.stateful_map("count", keyed, count)
        out = op.map("to-json", counts,
                     lambda kv: KafkaSinkMessage(kv[0].encode(), orjson.dumps({"count": kv[1]})))
        kop.output("out", out, brokers=brokers, topic=env.output)
    elif workload in SESSIONS:
        sessions(orders, SESSIONS[workload], brokers, env.output)
    else:
        raise SystemExit(f"unknown workload {workload}")
    sys.stdout.write(json.dumps({"event": "ready", "t": time.time()}) + "\n")
    sys.stdout.flush()
    return df
