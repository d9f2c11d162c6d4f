"""One worker = one process = one consumer group member running a topology.

Lifecycle: ``Worker.run()`` checks and prepares every topic, subscribes, then loops: restore
newly assigned stores a step at a time (their partitions paused), consume a batch, split it by
source topic, process each part as one frame, checkpoint when the interval or the record budget
is reached. ``stop()`` (SIGTERM) ends the loop; the worker then checkpoints and closes.

Failure atomicity: the first failure anywhere (a batch, a checkpoint step, a rebalance callback,
a fatal consumer error) marks the worker failed. A failed worker never checkpoints again, not
from the revoke callback and not on close; under exactly-once it aborts its open transaction.
``run()`` re-raises, the process exits non-zero, and the successor re-processes everything after
the last committed offsets.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from headwater.config import Settings
from headwater.connectors.dlq import (
    DeadLetter,
    DeadLetterWriter,
    dlq_size_limit,
    dlq_topic,
    ensure_dlq_topic,
)
from headwater.connectors.produce import produce as produce_retrying
from headwater.errors import HeadwaterError
from headwater.failpoints import failpoint
from headwater.state.changelog import changelog_topic, ensure_changelog_topics
from headwater.state.manager import StateManager
from headwater.state.restorer import ChangelogRestorer
from headwater.streams.batch import BatchContext, plain_decoder
from headwater.streams.decode import BatchDecoder
from headwater.streams.records import RecordBatch
from headwater.streams.repartition import REPARTITION_SUFFIX
from headwater.streams.runtime import checkpoint as cp
from headwater.streams.runtime import clients
from headwater.streams.runtime import topics
from headwater.streams.runtime.assignment import Assignments
from headwater.streams.runtime.global_tables import GlobalTableReader
from headwater.streams.tables import GlobalStore
from headwater.streams.task import TaskId
from headwater.streams.topology import Topology

log = logging.getLogger("headwater.worker")

TTL_PURGE_INTERVAL_S = 60.0
REPARTITION_PURGE_INTERVAL_S = 30.0  # like Kafka Streams' repartition.purge.interval.ms
PROGRESS_INTERVAL_S = 10.0


class WorkerFailed(HeadwaterError):
    """The worker failed earlier (the cause is chained); it will not checkpoint again."""


@dataclass(frozen=True)
class WorkerOptions:
    """Per-run knobs of a worker (the rest comes from :class:`Settings`).

    Attributes:
        worker_id: stable index of this worker on this host (names its transactional.id and
            its group.instance.id).
        batch_size: most records per consume call.
        max_batch_latency_s: longest wait for a batch when traffic is light.
        until_idle_s: stop by itself after this long without records, counted from the last
            record or the last partitions resumed after their restore (benchmarks, tests);
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
        worker = self._worker
        worker.begin_effects()
        producer = worker.producer
        produce, callback = producer.produce, worker.tracker.on_delivery
        times = timestamps_ms if timestamps_ms is not None else [0] * len(keys)
        # brokers reject timestamps too far ahead (Kafka 4: 1 h by default) and one future event
        # time must not fail every checkpoint: stamp it now (the value keeps the event time);
        # repartition topics accept any time and keep it (topics.REPARTITION_TOPIC_CONFIG)
        latest = None if topic in worker.repartition_topics else int(time.time() * 1000)
        if latest is not None:
            times = [t if t <= latest else latest for t in times]
        for key, value, ts in zip(keys, values, times, strict=True):
            try:
                produce(topic, value, key, on_delivery=callback, timestamp=ts)
            except BufferError:
                produce_retrying(producer, topic, value=value, key=key, on_delivery=callback,
                                 timestamp=ts)

    def internal_topic(self, store_name: str) -> str:
        return self._worker.physical[f"{store_name}{REPARTITION_SUFFIX}"]

    def caught_up(self, task: TaskId) -> bool:
        """The consumer's position has reached the end of every partition of the task, as the
        last fetch responses told it (read_committed: the last stable offset). No broker call:
        the loop never blocks on it."""
        consumer, physical = self._worker.consumer, self._worker.physical
        ends = self.tasks[task].end
        for topic, partition in self.partitions_of(task):
            tp = TopicPartition(physical.get(topic, topic), partition)
            position = consumer.position([tp])[0].offset
            if position < 0:  # nothing consumed since the assignment: the committed offset
                position = ends.get((topic, partition), -1)
            _, high = consumer.get_watermark_offsets(tp, cached=True)  # every fetch updates it
            if high < 0 or position < 0 or position < high:  # unknown yet: not idle yet
                return False
        return True

    def send_dead_letters(self, letters: list[DeadLetter]) -> None:
        self._worker.begin_effects()
        self._worker.dead_letters.send(letters)

    def encode_avro(self, frame: pl.DataFrame, subject: str, schema: str) -> list[bytes]:
        return self._worker.avro().encode(frame, subject, schema)

    def decode_avro(self, values: Sequence[bytes]) -> pl.DataFrame:
        return self._worker.avro().decode_rows(values)


    def source_decoder(self, topic: str) -> BatchDecoder:
        return self._worker._decoder(topic)

    def global_store(self, topic: str) -> GlobalStore:
        return self._worker.global_tables.store(topic)


