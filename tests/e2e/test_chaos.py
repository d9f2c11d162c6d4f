"""Chaos: exactly-once with two workers while a producer writes throughout and workers are
killed with SIGKILL again and again. Every input must appear exactly once to a read_committed
consumer, per-key counts must equal an independent count, and a killed worker's partitions must
be processing again within 15 seconds (static membership + fencing by transactional.id)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer
from confluent_kafka.admin import AdminClient

from tests.e2e.runtime_support import Inputs, Job, read_topic, wait_for_output

pytestmark = pytest.mark.e2e

KILLS = 4
RECOVERY_BOUND_S = 15.0


class SteadyProducer(threading.Thread):
    """Writes `{id, amount}` records keyed `u<id % 50>` until stopped; remembers what it wrote."""

    def __init__(self, config: dict[str, str], topic: str, per_second: int = 1500) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({**config, "linger.ms": 10, "enable.idempotence": True})
        self.topic, self.per_second = topic, per_second
        self.stop_event = threading.Event()
        self.next_id = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            for _ in range(self.per_second // 10):
                i = self.next_id
                self.producer.produce(self.topic, orjson.dumps({"id": i, "amount": float(i % 7)}),
                                      f"u{i % 50}".encode(), on_delivery=self._check)
                self.next_id += 1
            self.producer.poll(0)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
        assert self.producer.flush(60) == 0

    def _check(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))

    def finish(self) -> Inputs:
        self.stop_event.set()
        self.join(90)
        assert not self.errors, self.errors[:3]
        ids = list(range(self.next_id))
        counts = Counter(f"u{i % 50}" for i in ids)
        totals: dict[str, float] = {}
        for i in ids:
            totals[f"u{i % 50}"] = totals.get(f"u{i % 50}", 0.0) + float(i % 7)
        return Inputs(counts, totals, ids)


def worker_pids(supervisor_pid: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing spawn children, not its helpers)."""
    children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
    pids = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(pid)
    return pids


def wait_for_workers(supervisor_pid: int, count: int, job: Job) -> list[int]:
    """The worker pids once the supervisor runs ``count`` of them (a killed one is restarted)."""
    deadline = time.monotonic() + 60
    while len(pids := worker_pids(supervisor_pid)) != count:
        assert time.monotonic() < deadline, (pids, job.log_tail())
        time.sleep(0.1)
    return pids


def committed_offsets(admin: AdminClient, group: str) -> dict[int, int]:
    request = [ConsumerGroupTopicPartitions(group)]
    result = admin.list_consumer_group_offsets(request)[group].result(30)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def wait_until_every_partition_commits_past(admin, job: Job, floor: dict[int, int]) -> float:
    began = time.monotonic()
    deadline = began + 120
    while time.monotonic() < deadline:
        now = committed_offsets(admin, job.application_id)
        if len(now) == 4 and all(now[p] > floor.get(p, -1) for p in now):
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"partitions did not commit past {floor}\n{job.log_tail()}")


def test_exactly_once_through_repeated_kill_9_with_a_producer_writing(
    new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url
) -> None:
    job = Job(new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url,
              guarantee="exactly-once")
    job.env.update({"HEADWATER_WORKERS": "2", "HEADWATER_RESTART_BACKOFF_MS": "200",
                    "HEADWATER_MAX_RESTARTS": "10"})
    admin = AdminClient(job.config)
    producer = SteadyProducer(job.config, job.input)
    producer.start()
    proc = job.run("--batch-size", "300", "--until-idle", "10", wait=False)
    chooser = random.Random(7)
    recoveries = []
    try:
        echoed = wait_for_output(job.config, job.echo, 1_500, timeout=120)
        for _ in range(KILLS):
            pids = wait_for_workers(proc.pid, 2, job)
            os.kill(chooser.choice(pids), signal.SIGKILL)
            floor = committed_offsets(admin, job.application_id)  # the victim commits no more
            recoveries.append(wait_until_every_partition_commits_past(admin, job, floor))
            echoed = wait_for_output(job.config, job.echo, echoed + 1_500, timeout=120)
    finally:
        expected = producer.finish()
    assert proc.wait(300) == 0, job.log_tail()

    log = job.log.read_text()
    assert log.count("killed by signal 9") == KILLS, job.log_tail()
    ids = sorted(int(m.value().split(b":")[1].rstrip(b"}")) for m in read_topic(job.config, job.echo))
    assert ids == expected.ids  # every input exactly once, as a read_committed consumer sees it
    job.assert_exact(expected)
    print("seconds until every partition committed again after each kill:", recoveries)
    assert max(recoveries) < RECOVERY_BOUND_S, recoveries
