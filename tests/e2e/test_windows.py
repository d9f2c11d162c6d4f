"""Tumbling windows on the real stack, checked against DuckDB SQL over the produced events.

The test writes keyed events with an ``at`` event time (out of order within 400 ms; 4% delayed
by up to 3 s, some within the grace period, some late) to explicit partitions, and the same
events as JSON lines. DuckDB computes, independently of the engine, which records are late
(their window closed at the partition's stream time when they arrive) and the final count and
sum of every window the input closes. Exactly-once runs, with and without a ``kill -9`` in the
middle of a checkpoint, must emit exactly those windows, each once, and exactly those late
records.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pytest
from confluent_kafka import Producer

from tests.e2e.runtime_support import IDLE, Job, kill_group, read_topic

pytestmark = pytest.mark.e2e

WINDOW_MS, GRACE_MS = 1_000, 500
KEYS, PARTITIONS = 40, 4
CHECKPOINT_EVERY = ["--batch-size", "500", "--commit-every-records", "2000"]


def produce_windowed_events(config: dict[str, str], topic: str, n: int, lines: Path,
                            closing: bool = True) -> None:
    """``n`` events ``{id, at, amount}`` keyed ``u<i % KEYS>`` (partition: key index % 4), then
    (``closing``) one event per partition far in the future so every window of the ``n``
    closes; each event also as a JSON line ``{seq, p, key, id, at, amount}`` (seq: production
    order)."""
    rng = random.Random(20261203)
    base = int(time.time() * 1000) - 3_600_000  # recent: outputs carry event time, and a
    # topic's time-based retention would delete records stamped decades ago at once
    producer = Producer({**config, "enable.idempotence": True, "linger.ms": 20})
    rows = []
    for i in range(n):
        at = base + i * 5 - rng.randint(0, 400)
        if rng.random() < 0.04:
            at -= rng.randint(0, 3_000)  # delayed: some within the grace period, some late
        rows.append({"key": f"u{i % KEYS}", "id": i, "at": at, "amount": float(i % 7) + 0.25})
    end = base + n * 5 + 10 * WINDOW_MS
    if closing:
        rows += [{"key": f"u{p}", "id": n + p, "at": end, "amount": 0.0} for p in range(PARTITIONS)]
    with lines.open("wb") as out:
        for seq, row in enumerate(rows):
            p = int(row["key"][1:]) % PARTITIONS
            value = {k: row[k] for k in ("id", "at", "amount")}
            producer.produce(topic, orjson.dumps(value), row["key"].encode(), partition=p)
            out.write(orjson.dumps({"seq": seq, "p": p, **row}) + b"\n")
            if seq % 2000 == 0:
                producer.poll(0)
    assert producer.flush(60) == 0


def expected_from_sql(lines: Path, all_closed: bool = False) -> tuple[Counter, Counter]:
    """(final windows as (key, start, end, n, total) -> 1, late ids -> 1), by DuckDB: the
    windows the input's stream time closes, or (``all_closed``) every window."""
    closed = "TRUE" if all_closed else f"ws + {WINDOW_MS} + {GRACE_MS} <= stream_time"
    db = duckdb.connect()
    db.execute(f"""
        CREATE TABLE e AS
        SELECT *, floor("at" / {WINDOW_MS})::BIGINT * {WINDOW_MS} AS ws,
               max("at") OVER (PARTITION BY p ORDER BY seq ROWS UNBOUNDED PRECEDING) AS observed
        FROM read_json_auto('{lines}')""")
    windows = db.execute(f"""
        SELECT key, ws, ws + {WINDOW_MS} AS we, count(*) AS n, round(sum(amount), 6) AS total
        FROM e JOIN (SELECT p, max("at") AS stream_time FROM e GROUP BY p) USING (p)
        WHERE ws + {WINDOW_MS} + {GRACE_MS} > observed
          AND {closed}
        GROUP BY key, ws""").fetchall()
    late = db.execute(
        f"SELECT id FROM e WHERE ws + {WINDOW_MS} + {GRACE_MS} <= observed").fetchall()
    return Counter(windows), Counter(i for (i,) in late)


def emitted(job: Job) -> tuple[Counter, Counter]:
    windows, late = Counter(), Counter()
    for m in read_topic(job.config, job.output):
        v = orjson.loads(m.value())
        windows[(m.key().decode(), v["window_start"], v["window_end"], v["n"],
                 round(v["total"], 6))] += 1
    for m in read_topic(job.config, job.echo):
        late[orjson.loads(m.value())["id"]] += 1
    return windows, late


