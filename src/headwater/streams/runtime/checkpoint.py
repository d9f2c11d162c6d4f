"""Checkpoints: every side effect of the batches since the last one made durable, in one order.

The order, each step its own function below (``Worker.checkpoint`` calls them in this order):

1. ``produce_changelogs``: one changelog record per dirty state key (latest value or tombstone),
   TTL expiries included; under exactly-once inside the open transaction.
2. ``BatchContext.pre_commit``: every task's checkpoint sequence advances, external sinks make
   what they staged durable but invisible, and the offsets to commit get each task's metadata
   (stream time, checkpoint sequence).
3. ``flush_producer``: wait until outputs, dead letters and changelog records are acknowledged
   (under exactly-once: written into the open transaction). If this fails, nothing was asked to
   commit, so ``BatchContext.abort`` discards what the sinks pre-committed.
4. ``commit_transaction`` (exactly-once): the consumed offsets (with each task's metadata) go
   into the transaction with the consumer group metadata, then the transaction commits: outputs,
   dead letters, changelogs and offsets at once. ``commit_offsets`` (at-least-once): a
   synchronous commit of the consumed offsets (+ metadata). Once the commit was requested its
   outcome may be unknown after a failure (a timeout), so staged sink data is left alone: the
   sink's ``recover`` on the next assignment sees the committed checkpoint sequence and
   publishes or discards it.
5. ``BatchContext.commit``: sinks publish what they pre-committed (idempotent; a crash before
   this step is finished by ``recover`` in the same way).
6. ``write_stores``: write each write-back cache to RocksDB in one WriteBatch together with the
   changelog offset it now reflects.

Failure atomicity: any step that fails raises; the worker then never checkpoints again (not from
the revoke callback, not on close), aborts its transaction (exactly-once) and exits non-zero, and
its successor re-processes from the last committed offsets. Delivery errors are sticky in the
:class:`DeliveryTracker`: once a record failed, every later checkpoint attempt fails too.

What a crash costs:
- before step 4 completes: nothing of the interval is committed. At-least-once: outputs and dead
  letters already sent are produced again on replay (duplicates downstream); exactly-once: the
  transaction aborts, read_committed consumers never see them. State is exact either way (the
  cache was never written; changelog records of an aborted transaction are skipped by restore).
- between steps 1 and 4, at-least-once: changelog records of the interval may be durable while
  its offsets are not; on restart the store is restored including them and the records are
  processed again, so their contributions count twice. This is the one window in which
  at-least-once state over-counts, bounded by the records of one checkpoint interval.
- between steps 4 and 6: the local store is behind its changelog; restore catches it up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from headwater.connectors.produce import produce as produce_retrying
from headwater.connectors.produce import purged
from headwater.errors import HeadwaterError
from headwater.failpoints import failpoint
from headwater.state.cache import WriteBackCache


class CheckpointError(HeadwaterError):
    """A checkpoint step failed; the worker stops and its batches are re-processed on restart."""


@dataclass
class DeliveryTracker:
    """Delivery reports of the worker's producer: failures (sticky), changelog offsets written.

    Records report into builtin ``dict.__setitem__`` sinks (:attr:`report` for outputs,
    :meth:`changelog_report` per changelog partition), which the client calls from C with
    ``(error, message)``: a delivered record costs no Python frame. :meth:`collect` (called by
    :meth:`raise_errors`, i.e. after every flush) reads them: every error key is a failure (the
    same error twice counts once), and the last success of a changelog partition gives the
    offset reached (an idempotent producer reports a partition's records in offset order).
    """

    changelog_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    failed: int = 0
    _outputs: dict[KafkaError | None, Any] = field(default_factory=dict, repr=False)
    _changelogs: dict[tuple[str, int], dict[KafkaError | None, Any]] = field(
        default_factory=dict, repr=False)

    @property
    def report(self) -> Callable[[KafkaError | None, Any], None]:
        """The ``on_delivery`` of output and repartition records."""
        return self._outputs.__setitem__

    def changelog_report(self, topic: str, partition: int) -> Callable[[KafkaError | None, Any], None]:
        """The ``on_delivery`` of the records of one changelog partition."""
        return self._changelogs.setdefault((topic, partition), {}).__setitem__

    def collect(self) -> None:
        """Account for the reports received since the last call."""
        for key, reports in self._changelogs.items():
            last = reports.pop(None, None)
            if last is not None:
                self.changelog_offsets[key] = max(self.changelog_offsets.get(key, -1),
                                                  last.offset())
            self._account(reports)
        self._outputs.pop(None, None)
        self._account(self._outputs)

    def _account(self, reports: dict[KafkaError | None, Any]) -> None:
        for err, msg in list(reports.items()):
            self.on_delivery(err, msg)
        reports.clear()

    def on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        """Count a failed delivery (a purge we chose, aborting on lost partitions, is none)."""
        if err is not None and not purged(err):
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def raise_errors(self) -> None:
        """Raise if any record ever failed delivery (errors are never cleared)."""
        self.collect()
        if self.failed:
            raise CheckpointError(
                f"{self.failed} delivery failure(s); first: {self.errors[0]}"
            )


def produce_changelogs(
    producer: Producer,
    caches: Mapping[tuple[str, int], WriteBackCache],
    changelog_topics: Mapping[str, str],
    tracker: DeliveryTracker,
) -> int:
    """Step 1: one record per dirty key to the store's changelog, same partition as the input."""
    sent = 0
    for (store, partition), cache in caches.items():
        topic = changelog_topics[store]
        on_delivery = tracker.changelog_report(topic, partition)
        for key, value in cache.dirty().items():
            try:
                producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
            except BufferError:
                produce_retrying(producer, topic, value=value, key=key, partition=partition,
                                 on_delivery=on_delivery)
            sent += 1
    failpoint("checkpoint.after_changelogs")
    return sent


def flush_producer(producer: Producer, tracker: DeliveryTracker, timeout_s: float) -> None:
    """Step 3: wait for every queued record to be acknowledged; raise if any ever failed."""
    remaining = producer.flush(timeout_s)
    if remaining:
        raise CheckpointError(f"{remaining} record(s) still undelivered after {timeout_s:.0f}s")
    tracker.raise_errors()
    failpoint("checkpoint.after_flush")


def commit_transaction(
    producer: Producer, consumer: Consumer, offsets: list[TopicPartition], timeout_s: float
) -> None:
    """Step 4 (exactly-once): offsets into the transaction, then commit it (after step 3).

    Retriable errors are retried until ``timeout_s``; an error that requires an abort, a fatal
    error or a fenced producer raises :class:`CheckpointError` (the worker aborts and exits).
    """
    deadline = time.monotonic() + timeout_s
    if offsets:
        _retrying(lambda: producer.send_offsets_to_transaction(
            offsets, consumer.consumer_group_metadata(), max(1.0, deadline - time.monotonic())
        ), "send offsets to the transaction", deadline)
    _retrying(lambda: producer.commit_transaction(max(1.0, deadline - time.monotonic())),
              "commit the transaction", deadline)
    failpoint("checkpoint.after_commit")


def commit_offsets(consumer: Consumer, offsets: list[TopicPartition], timeout_s: float) -> None:
    """Step 4 (at-least-once): synchronous offset commit, retried while retriable."""
    if offsets:
        deadline = time.monotonic() + timeout_s
        _retrying(lambda: consumer.commit(offsets=offsets, asynchronous=False),
                  "commit offsets", deadline)
    failpoint("checkpoint.after_commit")


def write_stores(
    caches: Mapping[tuple[str, int], WriteBackCache],
    changelog_topics: Mapping[str, str],
    tracker: DeliveryTracker,
) -> None:
    """Step 6: each dirty cache to its store in one batch, with the changelog offset reached."""
    for (store, partition), cache in caches.items():
        if cache.dirty():
            offset = tracker.changelog_offsets.get((changelog_topics[store], partition))
            cache.flush(offset)
    failpoint("checkpoint.after_write_stores")


def _retrying(call: Callable[[], object], what: str, deadline: float) -> None:
    delay = 0.1
    while True:
        try:
            call()
            return
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            retriable = err is not None and err.retriable() and not err.fatal() and not (
                hasattr(err, "txn_requires_abort") and err.txn_requires_abort()
            )
            if not retriable or time.monotonic() + delay > deadline:
                raise CheckpointError(f"cannot {what}: {exc}") from exc
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
