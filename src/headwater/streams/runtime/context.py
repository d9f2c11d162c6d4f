"""The worker's processing context: what operators reach of the Kafka runtime.

:class:`KafkaContext` is the runtime's :class:`~headwater.streams.batch.BatchContext`: output
records and dead letters go through the worker's (transactional) producer, inside the open
checkpoint interval; repartition topics get their physical names; Avro goes through the worker's
registry-backed codec; a task is caught up when the consumer's position has reached the last
fetched high watermark of each of its partitions; global tables are the worker's reader's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl
from confluent_kafka import TopicPartition

from headwater.connectors.dlq import DeadLetter
from headwater.connectors.produce import produce as produce_retrying
from headwater.streams.batch import BatchContext
from headwater.streams.decode import BatchDecoder
from headwater.streams.repartition import REPARTITION_SUFFIX
from headwater.streams.tables import GlobalStore
from headwater.streams.task import TaskId

if TYPE_CHECKING:
    from headwater.streams.runtime.worker import Worker


class KafkaContext(BatchContext):
    """The :class:`BatchContext` of a :class:`~headwater.streams.runtime.worker.Worker`."""

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
        produce, callback = producer.produce, worker.tracker.report
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
