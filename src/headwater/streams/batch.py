"""One micro-batch through a topology, shared by the Kafka runtime and the in-process test driver.

:class:`BatchContext` holds what both need: per task (see :mod:`headwater.streams.task`) the
write-back caches of its stores, its stream time, its consumed offsets and its checkpoint
sequence; the map from a frame row back to its source record (for dead letters); the clock; and
the checkpoint steps on the engine side (sinks' two phases, commit offsets with metadata).
Subclasses say how records are produced and how dead letters are sent.

The worker's calls, in order (docs/architecture.md, "Contracts"):

- on assignment: ``assign_tasks(partitions, committed)`` (after restoring the stores);
- per batch of one source topic: ``process(spec, decoder, batch)``;
- from the loop before each checkpoint and when idle: ``punctuate(wall_ms)``;
- checkpoint: changelogs; ``prepared = pre_commit()``; flush the producer; commit
  ``prepared.offsets`` (with their metadata) in the transaction / offset commit;
  ``commit(prepared)``; flush the dirty caches. If anything fails before the commit was
  requested: ``abort(prepared)``; after it (outcome possibly unknown), neither: the sinks'
  ``recover`` settles it on the next assignment;
- on revocation (after a checkpoint): ``release_tasks(tasks_for(partitions), discard=False)``;
  when partitions are lost: ``release_tasks(tasks_for(partitions), discard=True)``; then close
  the returned store partitions.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from headwater.connectors.dlq import DeadLetter
from headwater.errors import HeadwaterError
from headwater.state.cache import WriteBackCache
from headwater.state.manager import StateManager
from headwater.streams.dead_letters import dead_letters_of, to_dead_letter
from headwater.streams.decode import BatchDecoder, JsonDecoder, RawDecoder
from headwater.streams.execution import Node, OperatorError, run_node
from headwater.streams.records import TIMESTAMP, RecordBatch
from headwater.streams.sink import (
    Checkpoint, Sink, SourceRange, Staged, TaskCommit, TaskPosition,
)
from headwater.streams.task import Committed, TaskId, TaskState
from headwater.streams.time import (
    EventTimeError, TimerKind, check_timer_rows, decode_metadata, encode_metadata, max_event_time,
    with_event_time,
)
from headwater.streams.table_join import TableLookups, TableValueError  # noqa: F401
from headwater.streams.tables import table_frame
from headwater.streams.topology import SourceSpec, Topology

TopicPartition = tuple[str, int]


class TaskError(HeadwaterError):
    """A task lifecycle call broke the contract (e.g. releasing uncheckpointed changes)."""


@dataclass
class PreparedCheckpoint:
    """The engine side of a checkpoint between ``pre_commit`` and ``commit``/``abort``.

    Attributes:
        checkpoint_id: increasing per context.
        offsets: what to commit: per (logical topic, partition) of every assigned task with a
            known position, the next offset to read and the task's metadata
            (:meth:`BatchContext.offset_metadata`).
        staged: each sink's handle from ``pre_commit``.
    """

    checkpoint_id: int
    offsets: dict[TopicPartition, Committed]
    staged: list[tuple[Sink, Staged]] = field(default_factory=list)
    _seqs: dict[TaskId, int] = field(default_factory=dict)  # before the bump, for abort


class BatchContext(TableLookups, ABC):
    """The :class:`~headwater.streams.context.ProcessingContext` base of runtime and driver
    (table lookups: :class:`~headwater.streams.table_join.TableLookups`)."""

    def __init__(
        self,
        topology: Topology,
        stores: StateManager,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topology = topology
        self.stores = stores
        self.clock = clock
        self.caches: dict[tuple[str, int], WriteBackCache] = {}
        self.tasks: dict[TaskId, TaskState] = {}
        self._ttl = {spec.name: spec.ttl_ms for spec in topology.stores}
        self._batch: RecordBatch | None = None
        self._subtopology: int | None = None
        self._wall_ms: int | None = None
        self._checkpoint_id = 0
        self.time_advanced = False
        """A stream time moved without records since the last checkpoint (must be committed)."""

    # --- ProcessingContext ------------------------------------------------------------------

    @abstractmethod
    def produce(
        self,
        topic: str,
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        timestamps_ms: Sequence[int] | None = None,
    ) -> None:
        """Queue output records."""

    @abstractmethod
    def internal_topic(self, store_name: str) -> str:
        """The physical repartition topic of a store."""

    @abstractmethod
    def send_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Deliver dead letters (to the DLQ topic, or a list in the driver)."""

    @abstractmethod
    def encode_avro(self, frame: pl.DataFrame, subject: str, schema: str) -> list[bytes]:
        """Encode the frame as Confluent-framed Avro."""

    def dead_letter(self, rows: pl.DataFrame, error: BaseException, operator: str) -> None:
        """Dead-letter the source records of ``rows`` (each sent once, even if a row repeats).

        Rows that trace to no record of the current batch (rows a timer emitted) are
        dead-lettered as themselves: key ``_key``, value the row's user columns as JSON.
        """
        letters = dead_letters_of(rows, self._batch, error, operator)
        if letters:
            self.send_dead_letters(letters)

    def state(self, store_name: str, partition: int) -> WriteBackCache:
        """The write-back cache of a store partition, opened on first use."""
        cache = self.caches.get((store_name, partition))
        if cache is None:
            store = self.stores.open(store_name, partition, ttl_ms=self._ttl.get(store_name))
            cache = self.caches[(store_name, partition)] = WriteBackCache(store)
        return cache

    def now_ms(self) -> int:
        """Processing time in epoch milliseconds."""
        return int(self.clock() * 1000)

    def task(self, partition: int) -> TaskId:
        """The task of rows from ``partition`` in the batch or timer call being processed."""
        if self._subtopology is None:
            raise TaskError("task() is only defined while a batch or a timer is processed")
        return TaskId(self._subtopology, partition)

    def stream_time(self, task: TaskId) -> int | None:
        """The task's stream time (max event time seen); ``None`` before its first record.
        During a batch it is the value before the batch; it advances right after it."""
        state = self.tasks.get(task)
        return None if state is None else state.stream_time

    def source_topic_of(self, task: TaskId) -> str:
        """The first (logical) source topic of the task's sub-topology."""
        return self.topology.source_topics_of(task.subtopology)[0]

    # --- batch processing -------------------------------------------------------------------

    def process(self, spec: SourceSpec, decoder: BatchDecoder, batch: RecordBatch) -> None:
        """Decode a batch of one source topic, run it through the topology, advance the stream
        time of its tasks and fire their stream-time timers."""
        sub = self.topology.subtopology_of(spec.topic)
        self._track_offsets(sub, spec.topic, batch)
        self._batch, self._subtopology = batch, sub
        try:
            if spec.table is not None:  # upserts/deletes of a table's store (tombstones too)
                frame = table_frame(self, spec, decoder, batch)
            else:
                frame, rejected = decoder.decode(batch)
                if rejected:
                    self.send_dead_letters(
                        [to_dead_letter(batch.record(r.index), r.error, "decode")
                         for r in rejected])
                frame = self.timed(spec, frame)
            maxima = max_event_time(frame, pl.col(TIMESTAMP))
            for node in self.topology_children(spec.topic):
                run_node(node, frame, self, self.topology.on_error)
        finally:
            self._batch = self._subtopology = None
        advanced = []
        wall = self.now_ms()
        for partition, event_time in maxima:
            state = self.tasks[TaskId(sub, partition)]
            if state.stream_time is None or event_time > state.stream_time:
                state.stream_time = event_time
                advanced.append(TaskId(sub, partition))
            state.heard_wall_ms, state.heard_stream_time = wall, state.stream_time
        timers = self.topology.timers_of(sub, TimerKind.STREAM_TIME)
        if timers:
            for task in advanced:
                self._fire(task, timers, wall)

    def timed(self, spec: SourceSpec, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with the source's ``event_time`` in ``_timestamp`` (unchanged without
        one); rows whose event time is invalid are dead-lettered and left out."""
        event_time = self.topology.event_time_of(spec.topic)
        if event_time is None:
            return frame
        frame, untimed = with_event_time(frame, event_time, spec.topic,
                                         missing_is_null=spec.value_format != "avro")
        if untimed.height:
            self.dead_letter(untimed, EventTimeError(
                f"event time ({event_time}) is neither epoch milliseconds nor a datetime; "
                "convert it in the source's event_time expression"), "event_time")
        return frame

    def punctuate(self, wall_ms: int | None = None) -> None:
        """Fire the wall-clock timers of every assigned task, if ``wall_ms`` (default: now) is
        later than at the last call, then advance the stream time of idle tasks (see
        :meth:`advance_idle`). Rows they emit are processed at once (open transaction)."""
        wall = self.now_ms() if wall_ms is None else wall_ms
        if self._wall_ms is not None and wall <= self._wall_ms:
            return
        self._wall_ms = wall
        for task in sorted(self.tasks):
            timers = self.topology.timers_of(task.subtopology, TimerKind.WALL_CLOCK)
            if timers:
                self._fire(task, timers, wall)
        self.advance_idle(wall)

    def advance_idle(self, wall_ms: int) -> None:
        """Idle tasks' stream time follows the wall clock, so windows close on quiet streams.

        A task is idle when no record arrived for ``topology.idle_timeout_ms`` of wall-clock
        time and it has read everything its partitions hold (:meth:`caught_up`). Its stream time
        then becomes the stream time it had when records last arrived plus the wall-clock time
        since, and its stream-time timers fire. The advance is committed with the offsets like
        any stream time, so a restart never moves it back.
        """
        idle_ms = self.topology.idle_timeout_ms
        timers_of = self.topology.timers_of
        if idle_ms is None:
            return
        for task, state in sorted(self.tasks.items()):
            heard, base = state.heard_wall_ms, state.heard_stream_time
            if heard is None or base is None or wall_ms - heard < idle_ms:
                continue
            target = base + (wall_ms - heard)
            if (target <= (state.stream_time or 0) or self._fed_by_repartition(task.subtopology)
                    or not self.caught_up(task)):
                continue
            state.stream_time = target
            self.time_advanced = True
            timers = timers_of(task.subtopology, TimerKind.STREAM_TIME)
            if timers:
                self._fire(task, timers, wall_ms)

    def _fed_by_repartition(self, subtopology: int) -> bool:
        """Whether a sub-topology reads a repartition topic: its upstream may still be behind
        (a dead worker, an open transaction), so a quiet partition there proves nothing."""
        sources = self.topology.sources
        return any(sources[t].internal for t in self.topology.source_topics_of(subtopology))

    def caught_up(self, task: TaskId) -> bool:
        """Whether ``task`` has read every record its partitions hold (the driver: always)."""
        return True

    def _fire(self, task: TaskId, nodes: list[Node], wall_ms: int) -> None:
        self._subtopology = task.subtopology
        try:
            for node in nodes:
                op = node.operator
                try:
                    rows = op.on_time(self, task, self.stream_time(task), wall_ms)  # type: ignore[attr-defined]
                except Exception as exc:  # noqa: BLE001 - no source rows to isolate: stop
                    raise OperatorError(f"{op.name}.on_time", None, None, exc) from exc
                if rows is None or rows.height == 0:
                    continue
                rows = check_timer_rows(rows, task, op.name)
                for child in node.children:
                    run_node(child, rows, self, self.topology.on_error)
        finally:
            self._subtopology = None

    def _track_offsets(self, sub: int, topic: str, batch: RecordBatch) -> None:
        if not len(batch):
            return
        partitions = np.asarray(batch.partitions)
        offsets = np.asarray(batch.offsets, dtype=np.int64)
        for p in np.unique(partitions):
            picked = offsets[partitions == p]
            task = TaskId(sub, int(p))
            state = self.tasks.get(task)
            if state is None:
                raise TaskError(f"records of {topic}[{int(p)}] arrived before its task {task} "
                                "was assigned (assign_tasks)")
            state.consumed((topic, int(p)), int(picked.min()), int(picked.max()))

    def topology_children(self, topic: str) -> list:
        """The operator nodes fed by a source topic."""
        for spec, children in self.topology.roots():
            if spec.topic == topic:
                return children
        raise KeyError(topic)

    def dirty_caches(self) -> Iterable[tuple[tuple[str, int], WriteBackCache]]:
        """Caches holding changes not yet checkpointed."""
        return ((k, c) for k, c in self.caches.items() if c.dirty())

    # --- tasks ------------------------------------------------------------------------------

    def tasks_for(self, partitions: Iterable[TopicPartition]) -> set[TaskId]:
        """The tasks of (logical topic, partition) pairs; a task is in the result if any of its
        source partitions is."""
        return {TaskId(self.topology.subtopology_of(t), p) for t, p in partitions}

    def partitions_of(self, task: TaskId) -> list[TopicPartition]:
        """The (logical topic, partition) pairs a task consumes."""
        return [(t, task.partition) for t in self.topology.source_topics_of(task.subtopology)]

    def assign_tasks(
        self, partitions: Iterable[TopicPartition], committed: Mapping[TopicPartition, Committed]
    ) -> set[TaskId]:
        """Take over the tasks of ``partitions`` (logical names); returns them.

        ``committed`` holds the committed offsets and metadata of the partitions (those never
        committed may be absent). Restores each new task's stream time and checkpoint sequence
        from the metadata, then calls ``on_assign`` and ``recover`` on its sinks. Call it after
        the stores are restored and before processing the tasks' records. Tasks already
        assigned are left alone.
        """
        new = self.tasks_for(partitions) - set(self.tasks)
        commits = {}
        for task in sorted(new):
            state = self.tasks[task] = TaskState()
            offsets = {}
            seqs: list[int | None] = []
            for tp in self.partitions_of(task):
                c = committed.get(tp)
                if c is None or c.offset < 0:
                    continue
                offsets[tp] = state.end[tp] = c.offset
                self.restore_time(task, c.metadata)
                seqs.append(decode_metadata(c.metadata)[1])
            known = [s for s in seqs if s is not None]  # partitions never committed have none
            seq = min(known) if known else None
            state.seq = seq or 0
            state.heard_wall_ms, state.heard_stream_time = self.now_ms(), state.stream_time
            commits[task] = TaskCommit(seq, offsets)
        for sink, tasks in self._sink_tasks(new):
            sink.on_assign(tasks)
            for task in sorted(tasks):
                sink.recover(task, commits[task])
        return new

    def release_tasks(self, tasks: Set[TaskId], discard: bool) -> list[tuple[str, int]]:
        """Stop owning ``tasks``: drop their caches, stream time, offsets and sink buffers
        (``on_lost`` to sinks when ``discard``, ``on_revoke`` otherwise).

        Returns the (store, partition) pairs of their stores, for the worker to close.

        Raises:
            TaskError: ``discard`` is false but a task has changes not yet checkpointed (the
                worker must checkpoint before a clean release); nothing is released then.
        """
        keys = [(spec.name, t.partition) for t in sorted(tasks)
                for spec in self.topology.stores_of(t.subtopology)]
        if not discard:
            dirty = [k for k in keys if k in self.caches and self.caches[k].dirty()]
            if dirty:
                raise TaskError(f"releasing tasks with uncheckpointed changes in {dirty}")
        for key in keys:
            cache = self.caches.pop(key, None)
            if cache is not None:
                cache.discard()
        for task in tasks:
            self.tasks.pop(task, None)
        for sink, owned in self._sink_tasks(tasks):
            (sink.on_lost if discard else sink.on_revoke)(owned)
        return keys

    def offset_metadata(self, task: TaskId) -> str:
        """The metadata to commit with each source offset of ``task``: JSON
        ``{"st": <stream time ms>, "cs": <checkpoint seq>}`` (``st`` absent before any record).
        ``pre_commit`` already puts it into ``PreparedCheckpoint.offsets``.

        Raises:
            TaskError: the task is not assigned.
        """
        state = self._assigned(task)
        return encode_metadata(state.stream_time, state.seq)

    def restore_time(self, task: TaskId, metadata: str | None) -> None:
        """Restore the stream time committed in ``metadata`` into an assigned task (the max
        with its current value; a no-op for metadata that is absent or not ours).
        ``assign_tasks`` calls it; call it directly only to restore a task assigned already.

        Raises:
            TaskError: the task is not assigned.
        """
        state = self._assigned(task)
        stream_time, _ = decode_metadata(metadata)
        if stream_time is not None and (state.stream_time is None or stream_time > state.stream_time):
            state.stream_time = stream_time

    def _assigned(self, task: TaskId) -> TaskState:
        state = self.tasks.get(task)
        if state is None:
            raise TaskError(f"task {task} is not assigned")
        return state

    def _sink_tasks(self, tasks: Iterable[TaskId]) -> list[tuple[Sink, set[TaskId]]]:
        out: list[tuple[Sink, set[TaskId]]] = []
        for task in tasks:
            for sink in self.topology.sinks_of(task.subtopology):
                entry = next((e for e in out if e[0] is sink), None)
                if entry is None:
                    out.append((sink, {task}))
                else:
                    entry[1].add(task)
        return out

    # --- checkpoint (engine side) -----------------------------------------------------------

    def pre_commit(self) -> PreparedCheckpoint:
        """Checkpoint step 1: bump every assigned task's checkpoint sequence, have each sink
        stage its data durably (``Sink.pre_commit``), and say which offsets and metadata to
        commit. If a sink fails, the sinks staged so far are aborted and the error raised."""
        self._checkpoint_id += 1
        self.time_advanced = False
        prepared = PreparedCheckpoint(self._checkpoint_id, {})
        positions = {}
        for task, state in sorted(self.tasks.items()):
            prepared._seqs[task] = state.seq
            state.seq += 1
            ranges = tuple(SourceRange(t, p, state.first.get((t, p), end), end)
                           for (t, p), end in sorted(state.end.items()))
            positions[task] = TaskPosition(state.seq, ranges)
            metadata = encode_metadata(state.stream_time, state.seq)
            for tp, end in state.end.items():
                prepared.offsets[tp] = Committed(end, metadata)
        checkpoint = Checkpoint(prepared.checkpoint_id, positions)
        try:
            for sink in self.topology.sinks:
                prepared.staged.append((sink, sink.pre_commit(checkpoint)))
        except BaseException:
            self.abort(prepared)
            raise
        return prepared

    def commit(self, prepared: PreparedCheckpoint) -> None:
        """Checkpoint step 3 (after the Kafka commit succeeded): publish what the sinks staged
        and start the next interval's offset ranges. The worker then flushes the caches."""
        for sink, staged in prepared.staged:
            sink.commit(staged)
        for state in self.tasks.values():
            state.first.clear()

    def abort(self, prepared: PreparedCheckpoint | None) -> None:
        """The checkpoint failed before its Kafka commit was requested (or a sink's
        ``pre_commit`` failed): discard what the sinks staged and restore the tasks' checkpoint
        sequences. Never call it once the commit was requested: if that commit did succeed,
        the staged data belongs to it (``Sink.recover`` publishes it)."""
        if prepared is None:
            for sink in self.topology.sinks:
                sink.abort(None)
            return
        for sink, staged in prepared.staged:
            sink.abort(staged)
        for task, seq in prepared._seqs.items():
            if task in self.tasks:
                self.tasks[task].seq = seq


def plain_decoder(spec: SourceSpec) -> BatchDecoder:
    """The decoder of a JSON or raw source (Avro sources need the registry: see the runtime)."""
    if spec.value_format == "json":
        return JsonDecoder()
    if spec.value_format == "raw":
        return RawDecoder()
    raise ValueError(f"{spec.topic}: {spec.value_format} sources need a schema registry")
