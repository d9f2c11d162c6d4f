"""Tumbling and session windows over generated domain traffic on the real stack, checked against
an independent computation over the generator's JSON-lines file.

``headwater produce`` writes a mix of domain events (Avro through the registry, keyed by userId,
out-of-order and late events on) and the same records, in produce order, as JSON lines. The
engine aggregates ``order.created`` per user in tumbling windows and in sessions, under
exactly-once, with and without a ``kill -9`` in the middle of a checkpoint. All input is written
first and event times lie an hour in the past, so once every partition is read the idle timeout
moves stream time to the wall clock and every window closes.

The expected results come from the file alone: DuckDB SQL for the tumbling windows, and for the
sessions a direct transcription of the rules (per partition, in produce order: stream time = the
largest event time so far; a record's window ``[t, t + gap)`` merges with its key's open
overlapping sessions; late when the merged session already closed). The only fact taken from
Kafka is which partition each key went to (the producer's partitioner).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import orjson
import pytest

from tests.e2e.runtime_support import ROOT, Job, kill_group, read_topic
from tests.e2e.test_windows import wait_for_committed

pytestmark = pytest.mark.e2e

WINDOW_MS, GAP_MS, GRACE_MS = 60_000, 30_000, 5_000
CHECKPOINT_EVERY = ["--batch-size", "200", "--commit-every-records", "600"]


def generate(job: Job, prefix: str, lines: Path) -> str:
    """Produce the domain mix; returns the ``order.created`` topic."""
    start = int(time.time() * 1000) - 2 * 3_600_000
    subprocess.run(
        [sys.executable, "-m", "headwater", "produce", "-n", "30000", "--prefix", prefix,
         "--partitions", "3", "--key", "user-id", "--users", "150", "--seed", "20261203",
         "--start-time", str(start), "--event-rate", "40", "--out-of-order", "0.2",
         "--max-disorder-ms", "8000", "--late", "0.03", "--late-by-ms", "40000",
         "--output", str(lines), "--no-progress"],
        cwd=ROOT, env=job.env_for_cli(), check=True, timeout=300, capture_output=True)
    return f"{prefix}.order.created"


def orders_in_partition_order(lines: Path, topic: str, partition_of: dict[str, int]) -> list:
    """``(partition, key, eventId, event time, amount)`` of the topic's records, produce order."""
    out = []
    for line in lines.open("rb"):
        r = orjson.loads(line)
        if r["topic"] == topic:
            e = r["event"]
            out.append((partition_of[r["key"]], r["key"], e["eventId"], e["timestamp"],
                        e["data"]["payload"]["totalAmount"]))
    return out


def tumbling_from_sql(records: list) -> tuple[Counter, set]:
    db = duckdb.connect()
    db.execute("CREATE TABLE r (seq BIGINT, p INT, key VARCHAR, id VARCHAR, t BIGINT, "
               "amount DOUBLE)")
    db.executemany("INSERT INTO r VALUES (?, ?, ?, ?, ?, ?)",
                   [(i, *rec) for i, rec in enumerate(records)])
    db.execute(f"""CREATE TABLE e AS SELECT *, floor(t / {WINDOW_MS})::BIGINT * {WINDOW_MS} AS ws,
                   max(t) OVER (PARTITION BY p ORDER BY seq ROWS UNBOUNDED PRECEDING) AS observed
                   FROM r""")
    windows = db.execute(f"""
        SELECT key, ws, ws + {WINDOW_MS}, count(*), round(sum(amount), 6) FROM e
        WHERE ws + {WINDOW_MS} + {GRACE_MS} > observed GROUP BY key, ws""").fetchall()
    late = db.execute(
        f"SELECT id FROM e WHERE ws + {WINDOW_MS} + {GRACE_MS} <= observed").fetchall()
    return Counter(windows), {i for (i,) in late}


