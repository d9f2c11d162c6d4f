"""The topology DSL: declare sources and operators once; compile to a plan run per batch.

Example::

    import polars as pl
    from headwater.streams import Topology, agg

    topology = Topology("order-stats")
    orders = topology.source("events.order.created", value_format="avro")
    big = orders.filter(pl.col("data").struct.field("payload").struct.field("totalAmount") > 100)
    big.aggregate("orders-per-user", orders=agg.count()).to_topic("stats.orders-per-user")

Every operator takes and returns a Polars frame per micro-batch; ``map_rows``/``filter_rows`` are
the per-row Python escape hatch (slow path). Each operator may override the topology's error
policy (``on_error="dlq" | "fail" | "skip"``).

When built, a topology also knows its sub-topologies (see :mod:`headwater.streams.task`): their
source topics, stores, sinks and timer operators, which is what tasks, rebalances and the
co-partitioning check at start-up are derived from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from headwater.errors import HeadwaterError
from headwater.streams import operators as ops
from headwater.streams.aggregate import RUNNING_KINDS, Agg, Aggregate
from headwater.streams.execution import ErrorPolicy, Node
from headwater.streams.process import Process, ProcessFn
from headwater.streams.repartition import REPARTITION_SUFFIX, Repartition
from headwater.streams.sink import PlainSink, Sink, SinkOperator, as_sink
from headwater.streams.time import TimerKind, TimerOperator
from headwater.streams.windows import (
    AnyWindow,
    SessionWindow,
    SlidingWindow,
    Window,
    parse_duration,
)

ValueFormat = Literal["avro", "json", "raw"]


if TYPE_CHECKING:
    from datetime import timedelta

    from headwater.streams.interval_join import JoinHow
    from headwater.streams.joined import JoinedStream
    from headwater.streams.tables import GlobalTable, GlobalTableSpec, Table, TableSpec
    from headwater.streams.windowed import WindowedStream

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


class Stream:
    """A stream of micro-batch frames; every method adds an operator and returns its output."""

    def __init__(self, topology: Topology, node: Node | None, after_key_by: bool = False):
        self._topology = topology
        self._node = node
        self._after_key_by = after_key_by

    def _then(
        self, operator: ops.Operator, on_error: ErrorPolicy | None, *, key_by: bool = False
    ) -> Stream:
        if isinstance(operator, TimerOperator) and not operator.fires_on:
            raise TopologyError(
                f"timer operator {operator.name!r} declares no fires_on (STREAM_TIME/WALL_CLOCK)"
            )
        operator.name = self._topology._label(operator.name)
        self._topology._plan = None
        node = Node(operator, on_error)
        assert self._node is not None
        self._node.children.append(node)
        return Stream(self._topology, node, after_key_by=key_by or self._after_key_by)

    def filter(self, predicate: pl.Expr, *, name: str = "filter",
               on_error: ErrorPolicy | None = None) -> Stream:
        """Keep rows where ``predicate`` (a Polars boolean expression) holds."""
        return self._then(ops.Filter(predicate, name), on_error)

    def with_columns(self, *exprs: pl.Expr, name: str = "with_columns",
                     on_error: ErrorPolicy | None = None, **named: pl.Expr) -> Stream:
        """Add or replace columns (Polars expressions; keyword arguments name them)."""
        all_exprs = [*exprs, *(e.alias(n) for n, e in named.items())]
        return self._then(ops.WithColumns(all_exprs, name), on_error)

    def select(self, *exprs: pl.Expr | str, name: str = "select",
               on_error: ErrorPolicy | None = None, **named: pl.Expr) -> Stream:
        """Project to expressions; the metadata columns (``_key``, ``_offset``...) are kept."""
        all_exprs = [pl.col(e) if isinstance(e, str) else e for e in exprs]
        all_exprs += [e.alias(n) for n, e in named.items()]
        return self._then(ops.Select(all_exprs, name), on_error)

    def explode(self, *columns: str, name: str = "explode") -> Stream:
        """One row per element of the given list columns."""
        return self._then(ops.Explode(columns, name), None)

    def split(self, predicate: pl.Expr, *, name: str = "split") -> tuple[Stream, Stream]:
        """Branch by predicate: (rows where it holds, rows where it does not or is null)."""
        yes = self._then(ops.Filter(predicate, f"{name}.true"), None)
        no = self._then(ops.Filter(~predicate.fill_null(False), f"{name}.false"), None)
        return yes, no

    def key_by(self, key: pl.Expr | str, *, name: str = "key_by",
               on_error: ErrorPolicy | None = None) -> Stream:
        """Re-key the stream: ``_key`` becomes ``key`` (as a string).

        A stateful operator after ``key_by`` needs each key in one partition, so the stream is
        written through a repartition topic first (skipped with ``co_partitioned=True``).
        """
        expr = pl.col(key) if isinstance(key, str) else key
        return self._then(ops.KeyBy(expr, name), on_error, key_by=True)

    def map_rows(self, fn: Callable[[dict[str, Any]], dict[str, Any]], *, name: str = "map_rows",
                 on_error: ErrorPolicy | None = None) -> Stream:
        """Slow path: apply a Python function to each row (dict in, dict out)."""
        return self._then(ops.MapRows(fn, name), on_error)

    def filter_rows(self, fn: Callable[[dict[str, Any]], bool], *, name: str = "filter_rows",
                    on_error: ErrorPolicy | None = None) -> Stream:
        """Slow path: keep rows for which a Python predicate returns true."""
        return self._then(ops.FilterRows(fn, name), on_error)

    def aggregate(self, store: str, *, name: str = "aggregate", ttl_ms: int | None = None,
                  co_partitioned: bool = False, on_error: ErrorPolicy | None = None,
                  **aggs: Agg) -> Stream:
        """Keyed running aggregates (``agg.count()``, ``agg.sum``, ``agg.min``, ``agg.max``)
        kept in ``store``; the other kinds (mean, first/last, distinct counts, quantiles,
        collect, udf) are for window aggregates and raise ``TopologyError`` here.

        Emits, per batch, one row per key that changed with its updated aggregates. After
        ``key_by`` the stream first goes through a repartition topic, unless
        ``co_partitioned=True`` says the input is already partitioned by the new key.
        """
        if not aggs:
            raise TopologyError(f"aggregate {store!r} declares no aggregates")
        if any(a.kind == "mean" for a in aggs.values()):
            raise TopologyError(f"aggregate {store!r}: mean is for windows; a running aggregate "
                                "keeps sum and count")
        windowed_only = sorted({a.kind for a in aggs.values()} - RUNNING_KINDS)
        if windowed_only:
            raise TopologyError(
                f"aggregate {store!r}: {', '.join(windowed_only)} is for window aggregates "
                "(stream.window(...).aggregate); a running aggregate supports "
                f"{', '.join(sorted(RUNNING_KINDS))}")
        upstream = self._partitioned_for(store, co_partitioned)
        stream = upstream._then(Aggregate(store, aggs, name), on_error)
        self._topology._add_store(StoreSpec(store, stream._node.operator.name, ttl_ms))
        return stream

    def window(self, window: AnyWindow) -> WindowedStream:
        """Group the keyed stream into event-time windows (``tumbling(...)``, ``hopping(...)``,
        ``session(...)``, ``sliding(...)`` from :mod:`headwater.streams.windows`); the only
        thing a windowed stream does is :meth:`WindowedStream.aggregate`."""
        from headwater.streams.windowed import WindowedStream

        if not isinstance(window, Window | SessionWindow | SlidingWindow):
            raise TopologyError("window() takes tumbling(...), hopping(...), session(...) or "
                                f"sliding(...), got {window!r}")
        return WindowedStream(self, window)

    def join(self, other: Stream, *, store: str, before: str | int | timedelta = 0,
             after: str | int | timedelta = 0, grace: str | int | timedelta = 0,
             how: JoinHow = "inner", suffix: str = "_right", co_partitioned: bool = False,
             name: str = "join", on_error: ErrorPolicy | None = None) -> JoinedStream:
        """Join with ``other`` on the key within a time bound (an interval join): a record of
        this stream at ``t`` pairs with every ``other`` record of the same key whose event time
        is in ``[t - before, t + after]``; several matches give several rows.

        ``how``: ``inner``; ``left``/``right``/``outer`` also emit the unmatched records of that
        side (the other side's columns null) once stream time passes ``t + before + after +
        grace``. Output: the metadata of the record that completed the pair, ``_timestamp`` the
        later event time, this stream's columns, then ``other``'s (names already taken get
        ``suffix``). Records too late to match leave on :attr:`JoinedStream.late` (else the DLQ).
        Both streams go through repartition topics after ``key_by`` unless ``co_partitioned``;
        their topics must have equal partition counts (checked at start). State lives in
        ``store`` (see :mod:`headwater.streams.interval_join`; docs/joins.md).
        """
        from headwater.streams.joined import join_streams

        return join_streams(self, other, store=store, before=before, after=after, grace=grace,
                            how=how, suffix=suffix, co_partitioned=co_partitioned, name=name,
                            on_error=on_error)

    def process(self, fn: ProcessFn, *, store: str, name: str = "process",
                ttl_ms: int | None = None, co_partitioned: bool = False,
                on_error: ErrorPolicy | None = None) -> Stream:
        """Slow path: per key, ``fn(key, rows, state) -> (new_state, output_rows)`` in Python.

        ``state`` is any JSON-serializable value (``None`` for a new key); returning ``None`` as
        the new state deletes it.
        """
        upstream = self._partitioned_for(store, co_partitioned)
        stream = upstream._then(Process(fn, store, name), on_error)
        self._topology._add_store(StoreSpec(store, stream._node.operator.name, ttl_ms))
        return stream

    def to_topic(self, topic: str, *, value_format: Literal["json", "avro"] = "json",
                 schema: str | None = None, subject: str | None = None,
                 name: str = "to_topic") -> None:
        """Produce every row to ``topic``: key from ``_key``, value as JSON or Avro.

        Avro needs the writer ``schema`` (JSON text); it is registered under ``subject``
        (default ``<topic>-value``) and the frame is encoded column-wise.
        """
        if value_format == "avro" and not schema:
            raise TopologyError(f"to_topic({topic!r}): value_format='avro' needs a schema")
        self._then(ops.ToTopic(topic, value_format, schema, subject, name), None)
        self._topology._outputs.append(topic)

    def sink(self, sink: Sink | PlainSink, *, name: str = "sink") -> None:
        """Hand every batch to ``sink``, per task; it commits in two phases with each checkpoint
        (see :mod:`headwater.streams.sink`). A plain sink (``write(frame)``, ``flush()``,
        ``close()``) is flushed at each checkpoint before the Kafka commit."""
        given = sink
        sink = next((s for s in self._topology._plain if s[0] is given), (given, as_sink(given)))[1]
        if sink is None:
            raise TopologyError(
                f"{type(given).__name__} is not a Sink (implement the two-phase protocol of "
                "headwater.streams.sink, or write/flush/close)"
            )
        if sink is not given:
            self._topology._plain.append((given, sink))
        self._then(SinkOperator(sink, name), None)
        if not any(s is sink for s in self._topology._sinks):
            self._topology._sinks.append(sink)

    def to_table(self, store: str, *, name: str = "to_table") -> Table:
        """The latest row per key (``_key``) of this stream as a table kept in ``store`` (see
        :func:`headwater.streams.tables.stream_to_table`); after ``key_by`` the stream goes
        through a repartition topic first."""
        from headwater.streams.tables import stream_to_table

        return stream_to_table(self, store, name)

    def join_table(self, table: Table | GlobalTable, *, on: str | pl.Expr | None = None,
                   how: Literal["inner", "left"] = "left",
                   as_of: Literal["latest", "event_time"] = "latest", suffix: str = "_right",
                   name: str = "join_table", on_error: ErrorPolicy | None = None) -> Stream:
        """Enrich every row with the table's value for its lookup key (see
        :func:`headwater.streams.table_join.join_table` and docs/joins.md)."""
        from headwater.streams.table_join import join_table

        return join_table(self, table, on=on, how=how, as_of=as_of, suffix=suffix, name=name,
                          on_error=on_error)

    def apply(self, operator: ops.Operator, *, co_partitioned: bool = False,
              on_error: ErrorPolicy | None = None) -> Stream:
        """Append a custom operator (the extension point for engine features and tests).

        Its stores (``operator.store_names()``) are declared like ``aggregate``'s, so after
        ``key_by`` the stream goes through a repartition topic first unless ``co_partitioned``.
        A :class:`~headwater.streams.time.TimerOperator` must declare ``fires_on``.
        """
        stores = operator.store_names()
        upstream = self._partitioned_for(stores[0], co_partitioned) if stores else self
        stream = upstream._then(operator, on_error)
        for store in stores:
            self._topology._add_store(StoreSpec(store, operator.name))
        return stream

    def _partitioned_for(self, store: str, co_partitioned: bool) -> Stream:
        """This stream, or (after key_by) the internal source reading its repartition topic."""
        if not self._after_key_by or co_partitioned:
            return self
        self._then(Repartition(store, f"repartition:{store}"), None)
        return self._topology._internal_source(f"{store}{REPARTITION_SUFFIX}")


@dataclass
class Topology:
    """A named set of sources and operator graphs.

    Args:
        name: a label for logs and metrics (the consumer group is the ``application_id`` setting).
        on_error: the default error policy for operators (``dlq``, ``fail`` or ``skip``).
        idle_timeout: after this long (``"30s"``, ms as an int) without records on a task that
            has read all its input, the task's stream time follows the wall clock, so windows
            and other stream-time timers close on quiet streams; ``None`` turns it off (stream
            time then moves only with records, as in Kafka Streams).
    """

    name: str
    on_error: ErrorPolicy = "dlq"
    idle_timeout: int | str | None = "30s"
    _roots: dict[str, tuple[SourceSpec, Node]] = field(default_factory=dict)
    _stores: dict[str, StoreSpec] = field(default_factory=dict)
    _outputs: list[str] = field(default_factory=list)
    _sinks: list[Sink] = field(default_factory=list)
    _labels: set[str] = field(default_factory=set)
    _event_time: dict[str, pl.Expr] = field(default_factory=dict)
    _joined: list[tuple[str, ...]] = field(default_factory=list)
    _tables: dict[str, TableSpec] = field(default_factory=dict)
    _globals: dict[str, GlobalTableSpec] = field(default_factory=dict)
    _plain: list[tuple[PlainSink, Sink]] = field(default_factory=list)
    _plan: list[SubTopology] | None = field(default=None, repr=False)

    def source(self, topic: str, *, value_format: ValueFormat = "avro",
               reader_schema: str | None = None, event_time: str | pl.Expr | None = None) -> Stream:
        """Declare an input topic; its batches are decoded into frames.

        Args:
            topic: the Kafka topic.
            value_format: ``avro`` (Confluent wire format through the registry, optionally
                resolved to ``reader_schema``), ``json`` (one JSON object per value) or ``raw``
                (a ``value`` binary column).
            reader_schema: the Avro schema records are resolved to (default: the subject's latest).
            event_time: a column name or expression giving each record's event time (epoch ms
                or a datetime), e.g. ``"timestamp"`` for the domain envelope. It replaces the
                ``_timestamp`` column right after decoding; rows where it is null keep the Kafka
                record timestamp. Default: the Kafka record timestamp.
        """
        stream = self._add_source(SourceSpec(topic, value_format, reader_schema))
        if event_time is not None:
            expr = pl.col(event_time) if isinstance(event_time, str) else event_time
            self._event_time[topic] = expr
        return stream

    def table(self, topic: str, *, store: str, value_format: ValueFormat = "avro",
              reader_schema: str | None = None, versioned: str | int | None = None,
              event_time: str | pl.Expr | None = None) -> Table:
        """Declare a table materialized from a (compacted) topic: latest value per record key,
        null values delete; ``versioned`` (a retention such as ``"7d"``) also keeps history for
        as-of-event-time joins. See :func:`headwater.streams.tables.declare_table`."""
        from headwater.streams.tables import declare_table

        return declare_table(self, topic, store=store, value_format=value_format,
                             reader_schema=reader_schema, versioned=versioned,
                             event_time=event_time)

    def global_table(self, topic: str, *, store: str, value_format: ValueFormat = "avro",
                     reader_schema: str | None = None) -> GlobalTable:
        """Declare a global table: every worker holds all partitions of ``topic`` (see
        :func:`headwater.streams.tables.declare_global_table`)."""
        from headwater.streams.tables import declare_global_table

        return declare_global_table(self, topic, store=store, value_format=value_format,
                                    reader_schema=reader_schema)

    @property
    def tables(self) -> dict[str, TableSpec]:
        """The tables (by store) declared with :meth:`table` and :meth:`Stream.to_table`."""
        return dict(self._tables)

    @property
    def global_tables(self) -> dict[str, GlobalTableSpec]:
        """The global tables, by topic (not sources: no task reads them)."""
        return dict(self._globals)

    def decoding_spec(self, topic: str) -> SourceSpec:
        """How the values of ``topic`` (a source or a global table's topic) are decoded.

        Raises:
            TopologyError: the topology reads no such topic.
        """
        if topic in self._roots:
            return self._roots[topic][0]
        if topic in self._globals:
            return self._globals[topic].source
        raise TopologyError(f"{topic!r} is not read by topology {self.name!r}")

    def _internal_source(self, topic: str) -> Stream:
        return self._add_source(SourceSpec(topic, "avro", internal=True))

    def _add_source(self, spec: SourceSpec) -> Stream:
        if spec.topic in self._roots or spec.topic in self._globals:
            raise TopologyError(f"topic {spec.topic!r} is declared as a source twice")
        root = Node(ops.Operator())
        root.operator.name = f"source:{spec.topic}"
        self._roots[spec.topic] = (spec, root)
        self._plan = None
        return Stream(self, root)

    @property
    def sources(self) -> dict[str, SourceSpec]:
        """Input topics and their decoding."""
        return {t: spec for t, (spec, _) in self._roots.items()}

    @property
    def stores(self) -> list[StoreSpec]:
        """State stores declared by the topology's stateful operators."""
        return list(self._stores.values())

    @property
    def outputs(self) -> list[str]:
        """Topics the topology produces to."""
        return list(self._outputs)

    @property
    def sinks(self) -> list[Sink]:
        """Sinks to flush at each checkpoint."""
        return list(self._sinks)

    def roots(self) -> Iterator[tuple[SourceSpec, list[Node]]]:
        """Each source with the operator nodes its frames feed."""
        for spec, root in self._roots.values():
            yield spec, root.children

    # --- sub-topologies and tasks -------------------------------------------------------------

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

    def __post_init__(self) -> None:
        self.idle_timeout_ms: int | None = (
            None if self.idle_timeout is None
            else parse_duration(self.idle_timeout, f"topology {self.name!r}: idle_timeout"))
        if self.idle_timeout_ms == 0:
            raise TopologyError(f"topology {self.name!r}: idle_timeout must be positive "
                                "(None turns it off)")

    def event_time_of(self, source_topic: str) -> pl.Expr | None:
        """The event-time expression a source declared (``None``: the Kafka record timestamp)."""
        return self._event_time.get(source_topic)

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

    def _add_store(self, spec: StoreSpec) -> None:
        if spec.name in self._stores:
            raise TopologyError(f"store {spec.name!r} is used by two operators")
        self._stores[spec.name] = spec
        self._plan = None

    def _label(self, base: str) -> str:
        label, n = base, 1
        while label in self._labels:
            n += 1
            label = f"{base}#{n}"
        self._labels.add(label)
        return label


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
