"""The DSL of windowed streams: :class:`WindowedStream` (a keyed stream grouped into windows,
whose only method is ``aggregate``) and :class:`WindowedResult` (its results, late records and
updates). Kept apart from :mod:`headwater.streams.topology` so each stays readable."""

from __future__ import annotations

from headwater.streams import operators as ops
from headwater.streams.aggregate import Agg
from headwater.streams.execution import ErrorPolicy, Node
from headwater.streams.session_aggregate import SessionAggregate
from headwater.streams.sliding_aggregate import SlidingAggregate
from headwater.streams.topology import StoreSpec, Stream, TopologyError
from headwater.streams.window_aggregate import EmitMode, WindowAggregate, WindowOperator
from headwater.streams.windows import AnyWindow, SessionWindow, SlidingWindow


class WindowedStream:
    """A keyed stream grouped into windows (see :meth:`Stream.window`); only aggregable."""

    def __init__(self, stream: Stream, window: AnyWindow) -> None:
        self._stream, self._window = stream, window

    def aggregate(self, store: str, *, emit: EmitMode = "final", name: str = "window_aggregate",
                  co_partitioned: bool = False, on_error: ErrorPolicy | None = None,
                  **aggs: Agg) -> WindowedResult:
        """Aggregates per key and window, kept in ``store``: ``agg.count()``, ``agg.sum``,
        ``agg.mean``, ``agg.min``/``agg.max``, ``agg.first``/``agg.last``,
        ``agg.count_distinct``, ``agg.approx_count_distinct``, ``agg.quantiles``/
        ``agg.percentile``, ``agg.collect`` and ``agg.udf`` (see docs/windows.md), any number
        of them in one operator.

        ``emit="final"`` (default) emits each window once, when stream time passes its end plus
        grace; ``"update"`` emits a window's new values after every batch that changed it;
        ``"both"`` emits final results and puts the updates on :attr:`WindowedResult.updates`. Rows
        carry ``window_start``/``window_end`` (epoch ms) and ``_timestamp`` = ``window_end``. Late
        records are on the result's :attr:`WindowedResult.late` stream (else the DLQ). After
        ``key_by`` the stream goes through a repartition topic unless ``co_partitioned``.
        """
        if not aggs:
            raise TopologyError(f"window aggregate {store!r} declares no aggregates")
        if emit not in ("final", "update", "both"):
            raise TopologyError(
                f"window aggregate {store!r}: emit must be 'final', 'update' or 'both'")
        operator = _window_operator(store, self._window, aggs, emit, name)
        upstream = self._stream._partitioned_for(store, co_partitioned)
        stream = upstream._then(operator, on_error)
        for name_ in operator.store_names():
            upstream._topology._add_store(StoreSpec(name_, stream._node.operator.name))
        return WindowedResult(stream._topology, stream._node)


def _window_operator(store: str, window: AnyWindow, aggs: dict[str, Agg], emit: EmitMode,
                     name: str) -> WindowOperator:
    if isinstance(window, SessionWindow):
        return SessionAggregate(store, window, aggs, emit, name)
    if isinstance(window, SlidingWindow):
        operator = SlidingAggregate(store, window, aggs, emit, name)
        if not operator._acc.fixed_width:
            raise TopologyError(
                f"window aggregate {store!r}: sliding windows keep each record time's "
                "accumulator, so they take fixed-width aggregates only (count, sum, min, max, "
                "mean, first, last)")
        return operator
    return WindowAggregate(store, window, aggs, emit, name)


class WindowedResult(Stream):
    """The results of a window aggregate, plus its late records (:attr:`late`) and, with
    ``emit="both"``, its updates (:attr:`updates`)."""

    @property
    def late(self) -> Stream:
        """Records that arrived after their window closed: their columns plus
        ``window_start``, ``window_end``, ``stream_time`` and ``late_by_ms`` (one row per missed
        window). Route it like any stream (e.g. ``.late.to_topic("late-orders")``)."""
        return self._side("late")

    @property
    def updates(self) -> Stream:
        """With ``emit="both"``: a window's new values after every batch that changed it (the
        main stream carries the final results).

        Raises:
            TopologyError: the aggregate was not declared with ``emit="both"``.
        """
        assert self._node is not None
        if getattr(self._node.operator, "emit", None) != "both":
            raise TopologyError(f"{self._node.operator.name}: .updates needs emit='both'")
        return self._side("updates")

    def _side(self, output: str) -> Stream:
        assert self._node is not None
        node = self._node.side.setdefault(output, [])
        reader = Node(ops.Identity(self._topology._label(f"{self._node.operator.name}.{output}")))
        node.append(reader)
        return Stream(self._topology, reader)