def sessions_by_rules(records: list) -> tuple[Counter, set]:
    stream_time: dict[int, int] = {}
    open_: dict[str, list] = defaultdict(list)
    late = set()
    for p, key, event_id, t, amount in records:
        now = stream_time[p] = max(stream_time.get(p, t), t)
        mine = [s for s in open_[key]
                if s[1] + GRACE_MS > now and s[0] < t + GAP_MS and t < s[1]]
        start = min([t, *(s[0] for s in mine)])
        end = max([t + GAP_MS, *(s[1] for s in mine)])
        if end + GRACE_MS <= now:
            late.add(event_id)
            continue
        amounts = [amount, *(a for s in mine for a in s[2])]
        open_[key] = [s for s in open_[key] if s not in mine] + [(start, end, amounts)]
    return Counter((k, s, e, len(a), round(sum(a), 6)) for k, ss in open_.items()
                   for s, e, a in ss), late


def emitted(job: Job, topic: str) -> Counter:
    return Counter((m.key().decode(), v["window_start"], v["window_end"], v["n"],
                    round(v["total"], 6))
                   for m in read_topic(job.config, topic) for v in [orjson.loads(m.value())])


@pytest.mark.parametrize("fault", [None, "checkpoint.after_flush=kill@4"])
def test_tumbling_and_session_windows_over_domain_traffic_equal_the_generators_file(
    request, tmp_path, fault
) -> None:
    fx = request.getfixturevalue
    job = Job(fx("new_topic"), fx("unique_name"), tmp_path, fx("kafka_bootstrap"),
              fx("schema_registry_url"), guarantee="exactly-once",
              topology="tests.topologies:domain_windows")
    sessions_topic = fx("new_topic")("sessions", partitions=2)
    lines = tmp_path / "events.jsonl"
    topic = generate(job, fx("unique_name")("dom"), lines)
    partition_of = {m.key().decode(): m.partition() for m in read_topic(job.config, topic)}
    records = orders_in_partition_order(lines, topic, partition_of)
    want_tumbling, late_tumbling = tumbling_from_sql(records)
    want_sessions, late_sessions = sessions_by_rules(records)
    # the input exercises what the test claims: disorder within grace, late records, merging
    assert len(records) > 2_000 and len(late_tumbling) > 20 and len(late_sessions) > 20
    assert sum(want_sessions.values()) > 300 and sum(n for (_, _, _, n, _) in want_sessions) > \
        sum(want_sessions.values())

    job.env.update({"HW_TEST_INPUT": topic, "HW_TEST_SESSIONS": sessions_topic,
                    "HW_TEST_IDLE_TIMEOUT": "1s", "HEADWATER_RESTART_BACKOFF_MS": "200"})
    if fault:
        job.env.update({"HEADWATER_FAILPOINTS": fault,
                        "HEADWATER_FAILPOINTS_FIRED": str(tmp_path / "fired")})
    proc = job.run(*CHECKPOINT_EVERY, wait=False)
    try:
        wait_for_committed(job.config, job.output, sum(want_tumbling.values()), timeout=240)
        wait_for_committed(job.config, sessions_topic, sum(want_sessions.values()), timeout=60)
    finally:
        kill_group(proc, signal.SIGTERM)
    assert proc.returncode == 0, job.log_tail()
    if fault:
        assert (tmp_path / "fired" / fault.split("=")[0]).exists(), job.log_tail()

    for got, want in ((emitted(job, job.output), want_tumbling),
                      (emitted(job, sessions_topic), want_sessions)):
        assert got == want, (f"missing {list((want - got).items())[:5]}, "
                             f"unexpected {list((got - want).items())[:5]}\n{job.log_tail()}")
    late = Counter((v["kind"], v["eventId"]) for m in read_topic(job.config, job.echo)
                   for v in [orjson.loads(m.value())])
    assert late == Counter([("tumbling", i) for i in late_tumbling]
                           + [("session", i) for i in late_sessions]), job.log_tail()
