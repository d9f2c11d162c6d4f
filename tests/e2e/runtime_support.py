"""Helpers for end-to-end runtime tests: produce inputs, run `headwater run`, read outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from headwater.connectors.topic_reader import read_to_end

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Inputs:
    """What was produced, for computing expected results independently of the engine."""

    counts: Counter
    totals: dict[str, float]
    ids: list[int]


def produce_events(
    config: dict[str, str], topic: str, n: int, keys: int = 50, start_id: int = 0
) -> Inputs:
    """`n` JSON events {id, amount} keyed by `u<i % keys>`; returns the expected aggregates."""
    producer = Producer({**config, "linger.ms": 20})
    counts: Counter = Counter()
    totals: dict[str, float] = {}
    ids = []
    for i in range(start_id, start_id + n):
        key = f"u{i % keys}"
        amount = float(i % 7) + 0.25
        counts[key] += 1
        totals[key] = totals.get(key, 0.0) + amount
        ids.append(i)
        producer.produce(topic, orjson.dumps({"id": i, "amount": amount}), key.encode())
        if i % 2000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return Inputs(counts, totals, ids)


class EventFeeder:
    """Keeps producing `produce_events`-style events into `topic` from a background thread.

    Starts at once and writes `chunk` events every `pause_s` until `stop`, so a topic being
    processed always has input still arriving: an engine stopped meanwhile stops mid-stream.
    """

    def __init__(self, config: dict[str, str], topic: str, keys: int = 50, chunk: int = 200,
                 pause_s: float = 0.05) -> None:
        self._producer = Producer({**config, "linger.ms": 20})
        self._topic, self._keys, self._chunk, self._pause_s = topic, keys, chunk, pause_s
        self._inputs = Inputs(Counter(), {}, [])
        self._errors: list = []
        self._more = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-feeder", daemon=True)
        self._thread.start()

    def __enter__(self) -> EventFeeder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():  # the test failed before `stop`: never leave it producing
            self._more = 0
            self._stopping.set()
            self._thread.join(120)

    def stop(self, more: int = 0) -> Inputs:
        """Produce `more` further events, stop, wait for every delivery; all that was produced."""
        self._more = more
        self._stopping.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the feeder did not stop"
        assert self._producer.flush(60) == 0 and not self._errors, self._errors[:3]
        return self._inputs

    def _run(self) -> None:
        while True:
            if self._stopping.is_set():
                n = min(self._chunk, self._more)
                self._more -= n
                if n == 0:
                    return
            else:
                n = self._chunk
            for _ in range(n):
                self._produce_next()
            self._producer.poll(0)
            if not self._stopping.is_set():
                time.sleep(self._pause_s)

    def _produce_next(self) -> None:
        i = len(self._inputs.ids)
        key = f"u{i % self._keys}"
        amount = float(i % 7) + 0.25
        self._producer.produce(self._topic, orjson.dumps({"id": i, "amount": amount}), key.encode(),
                               on_delivery=self._delivered)
        self._inputs.counts[key] += 1
        self._inputs.totals[key] = self._inputs.totals.get(key, 0.0) + amount
        self._inputs.ids.append(i)

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self._errors.append(err)


def merge(a: Inputs, b: Inputs) -> Inputs:
    counts = a.counts + b.counts
    totals = {k: a.totals.get(k, 0.0) + b.totals.get(k, 0.0) for k in counts}
    return Inputs(counts, totals, a.ids + b.ids)


def read_topic(config: dict[str, str], topic: str, committed_only: bool = True) -> list:
    """Every record currently in `topic` (all partitions), read to the end of each.

    Under read_committed the end is the last stable offset, so an open transaction would hold it
    back: the engine has stopped (or been killed and its transaction aborted) before we read.
    """
    return [m for batch in read_to_end(config, [topic], committed_only=committed_only) for m in batch]


def latest_by_key(records: Iterable) -> dict[str, dict]:
    """The last JSON value per key (a changelog-style view of update streams)."""
    return {m.key().decode(): orjson.loads(m.value()) for m in records}


def run_headwater(
    args: list[str], env: dict[str, str], log: Path, wait: bool = True, timeout: float = 180
) -> subprocess.Popen:
    """Start `headwater run ...` (in its own process group); optionally wait for it."""
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "headwater", "run", *args],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if wait:
        proc.wait(timeout)
    return proc


def kill_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the supervisor and all its workers (kill -9 semantics with SIGKILL)."""
    os.killpg(proc.pid, sig)
    proc.wait(60)


