"""Sinks: external side effects (lake, read models) committed in two phases with the checkpoint.

The model is the two-phase commit of Flink's ``TwoPhaseCommitSinkFunction``: a sink stages each
batch, makes the checkpoint's data durable but invisible before the Kafka commit
(``pre_commit``), and publishes it only after the Kafka commit/transaction succeeded
(``commit``). If the worker dies in between, the task's next owner decides in ``recover`` from
what the Kafka commit says: publish the staged data if the commit that covers it happened,
discard it otherwise (the records will be processed again).

Decision rule (:func:`is_committed`, the same for every sink): each staged part carries the
task's *checkpoint sequence* (``seq``: the number of checkpoints committed for the task,
stored in the offset commit's metadata) and the source offset ranges it covers. A part is
committed iff its ``seq`` is at most the committed sequence; when the commit metadata has no
sequence (offsets committed by another tool), iff every range ends at or below the committed
offset. The sequence is what makes output of wall-clock timers in an interval without new
records decidable: offsets alone cannot tell whether that interval's commit happened.

For a sink that simply flushes at each checkpoint (at-least-once: a crash between its flush and
the Kafka commit publishes the data again on replay), subclass :class:`FlushSink`; an object with
just ``write(frame)``, ``flush()`` and ``close()`` (:class:`PlainSink`, the earlier protocol) is
wrapped in one by ``Stream.sink``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import polars as pl

from headwater.errors import HeadwaterError
from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator
from headwater.streams.records import PARTITION
from headwater.streams.task import TaskId


class SinkError(HeadwaterError):
    """A sink could not stage, publish or recover data (the worker stops; nothing is lost)."""


@dataclass(frozen=True, slots=True)
class SourceRange:
    """Source records ``[first, end)`` of one partition consumed by a task in one interval
    (``first == end`` when it consumed none; ``end`` is the offset the checkpoint commits)."""

    topic: str
    partition: int
    first: int
    end: int


@dataclass(frozen=True, slots=True)
class TaskPosition:
    """A task at a checkpoint: its new checkpoint sequence and the source ranges of the interval."""

    seq: int
    ranges: tuple[SourceRange, ...]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What ``pre_commit`` is told: the checkpoint id (per worker, increasing) and every
    assigned task's position."""

    id: int
    tasks: Mapping[TaskId, TaskPosition]


@dataclass(frozen=True, slots=True)
class StagedPart:
    """Data of one task staged at one checkpoint: where it is, and what it covers."""

    task: TaskId
    seq: int
    ranges: tuple[SourceRange, ...]
    location: str


