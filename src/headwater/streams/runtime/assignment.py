"""Assigned partitions on their way to processing, and back out.

A newly assigned partition is paused at once (inside the assign callback, which does nothing
else). The worker's poll loop then opens its task's stores (retrying while another process, the
partition's previous owner, still holds a store's RocksDB lock), restores them a bounded step at
a time (:class:`ChangelogRestorer`, so a
long restore never blocks the group protocol), reads the committed offset and metadata, hands
the task to the batch context (``assign_tasks``: stream time, checkpoint sequence, sink
recovery), and resumes the partition. Records of a partition still pending are held back
(``hold_back``) and fetched again once it resumes. Revoked or lost partitions leave in one call: restore
cancelled, tasks released (discarding uncommitted changes when asked), stores closed.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import (
    OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition,
)

from headwater.state.errors import StateError, StoreLocked
from headwater.state.manager import StateManager
from headwater.state.restorer import ChangelogRestorer
from headwater.streams.batch import BatchContext
from headwater.streams.task import Committed
from headwater.streams.topology import Topology

log = logging.getLogger("headwater.worker")

RESTORE_STEP_RECORDS = 20_000


class Assignments:
    """The worker's partitions between assignment and processing (see the module docstring).

    Args:
        consumer: the worker's consumer (pause, resume, seek, committed offsets).
        context: the batch context that owns tasks.
        restorer: restores store partitions from their changelogs.
        stores: the worker's state manager (closes released stores).
        changelogs: store name -> changelog topic.
        logical: physical topic -> logical topic of the topology.
        auto_offset_reset: where a partition without a committed offset starts after a rewind.
        timeout_s: for committed-offset lookups, and how long a store may stay locked by
            another process before the worker fails.
    """

    def __init__(
        self,
        consumer: Consumer,
        context: BatchContext,
        restorer: ChangelogRestorer,
        stores: StateManager,
        changelogs: dict[str, str],
        logical: dict[str, str],
        auto_offset_reset: str,
        timeout_s: float,
    ) -> None:
        self.consumer, self.context, self.restorer = consumer, context, restorer
        self.stores, self.changelogs, self.logical = stores, changelogs, logical
        self.topology: Topology = context.topology
        self.reset = OFFSET_BEGINNING if auto_offset_reset == "earliest" else OFFSET_END
        self.timeout_s = timeout_s
        self.pending: list[TopicPartition] = []
        self._rewind: set[tuple[str, int]] = set()
        self._restoring: set[tuple[str, int]] = set()  # (store, partition) queued in the restorer
        self._to_open: dict[tuple[str, int], float] = {}  # (store, partition) -> first attempt
        self.resumed_at = 0.0  # monotonic time partitions were last resumed (idle counts from it)

    def add(self, partitions: list[TopicPartition], rewind: bool = False) -> None:
        """Pause ``partitions`` until their tasks are ready; ``rewind`` seeks them back to the
        committed offset first (their uncommitted progress was aborted)."""
        if not partitions:
            return
        self.consumer.pause(partitions)
        for tp in partitions:
            logical = self.logical[tp.topic]
            for store in self.topology.stores_of(self.topology.subtopology_of(logical)):
                key = (store.name, tp.partition)
                if key not in self._restoring and key not in self._to_open:
                    self._to_open[key] = 0.0
            if rewind:
                self._rewind.add((tp.topic, tp.partition))
        self.pending.extend(partitions)

    def _open_stores(self) -> None:
        """Open and queue for restore every store added since; a store still locked by another
        process is retried on the next step until ``timeout_s`` has passed."""
        specs = {s.name: s for s in self.topology.stores}
        now = time.monotonic()
        for (name, partition), first in list(self._to_open.items()):
            try:
                self.restorer.add(name, partition, self.changelogs[name],
                                  ttl_ms=specs[name].ttl_ms)
            except StoreLocked as exc:
                if not first:
                    self._to_open[(name, partition)] = now
                    log.info("store %s[%d] is still locked (its previous owner is closing it); "
                             "retrying", name, partition)
                elif now - first > self.timeout_s:
                    raise StateError(
                        f"still locked after {self.timeout_s:.0f}s: {exc.reason}",
                        store=name, partition=partition, path=exc.path,
                    ) from exc
                continue
            del self._to_open[(name, partition)]
            self._restoring.add((name, partition))

    def step(self) -> None:
        """Restore a step; hand every partition whose stores are current to the context."""
        if not self.pending:
            return
        if self._to_open:
            self._open_stores()
        self.restorer.step(RESTORE_STEP_RECORDS)
        restoring = self.restorer.pending() | {p for _, p in self._to_open}
        ready = [tp for tp in self.pending if tp.partition not in restoring]
        self._restoring = {k for k in self._restoring if k[1] in restoring}
        if not ready:
            return
        self.pending = [tp for tp in self.pending if tp.partition in restoring]
        committed = self.consumer.committed(
            [TopicPartition(tp.topic, tp.partition) for tp in ready], timeout=self.timeout_s
        )
        failed = [c for c in committed if c.error is not None]
        if failed:
            raise KafkaException(failed[0].error)  # transient or not: the worker restarts
        self.context.assign_tasks(
            [(self.logical[tp.topic], tp.partition) for tp in ready],
            {(self.logical[c.topic], c.partition): Committed(c.offset, c.metadata)
             for c in committed if c.offset >= 0},
        )
        for c in committed:
            if (c.topic, c.partition) in self._rewind:
                self._rewind.discard((c.topic, c.partition))
                self.consumer.seek(TopicPartition(
                    c.topic, c.partition, c.offset if c.offset >= 0 else self.reset))
        self.consumer.resume(ready)
        self.resumed_at = time.monotonic()
        log.info("processing %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in ready))

    def hold_back(self, messages: list) -> list:
        """``messages`` without those of partitions still pending (their tasks are not ready);
        each such partition is sought back to its first held-back offset so nothing is skipped
        (a partition to be rewound is sought to its committed offset by :meth:`step`)."""
        pending = {(tp.topic, tp.partition) for tp in self.pending}
        kept, first = [], {}
        for msg in messages:
            key = (msg.topic(), msg.partition())
            if key in pending and msg.error() is None:
                first.setdefault(key, msg.offset())
            else:
                kept.append(msg)
        for (topic, partition), offset in first.items():
            log.debug("held back %s[%d] from offset %d until its task is ready",
                      topic, partition, offset)
            if (topic, partition) not in self._rewind:
                self.consumer.seek(TopicPartition(topic, partition, offset))
        return kept

    def release(self, partitions: list[TopicPartition], discard: bool) -> None:
        """Stop owning ``partitions``: cancel their restore, release their tasks (dropping
        uncommitted changes when ``discard``), close their stores."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.pending = [tp for tp in self.pending if (tp.topic, tp.partition) not in gone]
        self._rewind -= gone
        for partition in {p for _, p in gone} - {tp.partition for tp in self.pending}:
            self.restorer.remove_partition(partition)
            self._restoring = {k for k in self._restoring if k[1] != partition}
            self._to_open = {k: v for k, v in self._to_open.items() if k[1] != partition}
        tasks = self.context.tasks_for([(self.logical[t], p) for t, p in gone])
        for store, partition in self.context.release_tasks(tasks, discard=discard):
            self.stores.close(store, partition)