def wait_for_output(config: dict[str, str], topic: str, at_least: int, timeout: float = 90) -> int:
    """Block until `topic` holds at least `at_least` records (any isolation)."""
    deadline = time.monotonic() + timeout
    consumer = Consumer({**config, "group.id": f"w-{uuid.uuid4().hex[:8]}",
                         "isolation.level": "read_uncommitted"})  # open transactions count
    try:
        while time.monotonic() < deadline:
            try:
                parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                total = sum(
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in parts
                )
            except KafkaException as exc:  # e.g. a leader moving: ask again, not a result
                if not exc.args[0].retriable() and exc.args[0].code() not in _TRANSIENT:
                    raise
                total = -1
            if total >= at_least:
                return total
            time.sleep(0.2)
    finally:
        consumer.close()
    raise AssertionError(f"{topic} did not reach {at_least} records in {timeout}s")


_TRANSIENT = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT}

IDLE = ["--until-idle", "4"]


class Job:
    """One test's topics, settings and log for a topology of tests/topologies.py."""

    def __init__(self, new_topic: Callable[..., str], unique_name: Callable[[str], str],
                 tmp_path: Path, kafka_bootstrap: str, schema_registry_url: str,
                 guarantee: str = "at-least-once",
                 topology: str = "tests.topologies:count_per_key") -> None:
        self.topology = topology
        self.application_id = unique_name("app")
        self.input = new_topic("in", partitions=4)
        self.output = new_topic("out", partitions=2)
        self.echo = new_topic("echo", partitions=2)
        self.state_dir = tmp_path / "state"
        self.log = tmp_path / "headwater.log"
        self.config = {"bootstrap.servers": kafka_bootstrap}
        self.env = {
            "HEADWATER_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "HEADWATER_SCHEMA_REGISTRY_URL": schema_registry_url,
            "HEADWATER_APPLICATION_ID": self.application_id,
            "HEADWATER_STATE_DIR": str(self.state_dir),
            "HEADWATER_COMMIT_INTERVAL_MS": "200",
            "HEADWATER_SESSION_TIMEOUT_MS": "8000",
            "HEADWATER_PROCESSING_GUARANTEE": guarantee,
            "HW_TEST_INPUT": self.input,
            "HW_TEST_OUTPUT": self.output,
            "HW_TEST_ECHO": self.echo,
        }

    def run(self, *args: str, wait: bool = True, env: dict[str, str] | None = None):
        proc = run_headwater([self.topology, *args], {**self.env, **(env or {})}, self.log, wait)
        if wait:
            assert proc.returncode == 0, self.log.read_text()[-3000:]
        return proc

    def assert_exact(self, expected: Inputs) -> None:
        final = latest_by_key(read_topic(self.config, self.output))
        assert {k: v["n"] for k, v in final.items()} == dict(expected.counts), self.log_tail()
        for key, total in expected.totals.items():
            assert final[key]["total"] == pytest.approx(total)

    def final_counts(self) -> dict[str, int]:
        """The latest count per key in the output topic (read_committed)."""
        return {k: v["n"] for k, v in latest_by_key(read_topic(self.config, self.output)).items()}

    def env_for_cli(self) -> dict[str, str]:
        """The process environment for other `headwater` commands against this job's stack."""
        return {**os.environ, **self.env}

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else ""