@dataclass(frozen=True, slots=True)
class Staged:
    """The handle ``pre_commit`` returns and ``commit``/``abort`` receive."""

    checkpoint_id: int
    parts: tuple[StagedPart, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskCommit:
    """What the Kafka commit says about a task at assignment (given to ``recover``).

    Attributes:
        seq: the committed checkpoint sequence of the task (``None``: the metadata had none).
        offsets: committed offsets (next offset to read) of the task's source partitions, by
            logical topic name; partitions never committed are absent.
    """

    seq: int | None
    offsets: Mapping[tuple[str, int], int]


def is_committed(part: StagedPart, committed: TaskCommit) -> bool:
    """Whether the Kafka commit covering ``part`` happened (see the module docstring). Without a
    committed sequence, a part with no source ranges (a task with no known position) is not."""
    if committed.seq is not None:
        return part.seq <= committed.seq
    return bool(part.ranges) and all(
        committed.offsets.get((r.topic, r.partition), -1) >= r.end for r in part.ranges
    )


@runtime_checkable
class Sink(Protocol):
    """An external sink taking part in checkpoints. The engine calls, per worker:

    - ``on_assign(tasks)`` then ``recover(task, committed)`` for each task, before any batch of
      those tasks;
    - ``write(task, frame)`` for every batch, per task (stage in memory; publish nothing);
    - at each checkpoint: ``pre_commit(checkpoint)`` before the Kafka commit, then
      ``commit(staged)`` after it succeeded, or ``abort(staged)`` if the checkpoint failed
      before the commit was requested (after that, a failure leaves the outcome possibly
      unknown: neither is called and the next owner's ``recover`` decides);
    - ``on_revoke(tasks)`` after the checkpoint that precedes a revocation (nothing is pending),
      ``on_lost(tasks)`` when tasks are gone without a checkpoint (drop their buffers; leave
      their staged data to the next owner's ``recover``);
    - ``close()`` when the worker stops.

    ``commit`` and ``recover`` must be idempotent: a crash may repeat them.
    """

    def on_assign(self, tasks: Set[TaskId]) -> None:
        """Tasks now owned by this worker."""

    def recover(self, task: TaskId, committed: TaskCommit) -> None:
        """Publish or discard what an earlier owner of ``task`` staged (:func:`is_committed`)."""

    def write(self, task: TaskId, frame: pl.DataFrame) -> None:
        """Stage one batch's rows of ``task`` (metadata columns included)."""

    def pre_commit(self, checkpoint: Checkpoint) -> Staged:
        """Make everything written since the last checkpoint durable but invisible."""

    def commit(self, staged: Staged) -> None:
        """Publish ``staged`` (the Kafka commit covering it succeeded). Idempotent."""

    def abort(self, staged: Staged | None) -> None:
        """Discard ``staged`` (``None``: whatever is buffered or staged by this worker)."""

    def on_revoke(self, tasks: Set[TaskId]) -> None:
        """Tasks handed over cleanly (after a checkpoint)."""

    def on_lost(self, tasks: Set[TaskId]) -> None:
        """Tasks gone without a checkpoint."""

    def close(self) -> None:
        """Release resources."""


class FlushSink(ABC):
    """Adapter for a plain sink that publishes at each checkpoint, before the Kafka commit.

    Implement :meth:`append` and :meth:`flush`. At-least-once: a crash after ``flush`` and before
    the Kafka commit replays the interval, so ``flush`` should be idempotent (upserts).
    """

    @abstractmethod
    def append(self, frame: pl.DataFrame) -> None:
        """Buffer one batch's rows."""

    @abstractmethod
    def flush(self) -> None:
        """Publish everything buffered since the last flush."""

    def write(self, task: TaskId, frame: pl.DataFrame) -> None:
        self.append(frame)

    def pre_commit(self, checkpoint: Checkpoint) -> Staged:
        self.flush()
        return Staged(checkpoint.id)

    def commit(self, staged: Staged) -> None:
        pass

    def abort(self, staged: Staged | None) -> None:
        pass

    def recover(self, task: TaskId, committed: TaskCommit) -> None:
        pass

    def on_assign(self, tasks: Set[TaskId]) -> None:
        pass

    def on_revoke(self, tasks: Set[TaskId]) -> None:
        pass

    def on_lost(self, tasks: Set[TaskId]) -> None:
        pass

    def close(self) -> None:
        pass


@runtime_checkable
class PlainSink(Protocol):
    """A sink that only buffers and flushes (the protocol before two-phase sinks)."""

    def write(self, frame: pl.DataFrame) -> None:
        """Buffer one batch."""

    def flush(self) -> None:
        """Publish what was buffered (at each checkpoint, before the Kafka commit)."""

    def close(self) -> None:
        """Release resources."""


class FlushAdapter(FlushSink):
    """A :class:`PlainSink` as a :class:`Sink` (flushed at ``pre_commit``)."""

    def __init__(self, plain: PlainSink) -> None:
        self.plain = plain

    def append(self, frame: pl.DataFrame) -> None:
        self.plain.write(frame)

    def flush(self) -> None:
        self.plain.flush()

    def close(self) -> None:
        self.plain.close()


def as_sink(candidate: object) -> Sink | None:
    """``candidate`` as a two-phase :class:`Sink` (a :class:`PlainSink` wrapped), else ``None``."""
    if isinstance(candidate, Sink):
        return candidate
    if isinstance(candidate, PlainSink):
        return FlushAdapter(candidate)
    return None


@dataclass
class SinkOperator(Operator):
    """Hands each batch to a :class:`Sink`, split by task (input partition)."""

    sink: Sink
    name: str = "sink"

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        if not frame.height:
            return frame
        if isinstance(self.sink, FlushSink) and type(self.sink).write is FlushSink.write:
            self.sink.append(frame)  # task-agnostic: no split by partition
        else:
            for (partition,), rows in frame.partition_by(PARTITION, as_dict=True).items():
                self.sink.write(ctx.task(int(partition)), rows)  # type: ignore[arg-type]
        return frame
