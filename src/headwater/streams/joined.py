"""The DSL of stream-stream joins: :func:`join_streams` (behind :meth:`Stream.join`) and
:class:`JoinedStream` (the joined rows plus the ``late`` records). Kept apart from
:mod:`headwater.streams.topology` so each stays readable; the operator is
:mod:`headwater.streams.interval_join`."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

from headwater.streams import operators as ops
from headwater.streams.execution import ErrorPolicy, Node
from headwater.streams.interval_join import (
    IntervalJoin, JoinHow, JoinInput, JoinWindow, TimedJoinInput,
)
from headwater.streams.topology import StoreSpec, Stream, TopologyError
from headwater.streams.windows import WindowDefinitionError, parse_duration

Duration = str | int | timedelta


def join_streams(left: Stream, right: Stream, *, store: str, before: Duration, after: Duration,
                 grace: Duration, how: JoinHow, suffix: str, co_partitioned: bool, name: str,
                 on_error: ErrorPolicy | None) -> JoinedStream:
    """See :meth:`Stream.join`."""
    topology = left._topology
    if right._topology is not topology:
        raise TopologyError(f"join {store!r}: both streams must belong to one topology")
    if how not in get_args(JoinHow):
        raise TopologyError(f"join {store!r}: how must be one of {get_args(JoinHow)}, got {how!r}")
    if not suffix:
        raise TopologyError(f"join {store!r}: suffix must not be empty")
    try:
        window = JoinWindow(parse_duration(before, f"join {store!r}: before"),
                            parse_duration(after, f"join {store!r}: after"),
                            parse_duration(grace, f"join {store!r}: grace"))
    except WindowDefinitionError as exc:
        raise TopologyError(str(exc)) from exc
    left_in = left._partitioned_for(f"{store}-left", co_partitioned)
    right_in = right._partitioned_for(f"{store}-right", co_partitioned)
    sources = [topology._source_of(s._node) for s in (left_in, right_in)]
    join = IntervalJoin(store, window, how, suffix, topology._label(name))
    left_node = Node(TimedJoinInput(join, "left", topology._label(f"{join.name}.left")), on_error)
    right_node = Node(JoinInput(join, "right", topology._label(f"{join.name}.right")), on_error)
    right_node.children, right_node.side = left_node.children, left_node.side  # one output
    for upstream, node in ((left_in, left_node), (right_in, right_node)):
        assert upstream._node is not None
        upstream._node.children.append(node)
    topology._add_store(StoreSpec(store, join.name))
    if sources[0] != sources[1]:
        topology._copartition(*sources)
    return JoinedStream(topology, left_node)


class JoinedStream(Stream):
    """The rows of a stream-stream join, plus its late records (:attr:`late`)."""

    @property
    def late(self) -> Stream:
        """Records that arrived when no on-time record of the other side could match them any
        more: their columns plus ``stream_time`` and ``late_by_ms``. Route it like any stream
        (else they go to the DLQ as ``LateRecordError``)."""
        assert self._node is not None
        readers = self._node.side.setdefault("late", [])
        reader = Node(ops.Identity(self._topology._label(f"{self._node.operator.name}.late")))
        readers.append(reader)
        return Stream(self._topology, reader)
