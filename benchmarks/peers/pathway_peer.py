"""Pathway peer: ``<pathway venv>/bin/python benchmarks/peers/pathway_peer.py W1j|W2|W3``.

Pathway runs in its own virtualenv (``requirements/pathway.lock``, built by ``make
pathway-venv``; pathway 0.33.0 requires pyarrow<26 and python-dateutil 2.x, the project pins
pyarrow 26.0.1 and has python-dateutil 4.0.0), so this file imports nothing from headwater: only ``peer_env.py``
(standard library) and Pathway. The window sizes are passed in the environment by the harness
(``BENCH_WINDOW_SIZE_MS`` / ``BENCH_WINDOW_GRACE_MS``, from ``headwater.bench.workloads``).

Idiomatic Pathway, JSON input only (Pathway reads Kafka as JSON, raw or plaintext; it has no
Avro reader or writer):

- the source is ``pw.io.kafka.read(format="json", schema=Order, json_field_paths=...)``: the
  envelope's top-level fields plus the payload's ``orderId``, ``totalAmount`` and ``items``
  (JSON Pointers), parsed by Pathway's Rust JSON parser;
- W1j: ``filter`` (``totalAmount > 0`` and a non-empty ``items``), then ``select`` with
  ``itemCount`` (a ``pw.udf``: Pathway's expressions have no length of a JSON array, so this is
  one Python call per order) and ``totalCents = int(totalAmount * 100 + 0.5)`` (Pathway has no
  ``floor``; for the positive amounts that pass validation the cast's truncation is the floor);
- W2: ``groupby(userId).reduce(count=pw.reducers.count())``;
- W3: ``windowby(timestamp, window=pw.temporal.tumbling(60 s), instance=userId,
  behavior=pw.temporal.common_behavior(delay=size + grace))`` reduced to ``count``, ``total``
  (sum) and ``avg`` (mean). The delay holds each window's first output until the operator's time
  (the largest event time it has seen) passes ``window end + grace``, so a window is normally
  emitted once, when it closes, as the others' final results are. There is no ``cutoff``: Pathway
  keeps every window and a record that arrives after its window was emitted updates it (a
  retraction and a new row) instead of being dropped. Pathway's operator time is one maximum over
  all partitions (it has no per-partition stream time, which headwater and Quix close windows
  by), and a backlog of 4 partitions reaches it unevenly (librdkafka hands over a fetched
  partition's messages together; not measured further), so the idiomatic ``exactly_once_behavior(shift=grace)`` (freeze
  and forget a window at end + grace) drops as late the records of whichever partition is
  behind: in a 100,000-event run it emitted 35,633 of the 69,780 windows, 2,360 of them with
  wrong counts. ``BENCH_PATHWAY_W3_BEHAVIOR=exactly-once`` runs that variant;
- every output goes to ``pw.io.kafka.write(format="json", key=userId)``.

Workers: one process with ``PATHWAY_THREADS=1`` per worker count of 1 (the harness sets
``PATHWAY_THREADS`` to the requested workers and runs one process). Pathway's minibatch
(``autocommit_duration_ms``) is the harness's commit interval (0.5 s).

Output semantics: Pathway's Kafka writer emits the table's update stream. Every JSON value
carries ``diff`` (+1 insert, -1 retraction) and ``time`` (Pathway's logical time): W2 emits, per
minibatch and changed user, a retraction of the old count and the new count, in no guaranteed
order within one time. The harness therefore reads Pathway's output as a final state
(``headwater.bench.workloads.final_state``: per (key, row) the sum of diffs, keeping rows whose
sum is positive) before the usual check.

End of a run: Pathway's streaming Kafka reader leaves offset commits to librdkafka's
auto-commit of *consumed* positions, which run ahead of Pathway's processing and output, so the
harness cannot watch the group. The source is read with ``mode="static"`` instead (the same
reader and the same minibatch timer, but it stops at the end offsets it saw when it started);
``pw.run()`` returns once the input is processed and the Kafka writer is flushed, and the
runner prints ``{"event": "done", "t": ...}``, the end instant (as for Bytewax). At that end of
input Pathway also emits the windows that no later event time closed (the delay releases what it
holds when the input ends), so for Pathway W3 is checked against every window
of the input (closed or still open at its end), see ``Expected.windows[...].all_windows``.

Persistence: none by default (Pathway's state and input offsets are not saved; headwater writes
a changelog and commits offsets). ``BENCH_PATHWAY_PERSISTENCE=1`` runs with Pathway's filesystem
persistence under ``BENCH_STATE_DIR``, snapshots every commit interval.

First record: ``first_consumed`` is printed by a ``pw.io.subscribe`` callback on a global count
of the input, i.e. when the first minibatch has gone through the graph: up to one minibatch
(0.5 s) after the first record was read, which favours Pathway by at most that much. The runner
also prints ``{"event": "run_start"}`` just before ``pw.run()`` (a bound the other way; not used
by the harness).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from peer_env import FirstConsumed, PeerEnv  # noqa: E402

import pathway as pw  # noqa: E402


class Order(pw.Schema):
    """The ``order.created`` fields the workloads read (nested ones through JSON Pointers)."""

    eventId: str
    userId: str
    timestamp: int
    orderId: str
    totalAmount: float
    items: pw.Json


FIELD_PATHS = {"orderId": "/data/payload/orderId", "totalAmount": "/data/payload/totalAmount",
               "items": "/data/payload/items"}


@pw.udf(deterministic=True)
def item_count(items: pw.Json) -> int:
    """Number of items of an order (a JSON array)."""
    return len(items)


def _emit(event: str) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.time()}) + "\n")
    sys.stdout.flush()


def build(workload: str, env: PeerEnv) -> None:
    """The graph for ``workload`` (W1j, W2 or W3), from the BENCH_* environment."""
    if env.fmt != "json":
        raise SystemExit("pathway peer: JSON input only (run the suite with --input-format json)")
    kafka = {"bootstrap.servers": env.bootstrap, "group.id": env.group,
             "auto.offset.reset": "earliest"}
    orders = pw.io.kafka.read(kafka, env.input, schema=Order, format="json", mode="static",
                              json_field_paths=FIELD_PATHS,
                              autocommit_duration_ms=int(env.commit_interval_s * 1000),
                              name="orders")
    first = FirstConsumed()
    pw.io.subscribe(orders.reduce(n=pw.reducers.count()),
                    on_change=lambda **_: first())
    out_settings = {"bootstrap.servers": env.bootstrap}
    if workload == "W1j":
        valid = orders.filter((pw.this.totalAmount > 0) & pw.this.items.get(0).is_not_none())
        out = valid.select(
            pw.this.eventId, pw.this.userId, pw.this.orderId, pw.this.totalAmount,
            itemCount=item_count(pw.this.items),
            totalCents=pw.cast(int, pw.this.totalAmount * 100 + 0.5),
        )
    elif workload == "W2":
        out = orders.groupby(pw.this.userId).reduce(pw.this.userId, count=pw.reducers.count())
    elif workload == "W3":
        size = int(os.environ.get("BENCH_WINDOW_SIZE_MS", "60000"))
        grace = int(os.environ.get("BENCH_WINDOW_GRACE_MS", "5000"))
        if os.environ.get("BENCH_PATHWAY_W3_BEHAVIOR", "delay") == "exactly-once":
            behavior = pw.temporal.exactly_once_behavior(shift=grace)
        else:
            behavior = pw.temporal.common_behavior(delay=size + grace)
        out = orders.windowby(
            pw.this.timestamp, window=pw.temporal.tumbling(duration=size),
            instance=pw.this.userId, behavior=behavior,
        ).reduce(
            userId=pw.this._pw_instance, window_start=pw.this._pw_window_start,
            count=pw.reducers.count(), total=pw.reducers.sum(pw.this.totalAmount),
            avg=pw.reducers.avg(pw.this.totalAmount),
        )
    else:
        raise SystemExit(f"pathway peer: unknown workload {workload} (W1j, W2, W3)")
    pw.io.kafka.write(out, out_settings, env.output, format="json", key=out.userId, name="out")


def main(workload: str) -> None:
    env = PeerEnv.load()
    build(workload, env)
    persistence = None
    if os.environ.get("BENCH_PATHWAY_PERSISTENCE") == "1":  # opt-in: state + offsets on disk
        persistence = pw.persistence.Config(
            pw.persistence.Backend.filesystem(os.path.join(env.state_dir, "pathway")),
            snapshot_interval_ms=int(env.commit_interval_s * 1000))
    _emit("run_start")
    pw.run(monitoring_level=pw.MonitoringLevel.NONE, persistence_config=persistence)
    _emit("done")


if __name__ == "__main__":
    main(sys.argv[1])
