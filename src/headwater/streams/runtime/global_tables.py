"""The worker's reader of global tables: every partition of each global table's topic.

Each worker holds every global table whole, in a local RocksDB store
``<state_dir>/<application_id>/<store>/global-<worker id>`` (one per worker process, since
workers on one host share the state directory), wrapped in
:class:`~headwater.streams.tables.GlobalStore`: the table's values as on the topic plus, in the
same atomic write, the next offset per partition. It is not changelogged: the topic is the
source of truth, and a restarted worker resumes from the stored offsets (a lost state
directory means reading the topic again from the beginning).

- :meth:`GlobalTableReader.start` (before the worker subscribes, so before any stream record
  is processed) reads every partition to its end: the end-of-partition event, i.e. the high
  watermark, or under read_committed the last stable offset.
- :meth:`GlobalTableReader.poll` (from the worker loop, before each batch) applies what has
  arrived since, at most ``max_records`` per call, in offset order per partition.

Values are decoded once on arrival with the topic's decoder: undecodable values and keyless
records are dead-lettered (through the worker's producer) and not stored; null values delete.
No consumer group: the reader assigns partitions itself and commits nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from headwater.errors import StartupError
from headwater.state.rocksdb import RocksDBStore
from headwater.streams.decode import BatchDecoder
from headwater.streams.records import OFFSET, PARTITION, RecordBatch
from headwater.streams.tables import GlobalStore, GlobalTableSpec, table_frame

log = logging.getLogger("headwater.global_tables")


class GlobalTableError(StartupError):
    """A global table could not be restored at start (names the topic and what is missing)."""


class GlobalTableReader:
    """Reads the global tables of one worker (see the module docstring).

    Args:
        specs: the topology's global tables, by topic.
        consumer_config: librdkafka settings (bootstrap, security); group, offsets, EOF and
            isolation are set here.
        read_committed: read with ``isolation.level=read_committed``.
        store_dir: ``<state_dir>/<application_id>``.
        worker_id: names this worker's store directories.
        decoder: the decoder of a topic (the worker's source decoders).
        context: the batch context (dead letters go through it).
    """

    def __init__(self, specs: Mapping[str, GlobalTableSpec], consumer_config: dict[str, Any],
                 read_committed: bool, store_dir: Path, worker_id: int,
                 decoder: Callable[[str], BatchDecoder], context: Any) -> None:
        self.specs = dict(specs)
        self._config = {
            **consumer_config,
            "group.id": f"headwater-global-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
        self._dir, self._worker_id = store_dir, worker_id
        self._decoder, self._context = decoder, context
        self.stores: dict[str, GlobalStore] = {}
        self._consumer: Consumer | None = None
        self.applied = 0

    def store(self, topic: str) -> GlobalStore:
        """The store of the global table read from ``topic`` (opened by :meth:`start`)."""
        return self.stores[topic]

    def start(self, partition_counts: Mapping[str, int], timeout_s: float = 300.0) -> None:
        """Open the stores and read every partition to its end before returning.

        Raises:
            GlobalTableError: a partition was not read to its end within ``timeout_s``.
        """
        if not self.specs:
            return
        assignment = []
        for topic, spec in self.specs.items():
            path = self._dir / spec.store / f"global-{self._worker_id}"
            store = self.stores[topic] = GlobalStore(RocksDBStore(path, spec.store, -1))
            offsets = store.offsets
            assignment += [TopicPartition(topic, p, offsets.get(p, OFFSET_BEGINNING))
                           for p in range(partition_counts[topic])]
        self._consumer = Consumer(self._config)
        self._consumer.assign(assignment)
        pending = {(tp.topic, tp.partition) for tp in assignment}
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        while pending:
            if time.monotonic() > deadline:
                raise GlobalTableError(f"global table partitions not read to their end within "
                                       f"{timeout_s:.0f}s: {sorted(pending)}")
            pending -= self._consume(10_000, 0.2)
        log.info("global table(s) %s restored: %d record(s) in %.1fs", ", ".join(self.specs),
                 self.applied, time.monotonic() - started)

    def poll(self, max_records: int = 10_000) -> None:
        """Apply what arrived since the last call (non-blocking)."""
        if self._consumer is not None:
            self._consume(max_records, 0)

    def close(self) -> None:
        """Close the consumer and the stores."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        for store in self.stores.values():
            store.close()
        self.stores.clear()

    def _consume(self, n: int, timeout_s: float) -> set[tuple[str, int]]:
        """Consume up to ``n`` messages and apply them; returns the partitions at their end."""
        assert self._consumer is not None
        at_end: set[tuple[str, int]] = set()
        by_topic: dict[str, list] = defaultdict(list)
        for msg in self._consumer.consume(n, timeout_s):
            err = msg.error()
            if err is None:
                by_topic[msg.topic()].append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end.add((msg.topic(), msg.partition()))
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("global table reader: %s: %s", msg.topic(), err.str())
        for topic, messages in by_topic.items():
            self._apply(topic, RecordBatch.from_messages(topic, messages))
        return at_end

    def _apply(self, topic: str, batch: RecordBatch) -> None:
        spec = self.specs[topic]
        accepted = table_frame(self._context, replace(spec.source, table=spec.store),
                               self._decoder(topic), batch)
        keep = set(zip(accepted.get_column(PARTITION).to_list(),
                       accepted.get_column(OFFSET).to_list()))
        skip = {i for i, po in enumerate(zip(batch.partitions, batch.offsets)) if po not in keep}
        self.stores[topic].apply(batch.partitions, batch.offsets, batch.keys, batch.values, skip)
        self.applied += len(batch)
