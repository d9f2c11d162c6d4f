"""Tasks: the unit of work, state and ownership that rebalances move between workers.

A topology splits into *sub-topologies* when it is built: a source and every operator below it,
up to a repartition boundary, is one sub-topology; the internal source reading a repartition
topic starts another. (Joins will merge the sources they join into one sub-topology, through
``Topology._copartition``.) A task is one sub-topology on one partition number: it owns the
partition-``p`` slice of that sub-topology's stores, its stream time, its timers and the data its
sinks staged. Every source topic of a sub-topology must have the same partition count
(``Topology.copartition_groups``), so partition ``p`` of each of them belongs to the same task.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True, slots=True)
class TaskId:
    """One sub-topology on one partition number (printed ``<subtopology>_<partition>``)."""

    subtopology: int
    partition: int

    def __str__(self) -> str:
        return f"{self.subtopology}_{self.partition}"


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed consumer offset (the next offset to read) and the metadata stored with it."""

    offset: int
    metadata: str | None = None


@dataclass(slots=True)
class TaskState:
    """What the engine keeps per assigned task besides its stores (internal)."""

    stream_time: int | None = None
    seq: int = 0  # checkpoints committed for this task; persisted in the offset metadata
    end: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per source tp
    first: dict[tuple[str, int], int] = field(default_factory=dict)  # first offset this interval
    heard_wall_ms: int | None = None  # wall clock when records last arrived (or assignment)
    heard_stream_time: int | None = None  # the stream time then

    def consumed(self, tp: tuple[str, int], first: int, last: int) -> None:
        self.first.setdefault(tp, first)
        self.end[tp] = max(self.end.get(tp, 0), last + 1)
