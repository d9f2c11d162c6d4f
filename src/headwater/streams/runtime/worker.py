"""One worker = one process = one consumer group member running a topology.

Lifecycle: ``Worker.run()`` prepares internal topics, subscribes, then loops: consume a batch,
split it by source topic, process each part as one frame, checkpoint when the interval or the
record budget is reached. Rebalances: on revoke, checkpoint and close the partitions' stores; on
assign, restore their stores from the changelogs before any record of theirs is processed.
``stop()`` (SIGTERM) ends the loop; the worker then checkpoints, leaves the group and returns.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from headwater.config import Settings
from headwater.errors import HeadwaterError
from headwater.connectors.dlq import (
    DeadLetter,
    DeadLetterWriter,
    dlq_size_limit,
    dlq_topic,
    ensure_dlq_topic,
)
from headwater.state.changelog import changelog_topic, ensure_changelog_topics, restore
from headwater.state.manager import StateManager
from headwater.streams.batch import BatchContext, plain_decoder
from headwater.streams.decode import BatchDecoder
from headwater.streams.records import RecordBatch
from headwater.streams.repartition import REPARTITION_SUFFIX, ensure_repartition_topics
from headwater.streams.runtime import checkpoint as cp
from headwater.streams.topology import Topology

log = logging.getLogger("headwater.worker")


class SourceTopicMissing(HeadwaterError):
    """A topology's source topic does not exist (the engine creates only internal topics)."""

TTL_PURGE_INTERVAL_S = 60.0
PROGRESS_INTERVAL_S = 10.0


@dataclass(frozen=True)
class WorkerOptions:
    """Per-run knobs of a worker (the rest comes from :class:`Settings`).

    Attributes:
        worker_id: stable index of this worker on this host (names its transactional.id).
        batch_size: most records per consume call.
        max_batch_latency_s: longest wait for a batch when traffic is light.
        until_idle_s: stop by itself after this long without records (benchmarks, tests);
            ``None`` runs until stopped.
        commit_every_records: also checkpoint after this many records (0: time only).
        auto_offset_reset: where a new consumer group starts.
    """

    worker_id: int = 0
    batch_size: int = 10_000
    max_batch_latency_s: float = 0.1
    until_idle_s: float | None = None
    commit_every_records: int = 0
    auto_offset_reset: str = "earliest"


class _KafkaContext(BatchContext):
    def __init__(self, worker: Worker) -> None:
        super().__init__(worker.topology, worker.stores)
        self._worker = worker

    def produce(
        self,
        topic: str,
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        timestamps_ms: Sequence[int] | None = None,
    ) -> None:
        produce, callback = self._worker.producer.produce, self._worker.tracker.on_delivery
        times = timestamps_ms if timestamps_ms is not None else [0] * len(keys)
        for key, value, ts in zip(keys, values, times, strict=True):
            while True:
                try:
                    produce(topic, value, key, on_delivery=callback, timestamp=ts)
                    break
                except BufferError:
                    self._worker.producer.poll(0.05)

    def internal_topic(self, store_name: str) -> str:
        return self._worker.physical[f"{store_name}{REPARTITION_SUFFIX}"]

    def send_dead_letters(self, letters: list[DeadLetter]) -> None:
        self._worker.dead_letters.send(letters)

    def encode_avro(self, frame: pl.DataFrame, subject: str, schema: str) -> list[bytes]:
        return self._worker.avro().encode(frame, subject, schema)