@pytest.mark.parametrize("fault", [
    None,
    "checkpoint.after_flush=kill@3",   # kill -9 with the transaction flushed, not committed
    "checkpoint.after_commit=kill@3",  # kill -9 after the commit, local stores not yet written
])
def test_exactly_once_windows_equal_an_independent_sql_computation(
    request, tmp_path, fault
) -> None:
    fx = request.getfixturevalue
    job = Job(fx("new_topic"), fx("unique_name"), tmp_path, fx("kafka_bootstrap"),
              fx("schema_registry_url"), guarantee="exactly-once",
              topology="tests.topologies:windowed_sums")
    job.env.update({"HEADWATER_RESTART_BACKOFF_MS": "200", "HW_TEST_WINDOW": f"{WINDOW_MS}ms",
                    "HW_TEST_GRACE": f"{GRACE_MS}ms"})
    if fault:
        job.env.update({"HEADWATER_FAILPOINTS": fault,
                        "HEADWATER_FAILPOINTS_FIRED": str(tmp_path / "fired")})
    lines = tmp_path / "events.jsonl"
    produce_windowed_events(job.config, job.input, 12_000, lines)
    want_windows, want_late = expected_from_sql(lines)
    assert len(want_windows) > 1_000 and len(want_late) > 100  # the input exercises both

    job.run(*CHECKPOINT_EVERY, *IDLE)

    if fault:
        assert (tmp_path / "fired" / fault.split("=")[0]).exists(), job.log_tail()
    windows, late = emitted(job)
    assert windows == want_windows, (
        f"missing {list((want_windows - windows).items())[:5]}, "
        f"unexpected {list((windows - want_windows).items())[:5]}\n{job.log_tail()}")
    assert late == want_late, job.log_tail()


def test_windows_of_a_quiet_stream_close_after_the_idle_timeout(request, tmp_path) -> None:
    """No record ever passes the last windows' end + grace: only the idle timeout (stream time
    following the wall clock once every partition is read to its end) closes them."""
    fx = request.getfixturevalue
    job = Job(fx("new_topic"), fx("unique_name"), tmp_path, fx("kafka_bootstrap"),
              fx("schema_registry_url"), guarantee="exactly-once",
              topology="tests.topologies:windowed_sums")
    job.env.update({"HW_TEST_WINDOW": f"{WINDOW_MS}ms", "HW_TEST_GRACE": f"{GRACE_MS}ms",
                    "HW_TEST_IDLE_TIMEOUT": "1s"})
    lines = tmp_path / "events.jsonl"
    produce_windowed_events(job.config, job.input, 4_000, lines, closing=False)
    want_windows, want_late = expected_from_sql(lines, all_closed=True)
    still_open, _ = expected_from_sql(lines)
    assert len(want_windows) - len(still_open) >= KEYS  # the last window of every key, at least

    proc = job.run(*CHECKPOINT_EVERY, wait=False)
    try:
        wait_for_committed(job.config, job.output, sum(want_windows.values()))
    finally:
        kill_group(proc, signal.SIGTERM)  # to every process, as systemd's KillMode does
    assert proc.returncode == 0, job.log_tail()
    windows, late = emitted(job)
    assert windows == want_windows, (
        f"missing {list((want_windows - windows).items())[:5]}, "
        f"unexpected {list((windows - want_windows).items())[:5]}\n{job.log_tail()}")
    assert late == want_late, job.log_tail()


def wait_for_committed(config: dict[str, str], topic: str, at_least: int,
                       timeout: float = 120) -> None:
    """Block until a read_committed reader sees ``at_least`` records in ``topic``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(read_topic(config, topic)) >= at_least:
            return
        time.sleep(0.5)
    raise AssertionError(f"{topic}: fewer than {at_least} committed records after {timeout}s")


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_outputs_carry_the_event_time_and_a_future_one_is_stamped_now(
    request, tmp_path, guarantee
) -> None:
    """Kafka 4 rejects record timestamps more than an hour ahead: a record whose event time is
    days ahead is still delivered (stamped with the wall clock; its value keeps the time), and
    does not fail the checkpoint."""
    fx = request.getfixturevalue
    job = Job(fx("new_topic"), fx("unique_name"), tmp_path, fx("kafka_bootstrap"),
              fx("schema_registry_url"), guarantee=guarantee,
              topology="tests.topologies:event_time_echo")
    now = int(time.time() * 1000)
    past, future = now - 3_600_000, now + 3 * 86_400_000
    producer = Producer(job.config)
    for i, at in enumerate([past, future]):
        producer.produce(job.input, orjson.dumps({"id": i, "at": at}), b"k", partition=0)
    assert producer.flush(30) == 0

    job.run(*IDLE)

    out = {orjson.loads(m.value())["id"]: (orjson.loads(m.value())["at"], m.timestamp()[1])
           for m in read_topic(job.config, job.output)}
    assert out[0] == (past, past)
    assert out[1][0] == future and now <= out[1][1] < future, job.log_tail()
