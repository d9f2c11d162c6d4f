"""The plan of a topology: its sub-topologies, computed from the declared operator trees.

A sub-topology is a set of sources processed together (one source, or the sources a join merged
through ``Topology._copartition``) and everything below them up to repartition boundaries (see
:mod:`headwater.streams.task`). :class:`TopologyPlan` is the part of
:class:`~headwater.streams.topology.Topology` that computes it when first needed (any declaration
drops it: ``_plan = None``) and answers the lookups tasks, rebalances and the co-partitioning
check at start-up are derived from. The declarations the plan is made of (:class:`SourceSpec`,
:class:`StoreSpec`) and :class:`TopologyError` live here too, so the DSL
(:mod:`headwater.streams.topology`, which re-exports them) and the plan import nothing of each
other's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from headwater.errors import HeadwaterError
from headwater.streams.execution import Node
from headwater.streams.sink import Sink, SinkOperator
from headwater.streams.time import TimerKind, TimerOperator

ValueFormat = Literal["avro", "json", "raw"]


class TopologyError(HeadwaterError):
    """The topology is declared inconsistently (found when it is built or compiled)."""


@dataclass(frozen=True)
class SourceSpec:
    """An input topic and how its values are decoded.

    ``internal`` sources are repartition topics: their physical name is
    ``<application_id>-<topic>`` (see :mod:`headwater.streams.repartition`). ``table`` names the
    store of a table source (:meth:`Topology.table`): its records upsert or delete (null value)
    that store instead of flowing through operators (see :mod:`headwater.streams.tables`).
    """

    topic: str
    value_format: ValueFormat
    reader_schema: str | None = None
    internal: bool = False
    table: str | None = None


@dataclass(frozen=True)
class StoreSpec:
    """A state store declared by a stateful operator."""

    name: str
    operator: str
    ttl_ms: int | None = None


@dataclass(frozen=True, eq=False)
class SubTopology:
    """Sources processed together and everything below them up to repartition boundaries.

    Attributes:
        id: its number, in the order its first source was declared.
        source_topics: logical source topic names (internal ones included), declaration order.
        stores: the stores of its stateful operators.
        sinks: the sinks its rows reach (each once).
        timers: the nodes of its timer operators, in depth-first order.
    """

    id: int
    source_topics: tuple[str, ...]
    stores: tuple[StoreSpec, ...]
    sinks: tuple[Sink, ...]
    timers: tuple[Node, ...]

    def timers_firing_on(self, kind: TimerKind) -> list[Node]:
        """The timer nodes that ``kind`` fires."""
        return [n for n in self.timers if n.operator.fires_on & kind]  # type: ignore[attr-defined]


class TopologyPlan:
    """The sub-topologies of a :class:`~headwater.streams.topology.Topology` and their lookups
    (a base class of it: it reads the declarations the topology collects)."""

    name: str
    _roots: dict[str, tuple[SourceSpec, Node]]
    _stores: dict[str, StoreSpec]
    _joined: list[tuple[str, ...]]
    _plan: list[SubTopology] | None

    @property
    def subtopologies(self) -> list[SubTopology]:
        """The sub-topologies, numbered in the order their first source was declared."""
        if self._plan is None:
            self._plan = self._build_plan()
        return self._plan

    def subtopology_of(self, source_topic: str) -> int:
        """The sub-topology a (logical) source topic feeds.

        Raises:
            TopologyError: ``source_topic`` is not a source of this topology.
        """
        for sub in self.subtopologies:
            if source_topic in sub.source_topics:
                return sub.id
        raise TopologyError(f"{source_topic!r} is not a source of topology {self.name!r}")

    def source_topics_of(self, subtopology: int) -> list[str]:
        """The (logical) source topics of a sub-topology."""
        return list(self._sub(subtopology).source_topics)

    def stores_of(self, subtopology: int) -> list[StoreSpec]:
        """The stores of a sub-topology (each store belongs to exactly one)."""
        return list(self._sub(subtopology).stores)

    def sinks_of(self, subtopology: int) -> list[Sink]:
        """The sinks a sub-topology writes to."""
        return list(self._sub(subtopology).sinks)

    def timers_of(self, subtopology: int, kind: TimerKind) -> list[Node]:
        """The timer operator nodes of a sub-topology fired by ``kind`` (usually none)."""
        return self._sub(subtopology).timers_firing_on(kind)

    def copartition_groups(self) -> list[frozenset[str]]:
        """Source topics that must have equal partition counts: the sources of each stateful
        (store-owning) sub-topology with more than one source. The worker checks them at start;
        internal topics are named logically (``<store>-repartition``)."""
        return [frozenset(s.source_topics) for s in self.subtopologies
                if s.stores and len(s.source_topics) > 1]

    def _copartition(self, *topics: str) -> None:
        """Hook for joins: put the sub-topologies of ``topics`` together into one (their sources
        then form one task per partition and must be co-partitioned)."""
        for topic in topics:
            if topic not in self._roots:
                raise TopologyError(f"{topic!r} is not a source of topology {self.name!r}")
        self._joined.append(tuple(topics))
        self._plan = None

    def _source_of(self, node: Node | None) -> str:
        """The source topic whose tree holds ``node``."""
        for topic, (_, root) in self._roots.items():
            if _holds(root, node):
                return topic
        raise TopologyError("a stream of another topology")

    def _sub(self, subtopology: int) -> SubTopology:
        plan = self.subtopologies
        if not 0 <= subtopology < len(plan):
            raise TopologyError(f"topology {self.name!r} has no sub-topology {subtopology}")
        return plan[subtopology]

    def _build_plan(self) -> list[SubTopology]:
        group = {t: t for t in self._roots}

        def find(t: str) -> str:
            while group[t] != t:
                t = group[t]
            return t

        for joined in self._joined:
            for other in joined[1:]:
                group[find(other)] = find(joined[0])
        members: dict[str, list[str]] = {}
        for topic in self._roots:
            members.setdefault(find(topic), []).append(topic)
        plan = []
        for sub_id, topics in enumerate(members.values()):
            stores: list[StoreSpec] = []
            sinks: list[Sink] = []
            timers: list[Node] = []
            seen: set[int] = set()
            for topic in topics:
                _walk(self._roots[topic][1], self._stores, stores, sinks, timers, seen)
            plan.append(SubTopology(sub_id, tuple(topics), tuple(stores), tuple(sinks),
                                    tuple(timers)))
        return plan


def _holds(root: Node, node: Node | None) -> bool:
    pending, seen = [root], set()
    while pending:
        current = pending.pop()
        if current is node:
            return True
        if id(current) not in seen:
            seen.add(id(current))
            pending += [*current.children, *(n for side in current.side.values() for n in side)]
    return False


def _walk(node: Node, specs: dict[str, StoreSpec], stores: list[StoreSpec], sinks: list[Sink],
          timers: list[Node], seen: set[int] | None = None) -> None:
    """Collect the stores, sinks and timer nodes under ``node``; each node once (a join's two
    inputs share their output nodes)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    op = node.operator
    stores.extend(specs[n] for n in op.store_names() if n in specs and specs[n] not in stores)
    if isinstance(op, SinkOperator) and not any(s is op.sink for s in sinks):
        sinks.append(op.sink)
    if isinstance(op, TimerOperator):
        timers.append(node)
    for child in [*node.children, *(n for side in node.side.values() for n in side)]:
        _walk(child, specs, stores, sinks, timers, seen)
