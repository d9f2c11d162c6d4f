"""Checkpoints: every side effect of the batches since the last one made durable, in one order.

The order, each step its own function below:

1. ``flush_sinks``: external sinks publish what they staged (idempotently).
2. ``produce_changelogs``: one changelog record per dirty state key (latest value or tombstone).
3. ``flush_producer``: wait until outputs, dead letters and changelog records are acknowledged
   (at-least-once); under exactly-once, send the consumed offsets to the transaction with the
   consumer group metadata and commit the transaction instead.
4. ``commit_offsets``: commit the consumed offsets (at-least-once only; under exactly-once step 3
   committed them atomically with the outputs).
5. ``write_stores``: write each write-back cache to RocksDB in one WriteBatch together with the
   changelog offset it now reflects.

What a crash costs:
- before step 2: nothing of the interval is durable except outputs and dead letters already
  sent (at-least-once: they are produced again on replay, so consumers may see duplicates;
  exactly-once: the transaction aborts, read_committed consumers never see them). The batches are
  re-read from the committed offsets and state is exact (the cache was never written).
- from step 2 until step 4 completes, at-least-once: changelog records of the interval may be
  durable while its offsets are not. On restart the store is restored to include those updates
  and the interval's records are processed again, so their contributions to state count twice.
  This is the one window in which at-least-once state over-counts; it is bounded by the records
  of one checkpoint interval. Under exactly-once the changelog records are in the transaction and
  either commit with the offsets or are aborted (skipped by the read_committed restore).
- between steps 4 and 5: the local store is behind its changelog; restore catches it up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from headwater.errors import HeadwaterError
from headwater.state.cache import WriteBackCache
from headwater.streams.sink import Sink


class CheckpointError(HeadwaterError):
    """A checkpoint step failed; the worker stops and its batches are re-processed on restart."""


@dataclass
class DeliveryTracker:
    """Delivery reports of the worker's producer: failures, and changelog offsets written."""

    changelog_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def on_delivery(self, err: KafkaError | None, msg: object) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")  # type: ignore[attr-defined]

    def on_changelog_delivery(self, err: KafkaError | None, msg: object) -> None:
        if err is not None:
            self.on_delivery(err, msg)
            return
        key = (msg.topic(), msg.partition())  # type: ignore[attr-defined]
        self.changelog_offsets[key] = max(self.changelog_offsets.get(key, -1), msg.offset())  # type: ignore[attr-defined]

    def raise_errors(self) -> None:
        if self.errors:
            first, count = self.errors[0], len(self.errors)
            self.errors.clear()
            raise CheckpointError(f"{count} record(s) not delivered; first: {first}")


def flush_sinks(sinks: Iterable[Sink]) -> None:
    """Step 1: publish what each sink staged."""
    for sink in sinks:
        sink.flush()


def produce_changelogs(
    producer: Producer,
    caches: Mapping[tuple[str, int], WriteBackCache],
    changelog_topics: Mapping[str, str],
    tracker: DeliveryTracker,
) -> int:
    """Step 2: one record per dirty key to the store's changelog, same partition as the input."""
    sent = 0
    for (store, partition), cache in caches.items():
        topic = changelog_topics[store]
        for key, value in cache.dirty().items():
            _produce(producer, topic, key, value, partition, tracker.on_changelog_delivery)
            sent += 1
    return sent


def flush_producer(producer: Producer, tracker: DeliveryTracker, timeout_s: float) -> None:
    """Step 3 (at-least-once): wait for every queued record to be acknowledged."""
    remaining = producer.flush(timeout_s)
    if remaining:
        raise CheckpointError(f"{remaining} record(s) still undelivered after {timeout_s}s")
    tracker.raise_errors()


def commit_transaction(
    producer: Producer,
    consumer: Consumer,
    offsets: list[TopicPartition],
    tracker: DeliveryTracker,
    timeout_s: float,
) -> None:
    """Step 3 (exactly-once): offsets into the transaction, then commit it."""
    flush_producer(producer, tracker, timeout_s)
    if offsets:
        producer.send_offsets_to_transaction(
            offsets, consumer.consumer_group_metadata(), timeout_s
        )
    producer.commit_transaction(timeout_s)


def commit_offsets(consumer: Consumer, offsets: list[TopicPartition]) -> None:
    """Step 4 (at-least-once): synchronous offset commit."""
    if not offsets:
        return
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        raise CheckpointError(f"offset commit failed: {exc}") from exc


def write_stores(
    caches: Mapping[tuple[str, int], WriteBackCache],
    changelog_topics: Mapping[str, str],
    tracker: DeliveryTracker,
) -> None:
    """Step 5: each dirty cache to its store in one batch, with the changelog offset reached."""
    for (store, partition), cache in caches.items():
        if cache.dirty():
            offset = tracker.changelog_offsets.get((changelog_topics[store], partition))
            cache.flush(offset)


def _produce(
    producer: Producer, topic: str, key: bytes, value: bytes | None, partition: int, callback
) -> None:
    while True:
        try:
            producer.produce(topic, value, key, partition=partition, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.1)