class Worker:
    """Runs ``topology`` as one member of the consumer group ``settings.application_id``."""

    def __init__(
        self,
        topology: Topology,
        settings: Settings,
        options: WorkerOptions | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.topology = topology
        self.settings = settings
        self.options = options or WorkerOptions()
        self.exactly_once = settings.processing_guarantee == "exactly-once"
        self.stores = StateManager(settings.state_dir, settings.application_id)
        self.tracker = cp.DeliveryTracker()
        self.changelogs = {
            s.name: changelog_topic(settings.application_id, s.name) for s in topology.stores
        }
        self.physical = {
            t: (f"{settings.application_id}-{t}" if spec.internal else t)
            for t, spec in topology.sources.items()
        }
        self._logical = {physical: t for t, physical in self.physical.items()}
        self.records_processed = 0
        self._on_progress = on_progress
        self._running = False
        self._positions: dict[tuple[str, int], int] = {}
        self._since_checkpoint = 0
        self._in_transaction = False
        self._assigned_at = 0.0
        self._purged_at = time.monotonic()
        self._reported_at = time.monotonic()
        self._reported_records = 0
        self._avro = None
        self._decoders: dict[str, BatchDecoder] = {}
        kafka = settings.kafka_client_config()
        self.consumer = Consumer(self._consumer_config(kafka))
        self.producer = Producer(self._producer_config(kafka))
        self.dead_letters = DeadLetterWriter(self.producer, dlq_topic(settings.application_id))
        self.context = _KafkaContext(self)

    # --- lifecycle --------------------------------------------------------------------------

    def run(self) -> None:
        """Process until :meth:`stop` (or ``until_idle_s`` of silence); always checkpoints last."""
        self._prepare_topics()
        if self.exactly_once:
            self.producer.init_transactions(30)
        self.consumer.subscribe(
            list(self.physical.values()), on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._running = True
        last_checkpoint = last_record = time.monotonic()
        try:
            while self._running:
                messages = self.consumer.consume(
                    self.options.batch_size, self.options.max_batch_latency_s
                )
                now = time.monotonic()
                if messages:
                    self._process(messages)
                    last_record = now
                elif self._idle_for(now - max(last_record, self._assigned_at)):
                    break
                due = now - last_checkpoint >= self.settings.commit_interval_ms / 1000
                budget = self.options.commit_every_records
                if due or (budget and self._since_checkpoint >= budget):
                    self.checkpoint()
                    last_checkpoint = now
                self.producer.poll(0)
            self.checkpoint()
        finally:
            self._close()

    def stop(self) -> None:
        """Ask the loop to end after the current batch (safe from a signal handler)."""
        self._running = False

    # --- the loop ---------------------------------------------------------------------------

    def _process(self, messages: list) -> None:
        if self.exactly_once and not self._in_transaction:
            self.producer.begin_transaction()
            self._in_transaction = True
        by_topic: dict[str, list] = defaultdict(list)
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error on %s: %s", msg.topic(), err.str())
                continue
            by_topic[msg.topic()].append(msg)
        for topic, topic_messages in by_topic.items():
            batch = RecordBatch.from_messages(topic, topic_messages)
            logical = self._logical[topic]
            self.context.process(self.topology.sources[logical], self._decoder(logical), batch)
            for partition, offset in zip(batch.partitions, batch.offsets):
                self._positions[(topic, partition)] = offset + 1
            self.records_processed += len(batch)
            self._since_checkpoint += len(batch)
        if self._on_progress:
            self._on_progress(self.records_processed)
        self._report_progress()

    def _report_progress(self) -> None:
        now = time.monotonic()
        if now - self._reported_at >= PROGRESS_INTERVAL_S:
            done = self.records_processed - self._reported_records
            log.info("processed %d record(s) (%.0f/s), %d dead-lettered in total",
                     self.records_processed, done / (now - self._reported_at),
                     sum(self.dead_letters.counts.values()))
            self._reported_at, self._reported_records = now, self.records_processed

    def checkpoint(self) -> None:
        """Make everything processed so far durable (order: see :mod:`.checkpoint`)."""
        self._purge_expired_state()
        if not self._since_checkpoint and not any(True for _ in self.context.dirty_caches()):
            if self.exactly_once and self._in_transaction:
                self.producer.commit_transaction(30)
                self._in_transaction = False
            return
        dirty = dict(self.context.dirty_caches())
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        cp.flush_sinks(self.topology.sinks)
        cp.produce_changelogs(self.producer, dirty, self.changelogs, self.tracker)
        if self.exactly_once:
            if not self._in_transaction:
                self.producer.begin_transaction()
            cp.commit_transaction(self.producer, self.consumer, offsets, self.tracker, 60)
            self._in_transaction = False
        else:
            cp.flush_producer(self.producer, self.tracker, 60)
            self.dead_letters.raise_for_delivery_errors()
            cp.commit_offsets(self.consumer, offsets)
        cp.write_stores(dirty, self.changelogs, self.tracker)
        self._since_checkpoint = 0

    def _purge_expired_state(self) -> None:
        """Every TTL_PURGE_INTERVAL_S, expired keys of TTL stores become changelogged deletes."""
        now = time.monotonic()
        if now - self._purged_at < TTL_PURGE_INTERVAL_S:
            return
        self._purged_at = now
        partitions = {tp.partition for tp in self.consumer.assignment()}
        for store in self.topology.stores:
            if store.ttl_ms:
                for partition in partitions:
                    purged = self.context.state(store.name, partition).purge_expired()
                    if purged:
                        log.info("expired %d key(s) of %s[%d]", len(purged), store.name, partition)

    # --- rebalances -------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _names(partitions))
        self._assigned_at = time.monotonic()
        read_committed = True
        config = {**self.settings.kafka_client_config()}
        for tp in partitions:
            for store in self.topology.stores:
                target = self.stores.open(store.name, tp.partition, ttl_ms=store.ttl_ms)
                applied = restore(target, config, self.changelogs[store.name], tp.partition,
                                  read_committed=read_committed)
                if applied:
                    log.info("restored %d record(s) of %s[%d]", applied, store.name, tp.partition)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", _names(partitions))
        self.checkpoint()
        self._release(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s: discarding uncommitted state", _names(partitions))
        for cache in self.context.caches.values():
            cache.discard()
        self._release(partitions)

    def _release(self, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        for key in [k for k in self.context.caches if k[1] in gone]:
            del self.context.caches[key]
        for tp in partitions:
            self._positions.pop((tp.topic, tp.partition), None)
        for partition in gone:
            self.stores.close_partition(partition)

    # --- setup ------------------------------------------------------------------------------

    def _prepare_topics(self) -> None:
        admin = AdminClient(self.settings.kafka_client_config())
        metadata = admin.list_topics(timeout=30)
        partitions = {}
        for topic, spec in self.topology.sources.items():
            if spec.internal:
                continue
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise SourceTopicMissing(f"source topic {topic!r} does not exist")
            partitions[topic] = len(metadata.topics[topic].partitions)
        count = max(partitions.values())
        ensure_dlq_topic(admin, self.dead_letters.topic)
        self.dead_letters.max_message_bytes = dlq_size_limit(
            admin, self.dead_letters.topic, self._producer_config(self.settings.kafka_client_config()))
        internal = [self.physical[t] for t, spec in self.topology.sources.items() if spec.internal]
        if internal:
            ensure_repartition_topics(admin, internal, count)
        if self.changelogs:
            ensure_changelog_topics(admin, {t: count for t in self.changelogs.values()})

    def _decoder(self, topic: str) -> BatchDecoder:
        decoder = self._decoders.get(topic)
        if decoder is None:
            spec = self.topology.sources[topic]
            decoder = self.avro().decoder(spec) if spec.value_format == "avro" else plain_decoder(spec)
            self._decoders[topic] = decoder
        return decoder

    def avro(self):
        """The registry-backed Avro codec (created on first use)."""
        if self._avro is None:
            from headwater.streams.runtime.avro import AvroCodec

            self._avro = AvroCodec(self.settings)
        return self._avro

    def _idle_for(self, seconds: float) -> bool:
        limit = self.options.until_idle_s
        return limit is not None and seconds >= limit and bool(self.consumer.assignment())

    def _consumer_config(self, kafka: dict[str, str]) -> dict[str, object]:
        return {
            **kafka,
            "group.id": self.settings.application_id,
            "client.id": f"{self.settings.kafka_client_id}-{self.options.worker_id}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "session.timeout.ms": self.settings.session_timeout_ms,
            "auto.offset.reset": self.options.auto_offset_reset,
            "isolation.level": "read_committed",
            "queued.max.messages.kbytes": 65536,
            "fetch.max.bytes": 52428800,
        }

    def _producer_config(self, kafka: dict[str, str]) -> dict[str, object]:
        config: dict[str, object] = {
            **kafka,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            # the Java clients' partitioner, so keyed outputs co-partition with Kafka Streams/JVM
            # producers (librdkafka's default hashes keys differently)
            "partitioner": "murmur2_random",
        }
        if self.exactly_once:
            host = socket.gethostname()
            config["transactional.id"] = (
                f"{self.settings.application_id}-{host}-{self.options.worker_id}"
            )
            config["transaction.timeout.ms"] = 60_000
        return config

    def _close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(10)
            for sink in self.topology.sinks:
                sink.close()
            self.stores.close_all()


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