class Worker:
    """Runs ``topology`` as one member of the consumer group ``settings.application_id``.

    Args:
        topology: what to run.
        settings: connection, guarantee, topics and failure settings.
        options: per-run knobs.
        on_progress: called with the total records processed after each batch.
        on_checkpoint: called after each checkpoint that committed offsets (the supervisor uses
            it to tell a worker that makes progress from one that fails at the same offsets).
    """

    def __init__(
        self,
        topology: Topology,
        settings: Settings,
        options: WorkerOptions | None = None,
        on_progress: Callable[[int], None] | None = None,
        on_checkpoint: Callable[[], None] | None = None,
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
        self.repartition_topics = frozenset(
            self.physical[t] for t, spec in topology.sources.items() if spec.internal)
        self.records_processed = 0
        self.checkpoints = 0
        self.failure: BaseException | None = None
        self._on_progress = on_progress
        self._on_checkpoint = on_checkpoint
        self._running = True  # stop() may come before run(), e.g. a signal during start-up
        self._since_checkpoint = 0
        self._effects = False  # records produced since the last checkpoint (timers included)
        self._in_transaction = False
        self._assigned_at = 0.0
        self._purged_at = self._repartition_purged_at = time.monotonic()
        self._reported_at = time.monotonic()
        self._reported_records = 0
        self._avro = None
        self._decoders: dict[str, BatchDecoder] = {}
        self._admin: AdminClient | None = None
        kafka = settings.kafka_client_config()
        self.consumer = Consumer(clients.consumer_config(settings, self.options))
        self.producer = Producer(clients.producer_config(settings, self.options))
        self.dead_letters = DeadLetterWriter(self.producer, dlq_topic(settings.application_id))
        self.context = _KafkaContext(self)
        self.restorer = ChangelogRestorer(kafka, True, self.stores)
        self.assignments = Assignments(
            self.consumer, self.context, self.restorer, self.stores, self.changelogs,
            self._logical, self.options.auto_offset_reset, self._timeout,
        )
        self.global_tables = GlobalTableReader(
            topology.global_tables, kafka, self.exactly_once, self.stores.app_dir,
            self.options.worker_id, self._decoder, self.context)
        self._global_counts: dict[str, int] = {}

    # --- lifecycle --------------------------------------------------------------------------

    def run(self) -> None:
        """Process until :meth:`stop` (or ``until_idle_s`` of silence); always checkpoints last.

        Raises:
            HeadwaterError (or a Kafka error): the worker failed; nothing after the last
                checkpoint was committed and the caller should exit non-zero.
        """
        try:
            self._prepare_topics()
            if self.exactly_once:
                self.producer.init_transactions(30)
            self.global_tables.start(self._global_counts)  # whole, before any stream record
            self.consumer.subscribe(
                list(self.physical.values()), on_assign=self._on_assign,
                on_revoke=self._on_revoke, on_lost=self._on_lost,
            )
            self._loop()
            self.checkpoint()
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            self._close()
        self._raise_if_failed()  # e.g. the revoke callback's checkpoint failed while closing

    def stop(self) -> None:
        """Ask the loop to end after the current batch (safe from a signal handler)."""
        self._running = False

    def _loop(self) -> None:
        last_checkpoint = last_record = time.monotonic()
        while self._running:
            self._raise_if_failed()
            self.assignments.step()
            self.global_tables.poll()
            messages = self.consumer.consume(
                self.options.batch_size, self.options.max_batch_latency_s
            )
            self._raise_if_failed()
            now = time.monotonic()
            if messages:
                self._process(messages)
                last_record = now
            else:
                self.context.punctuate()
                if not self.assignments.pending and self._idle_for(
                    now - max(last_record, self._assigned_at, self.assignments.resumed_at)
                ):
                    break
            due = now - last_checkpoint >= self.settings.commit_interval_ms / 1000
            budget = self.options.commit_every_records
            if due or (budget and self._since_checkpoint >= budget):
                self.checkpoint()
                last_checkpoint = now
            self.producer.poll(0)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            log.error("worker failed: %s: %s; nothing after the last checkpoint is committed",
                      type(exc).__name__, exc)
        if self.exactly_once and self._in_transaction:
            self._in_transaction = False
            try:
                self.producer.abort_transaction(10)
            except KafkaException as abort_exc:  # the successor's init_transactions aborts it
                log.warning("could not abort the open transaction: %s", abort_exc)

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise WorkerFailed(f"worker failed: {self.failure}") from self.failure

    # --- the loop ---------------------------------------------------------------------------

    def begin_effects(self) -> None:
        """Before producing anything: note it, and under exactly-once open the interval's
        transaction."""
        self._effects = True
        if self.exactly_once and not self._in_transaction:
            self.producer.begin_transaction()
            self._in_transaction = True

    def _process(self, messages: list) -> None:
        if self.assignments.pending:
            messages = self.assignments.hold_back(messages)
            if not messages:
                return
        self.begin_effects()
        by_topic: dict[str, list] = defaultdict(list)
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error on %s: %s", msg.topic(), err.str())
                continue
            by_topic[msg.topic()].append(msg)
        for topic, topic_messages in by_topic.items():
            batch = RecordBatch.from_messages(topic, topic_messages)
            logical = self._logical[topic]
            self.context.process(self.topology.sources[logical], self._decoder(logical), batch)
            failpoint("batch.after_operators")
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
        """Make everything processed so far durable (order: see :mod:`.checkpoint`).

        Raises:
            WorkerFailed: the worker failed before; it never checkpoints again.
            CheckpointError (or another error): a step failed; the worker is now failed.
        """
        self._raise_if_failed()
        try:
            self._checkpoint()
        except BaseException as exc:
            self._fail(exc)
            raise

    def _checkpoint(self) -> None:
        self._purge_expired_state()
        self.context.punctuate()
        dirty = dict(self.context.dirty_caches())
        if not (self._since_checkpoint or dirty or self._effects or self.context.time_advanced):
            return
        self.begin_effects()
        cp.produce_changelogs(self.producer, dirty, self.changelogs, self.tracker)
        prepared = self.context.pre_commit()
        try:
            failpoint("checkpoint.after_flush_sinks")
            cp.flush_producer(self.producer, self.tracker, self._timeout)
            self.dead_letters.raise_for_delivery_errors()
        except BaseException:
            self.context.abort(prepared)  # nothing was asked to commit
            raise
        offsets = [
            TopicPartition(self.physical[t], p, c.offset, c.metadata)
            for (t, p), c in prepared.offsets.items()
        ]
        # From here a failure may leave the commit's outcome unknown: staged sink data is left
        # for the sink's recover() to publish or discard against the committed sequence.
        if self.exactly_once:
            cp.commit_transaction(self.producer, self.consumer, offsets, self._timeout)
            self._in_transaction = False
        else:
            cp.commit_offsets(self.consumer, offsets, self._timeout)
        self.context.commit(prepared)
        cp.write_stores(dirty, self.changelogs, self.tracker)
        self._since_checkpoint = 0
        self._effects = False
        self.checkpoints += 1
        self._purge_repartition(offsets)
        if self._on_checkpoint:
            self._on_checkpoint()

    @property
    def _timeout(self) -> float:
        """How long a checkpoint step may retry transient errors."""
        return max(self.settings.transient_retry_ms / 1000, 1.0)

    def _purge_expired_state(self) -> None:
        """Every TTL_PURGE_INTERVAL_S, expired keys of TTL stores become changelogged deletes
        (written by this checkpoint, inside its transaction under exactly-once)."""
        now = time.monotonic()
        if now - self._purged_at < TTL_PURGE_INTERVAL_S:
            return
        self._purged_at = now
        for task in list(self.context.tasks):
            for store in self.topology.stores_of(task.subtopology):
                if store.ttl_ms:
                    partition = task.partition
                    purged = self.context.state(store.name, partition).purge_expired()
                    if purged:
                        log.info("expired %d key(s) of %s[%d]", len(purged), store.name,
                                 partition)

    def _purge_repartition(self, offsets: list[TopicPartition]) -> None:
        """At most every REPARTITION_PURGE_INTERVAL_S, delete the repartition records below the
        offsets just committed (they are processed)."""
        now = time.monotonic()
        if now - self._repartition_purged_at < REPARTITION_PURGE_INTERVAL_S:
            return
        self._repartition_purged_at = now
        internal = {self.physical[t] for t, s in self.topology.sources.items() if s.internal}
        if internal and self._admin is not None:
            topics.purge_repartition(self._admin, [tp for tp in offsets if tp.topic in internal])

    # --- rebalances -------------------------------------------------------------------------
    # Callbacks run inside consume(); they never raise into librdkafka: a failure is recorded
    # and re-raised by the loop right after consume() returns.

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _names(partitions))
        self._assigned_at = time.monotonic()
        if self.failure is not None:
            return
        try:
            failpoint("rebalance.on_assign")
            consumer.assign(partitions)
            self.assignments.add(partitions)
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised by the loop
            self._fail(exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", _names(partitions))
        if self.failure is None:
            try:
                failpoint("rebalance.on_revoke")
                self._checkpoint()
            except BaseException as exc:  # noqa: BLE001 - recorded, re-raised by the loop
                self._fail(exc)
        self._release(partitions, discard=self.failure is not None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions were taken away without a chance to commit (session expired).

        At-least-once: only the lost partitions' uncommitted state is dropped. Exactly-once: the
        open transaction spans every partition, so it is aborted, every partition's uncommitted
        state is dropped and the partitions kept are rewound to their committed offsets.
        """
        log.warning("lost %s: discarding their uncommitted state", _names(partitions))
        if not (self.exactly_once and self._in_transaction):
            self._release(partitions, discard=True)
            return
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._in_transaction = False
        self._since_checkpoint, self._effects = 0, False
        try:
            kept = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in lost]
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised by the loop
            self._fail(exc)
            kept = []
        self._release(partitions + kept, discard=True)
        try:
            self.producer.abort_transaction(self._timeout)
            self.assignments.add(kept, rewind=True)
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised by the loop
            self._fail(exc)

    def _release(self, partitions: list[TopicPartition], discard: bool) -> None:
        try:
            self.assignments.release(partitions, discard=discard)
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised by the loop
            self._fail(exc)

    # --- setup ------------------------------------------------------------------------------

    def _prepare_topics(self) -> None:
        """Check sources and co-partitioning; create outputs and internal topics."""
        admin = self._admin = AdminClient(self.settings.kafka_client_config())
        external = [t for t, spec in self.topology.sources.items() if not spec.internal]
        outputs = [t for t in self.topology.outputs if t not in self.physical.values()]
        globals_ = list(self.topology.global_tables)
        must_exist = external + globals_ + ([] if self.settings.auto_create_topics else outputs)
        existing = topics.partition_counts(admin, required=must_exist)
        counts = topics.check_sources(existing, external)
        self._global_counts = topics.check_sources(existing, globals_)
        groups = self.topology.copartition_groups()
        topics.check_copartitioned(groups, counts)
        count = max(counts.values())
        replication = self.settings.internal_replication_factor
        topics.ensure_topics(
            admin, {t: count for t in outputs}, existing, consumer=self.consumer,
            replication_factor=replication, create=self.settings.auto_create_topics,
        )
        ensure_dlq_topic(admin, self.dead_letters.topic, replication_factor=replication)
        self.dead_letters.max_message_bytes = dlq_size_limit(
            admin, self.dead_letters.topic, clients.producer_config(self.settings, self.options)
        )
        internal = {self.physical[t]: topics.internal_count(t, groups, counts, count)
                    for t, spec in self.topology.sources.items() if spec.internal}
        topics.ensure_topics(admin, internal, existing,
                             consumer=self.consumer, replication_factor=replication,
                             config=topics.REPARTITION_TOPIC_CONFIG, kind="repartition")
        if self.changelogs:
            ensure_changelog_topics(admin, {t: count for t in self.changelogs.values()},
                                    replication_factor=replication)

    def _decoder(self, topic: str) -> BatchDecoder:
        decoder = self._decoders.get(topic)
        if decoder is None:
            spec = self.topology.decoding_spec(topic)
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

    def _close(self) -> None:
        """Release everything; each step runs even if an earlier one failed, and a failure here
        fails the worker (``run`` then raises)."""
        steps = [
            ("close the consumer", self._close_consumer),
            ("flush the producer", self._flush_or_purge),
            *((f"close sink {type(sink).__name__}", sink.close) for sink in self.topology.sinks),
            ("close the restorer", self.restorer.close),
            ("close the global tables", self.global_tables.close),
            ("close the stores", self.stores.close_all),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - every step must run; the first failure counts
                log.warning("could not %s: %s", what, exc)
                self._fail(exc)

    def _close_consumer(self) -> None:
        try:
            self.consumer.close()  # runs on_revoke: its checkpoint (a failed worker only releases)
        except KafkaException as exc:  # leaving the group failed: the session expiry does it
            log.warning("consumer close: %s", exc)

    def _flush_or_purge(self) -> None:
        if self.failure is None:
            self.producer.flush(10)
        else:
            self.producer.purge()


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
