"""Incremental restore of store partitions from their changelog partitions.

``ChangelogRestorer`` restores any number of store partitions with one long-lived consumer, a
bounded number of records per ``step``, so a worker can drive it from its poll loop instead of
blocking inside a rebalance callback (where a long restore would get the member kicked out of the
group). ``headwater.state.changelog.restore`` is the blocking form on top of it.

Where a store partition starts and stops (``start`` = applied changelog offset + 1, ``low`` = log
start offset, ``HW`` = high watermark, ``LSO`` = last stable offset):

- ``start > HW``: the store is ahead of its changelog, which was recreated or truncated. The store
  partition is wiped (``StateManager.drop`` + ``open``, logged as a warning) and restored from
  scratch.
- ``end`` = the LSO under ``read_committed``, else the HW, taken once when the partition starts.
  ``start >= end``: nothing to read. Under ``read_committed`` a store may legitimately be past the
  LSO (but not the HW): an open transaction (e.g. of a killed worker not fenced yet) holds the LSO
  back while the store already applied committed records after it. The store only ever holds
  committed data, so it is consistent: nothing to do.
- otherwise read from ``max(start, low)`` (``low > start`` is compaction: fine) up to ``end``,
  one ``write_batch(puts, last offset)`` per partition per step, so an interrupted restore resumes
  where it stopped. At the end the applied offset moves past trailing transaction markers too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from headwater.failpoints import failpoint
from headwater.state.errors import StateError
from headwater.state.manager import StateManager
from headwater.state.store import KeyValueStore

log = logging.getLogger(__name__)

_CONSUME_SLICE_S = 0.02

Progress = Callable[[int, int], None]
"""``progress(records applied so far, records to read estimate)`` after each applied batch."""


@dataclass(eq=False)
class _Task:
    store: KeyValueStore
    topic: str
    partition: int
    reopen: Callable[[], KeyValueStore] | None  # wipe and reopen the store; None: refuse
    progress: Progress | None = None
    end: int = -1  # stop before this offset
    position: int = -1  # next offset to read
    total: int = 0  # records to read, estimated when reading starts
    applied: int = 0
    reading: bool = False
    started: float = 0.0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def error(self, reason: str) -> StateError:
        return StateError(reason, store=self.store.name, partition=self.partition,
                          path=self.store.path, topic=self.topic)


class ChangelogRestorer:
    """Restores store partitions from their changelogs a bounded step at a time.

    One consumer (manual ``incremental_assign``, random ``group.id``, no commits) serves every
    pending store partition; it is created on the first step that has something to read.

    Args:
        consumer_config: librdkafka config (at least ``bootstrap.servers``); group, commit, offset
            reset, EOF and isolation settings are set here. Also used for one AdminClient (offset
            queries).
        read_committed: read only committed transactional records (use it with exactly-once);
            aborted records are skipped, open transactions are not waited for.
        state_manager: opens the stores, and wipes one found ahead of its changelog.
        stall_timeout_s: a step raises ``StateError`` when pending partitions have received no
            record and no end-of-partition for this long.
        progress_interval_s: how often a running restore logs its progress (records/s, remaining).
        request_timeout_s: timeout of the offset queries.
        poll_timeout_s: the longest one ``step`` waits for records.
        clock: monotonic seconds for stall detection and progress logs (tests pass a fake).
    """

    def __init__(
        self,
        consumer_config: Mapping[str, Any],
        read_committed: bool,
        state_manager: StateManager | None,
        *,
        stall_timeout_s: float = 60.0,
        progress_interval_s: float = 10.0,
        request_timeout_s: float = 30.0,
        poll_timeout_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read_committed = read_committed
        self.state_manager = state_manager
        self.stall_timeout_s = stall_timeout_s
        self.progress_interval_s = progress_interval_s
        self.request_timeout_s = request_timeout_s
        self.poll_timeout_s = poll_timeout_s
        self._clock = clock
        self._client_config = dict(consumer_config)
        self._new: list[_Task] = []
        self._reading: dict[tuple[str, int], _Task] = {}
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None
        self._last_activity = clock()
        self._logged_at = clock()
        self._applied_since_log = 0
        self._closed = False

    # --- public API ---------------------------------------------------------------------------

    def add(
        self, store_name: str, partition: int, changelog_topic: str, ttl_ms: int | None = None
    ) -> KeyValueStore:
        """Open store ``store_name`` for ``partition`` and queue its restore from changelog
        partition ``changelog_topic``/``partition``. Cheap: no broker call until ``step``.

        Returns:
            The opened store. A store found ahead of its changelog is replaced by a fresh one
            during ``step``: once ``pending()`` no longer lists the partition, get the store
            again with ``state_manager.open``.

        Raises:
            StateError: the store cannot be opened (e.g. its directory is still locked by the
                previous owner), is already being restored, or the restorer is closed.
        """
        mgr = self.state_manager
        if mgr is None:
            raise StateError("a restorer without a state manager cannot open stores",
                             store=store_name, partition=partition, topic=changelog_topic)
        store = mgr.open(store_name, partition, ttl_ms)

        def reopen() -> KeyValueStore:
            mgr.drop(store_name, partition)
            return mgr.open(store_name, partition, ttl_ms)

        self._add(_Task(store, changelog_topic, partition, reopen))
        return store

    def remove_partition(self, partition: int) -> None:
        """Stop restoring every store of ``partition`` (revoked mid-restore).

        What was applied stays (each batch is atomic with its offset); a later restore resumes
        there. The stores are not closed: ``StateManager.close_partition`` does that.
        """
        self._new = [t for t in self._new if t.partition != partition]
        gone = [t for t in self._reading.values() if t.partition == partition]
        for task in gone:
            del self._reading[(task.topic, task.partition)]
        if gone and self._consumer is not None:
            self._consumer.incremental_unassign([t.tp for t in gone])

    def step(self, max_records: int = 10_000) -> bool:
        """Restore up to ``max_records`` changelog records across the pending store partitions.

        Starts the partitions added since the last step (offset queries, wipes, assignment),
        then consumes for at most ``poll_timeout_s`` (less once the budget is used or every
        partition is done).

        Returns:
            True when nothing is pending any more.

        Raises:
            StateError: an offset query or the consumer failed, a changelog record has a null
                key, a store is ahead of its changelog and cannot be wiped, or the restore
                stalled for ``stall_timeout_s``. Nothing is lost: every partition stays pending at
                its last applied record and the consumer is rewound there, so a later ``step``
                retries (and raises again if the cause persists).
        """
        self._check_open()
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        if self._new:
            self._start()
        if self._reading:
            # Short consume calls until the budget is used, every partition is done or the poll
            # timeout passed: a partition whose tail is only markers (never delivered, so never
            # counted) then costs one short wait, not the whole timeout.
            deadline = time.monotonic() + self.poll_timeout_s
            budget, active = max_records, False
            while self._reading and budget > 0:
                left = sum(t.end - t.position for t in self._reading.values())
                wait = max(0.0, min(_CONSUME_SLICE_S, deadline - time.monotonic()))
                got = self._consume(max(1, min(budget, left)), wait)
                budget -= got
                active = active or got > 0
                if time.monotonic() >= deadline:
                    break
            self._after_consume(active)
        return not self._reading and not self._new

    def pending(self) -> set[int]:
        """Partitions with a store still restoring (or not started)."""
        return {t.partition for t in self._new} | {t.partition for t in self._reading.values()}

    def close(self) -> None:
        """Close the consumer; pending restores are abandoned (their progress is kept)."""
        if self._closed:
            return
        self._closed = True
        self._new = []
        self._reading = {}
        consumer, self._consumer = self._consumer, None
        self._admin = None
        if consumer is not None:
            consumer.close()

    def __enter__(self) -> ChangelogRestorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------

    def _add(self, task: _Task) -> None:
        self._check_open()
        key = (task.topic, task.partition)
        if key in self._reading or any(
            (t.topic, t.partition) == key for t in self._new
        ):
            raise task.error("this changelog partition is already being restored")
        self._new.append(task)

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("the changelog restorer is closed")

    def _start(self) -> None:
        """Decide and start every new task; one that raises stays queued with those after it."""
        offsets = self._offsets(self._new)
        while self._new:
            task = self._new[0]
            self._start_one(task, *offsets[(task.topic, task.partition)])
            self._new.pop(0)

    def _start_one(self, task: _Task, low: int, hw: int, lso: int) -> None:
        start = task.store.applied_changelog_offset() + 1
        if start > hw:
            if task.reopen is None:
                raise task.error(
                    f"local store applied changelog offset {start - 1} but the changelog "
                    f"ends at {hw}: the topic was recreated or truncated; drop the store "
                    "partition (StateManager.drop) and restore again"
                )
            log.warning(
                "store %s[%d] applied changelog offset %d but %s[%d] ends at %d (recreated or "
                "truncated): wiping the store partition and restoring it from scratch",
                task.store.name, task.partition, start - 1, task.topic, task.partition, hw,
            )
            task.store = task.reopen()
            start = task.store.applied_changelog_offset() + 1
        end = lso if self.read_committed else hw
        if start >= end:
            if start > end:
                log.debug("store %s[%d] applied offset %d, past the last stable offset %d "
                          "(an open transaction): nothing to read", task.store.name,
                          task.partition, start - 1, end)
            return
        task.end, task.position = end, max(start, low)
        task.total = end - task.position
        if task.position >= end:
            self._finish(task, task.position)
            return
        self._client().incremental_assign([TopicPartition(task.topic, task.partition,
                                                          task.position)])
        task.reading = True
        task.started = self._last_activity = self._clock()
        self._reading[(task.topic, task.partition)] = task

    def _offsets(self, tasks: list[_Task]) -> dict[tuple[str, int], tuple[int, int, int]]:
        """(low, high watermark, last stable offset) per task partition, three batched queries."""
        if self._admin is None:
            self._admin = AdminClient(self._client_config)
        tps = [t.tp for t in tasks]
        uncommitted = IsolationLevel.READ_UNCOMMITTED
        queries = [
            ({tp: OffsetSpec.earliest() for tp in tps}, uncommitted),
            ({tp: OffsetSpec.latest() for tp in tps}, uncommitted),
        ]
        if self.read_committed:
            queries.append(({tp: OffsetSpec.latest() for tp in tps}, IsolationLevel.READ_COMMITTED))
        futures = [
            self._admin.list_offsets(q, isolation_level=iso, request_timeout=self.request_timeout_s)
            for q, iso in queries
        ]
        results: list[dict[tuple[str, int], int]] = []
        for per_tp in futures:
            found = {}
            for tp, future in per_tp.items():
                try:
                    found[(tp.topic, tp.partition)] = future.result(
                        timeout=self.request_timeout_s
                    ).offset
                except (KafkaException, TimeoutError) as exc:
                    where = (tp.topic, tp.partition)
                    task = next(t for t in tasks if (t.topic, t.partition) == where)
                    raise task.error(f"cannot read changelog offsets: {exc}") from exc
            results.append(found)
        low, hw = results[0], results[1]
        lso = results[2] if self.read_committed else hw
        return {k: (low[k], hw[k], lso[k]) for k in low}

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer({
                # A tail of markers or aborted records ends with an EOF only after an empty fetch
                # at the end, which the broker holds for fetch.wait.max.ms (librdkafka: 500 ms).
                "fetch.wait.max.ms": 50,
                **self._client_config,
                "group.id": f"headwater-restore-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "isolation.level": "read_committed" if self.read_committed else "read_uncommitted",
            })
        return self._consumer

    def _consume(self, num_messages: int, timeout_s: float) -> int:
        """One consume call, applied; returns the number of records and EOFs handled."""
        try:
            return self._consume_once(num_messages, timeout_s)
        except BaseException:
            # Records fetched but not applied would be skipped by the next step: rewind every
            # partition to its next unapplied offset.
            consumer, tasks = self._client(), list(self._reading.values())
            if tasks:
                consumer.incremental_unassign([t.tp for t in tasks])
                consumer.incremental_assign(
                    [TopicPartition(t.topic, t.partition, t.position) for t in tasks]
                )
            raise

    def _consume_once(self, num_messages: int, timeout_s: float) -> int:
        consumer = self._client()
        reading = self._reading
        # Asking for no more than what is left lets consume() return as soon as the tails have
        # arrived instead of waiting out its timeout (EOF events count as messages too).
        msgs = consumer.consume(num_messages=num_messages, timeout=timeout_s)
        batches: dict[_Task, dict[bytes, bytes | None]] = {}
        last: dict[_Task, int] = {}
        counts: dict[_Task, int] = {}
        touched: set[_Task] = set()
        eof: dict[_Task, int] = {}
        for msg in msgs:
            task = reading.get((msg.topic(), msg.partition()))
            if task is None:
                continue  # removed or finished meanwhile
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    # The EOF's offset is the partition's end. (consumer.position() after an EOF
                    # says end + 1: it must not be used, or the applied offset passes the end.)
                    eof[task] = msg.offset()
                    touched.add(task)
                    continue
                raise task.error(f"changelog consume failed: {err}")
            offset = msg.offset()
            if offset < task.position:
                continue  # fetched before a re-assignment
            key = msg.key()
            if key is None:
                raise task.error(f"changelog record at offset {offset} has a null key")
            batches.setdefault(task, {})[key] = msg.value()
            last[task] = offset
            counts[task] = counts.get(task, 0) + 1
            touched.add(task)
        for task, puts in batches.items():
            task.store.write_batch(puts, last[task])
            task.position = last[task] + 1
            task.applied += counts[task]
            self._applied_since_log += counts[task]
            if task.progress is not None:
                task.progress(task.applied, task.total)
            failpoint("restore.after_batch")
        for task in touched:
            # Transaction markers are never delivered: only the EOF offset moves past them.
            position = max(task.position, eof.get(task, -1))
            if position >= task.end or task in eof:
                self._finish(task, position)
                del reading[(task.topic, task.partition)]
                consumer.incremental_unassign([task.tp])
        return sum(counts.values()) + len(eof)

    def _after_consume(self, active: bool) -> None:
        now = self._clock()
        reading = self._reading
        if active:
            self._last_activity = now
        elif reading and now - self._last_activity > self.stall_timeout_s:
            stuck = ", ".join(
                f"{t.store.name}[{t.partition}] at {t.position} of {t.end}"
                for t in reading.values()
            )
            task = next(iter(reading.values()))
            raise task.error(
                f"changelog restore stalled for {self.stall_timeout_s:.0f} s: {stuck}"
            )
        if reading and now - self._logged_at >= self.progress_interval_s:
            self._log_progress(now)

    def _finish(self, task: _Task, position: int) -> None:
        # Every offset below the position is applied, a transaction marker or an aborted record:
        # record that, so the next restore of a current store starts past them.
        task.reading = False
        if position - 1 > task.store.applied_changelog_offset():
            task.store.write_batch({}, position - 1)
        if task.applied:
            took = self._clock() - task.started
            log.info("restored %d record(s) of %s[%d] from %s in %.2f s", task.applied,
                     task.store.name, task.partition, task.topic, took)

    def _log_progress(self, now: float) -> None:
        rate = self._applied_since_log / max(now - self._logged_at, 1e-9)
        left = sum(t.end - t.position for t in self._reading.values())
        eta = f"~{left / rate:.0f} s" if rate > 0 else "unknown"
        log.info("restoring %d store partition(s): %.0f records/s, ~%d record(s) left (%s)",
                 len(self._reading), rate, left, eta)
        self._logged_at = now
        self._applied_since_log = 0
