"""Running a compiled topology over one batch, with per-operator error isolation.

When an operator raises on a batch, the policy decides: ``fail`` stops the worker (the batch is
not committed, so nothing is lost); ``dlq`` and ``skip`` re-run the operator on one row at a time
to isolate the rows that fail, send them to the dead-letter topic (``dlq``) or drop them (``skip``),
and continue with the rows that succeed.

Two rules keep that honest:
- Infrastructure errors are never a record's fault: a registry that cannot be reached, a Kafka
  or producer error, a state store failure (:data:`INFRASTRUCTURE_ERRORS`) propagate and fail the
  worker (after the retries the component did itself); they never dead-letter rows.
- An operator never runs twice over the same rows: the state a stateful operator wrote before it
  raised is rolled back (write-back cache savepoints) before the rows are re-run one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import polars as pl
from confluent_kafka import KafkaException

from headwater.connectors.produce import ProducerQueueFull
from headwater.errors import HeadwaterError
from headwater.schemas.errors import SchemaRegistryUnavailable
from headwater.state.errors import StateError
from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator

ErrorPolicy = Literal["dlq", "fail", "skip"]

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    SchemaRegistryUnavailable, KafkaException, ProducerQueueFull, BufferError, StateError,
)
"""Errors that say nothing about the record: they fail the worker, never the rows."""


class OperatorError(HeadwaterError):
    """An operator failed under the ``fail`` policy (carries the operator and first offset)."""

    def __init__(self, operator: str, topic: str | None, offset: int | None, cause: BaseException):
        self.operator = operator
        where = f" at {topic} offset {offset}" if topic is not None else ""
        super().__init__(f"operator {operator!r} failed{where}: {type(cause).__name__}: {cause}")


@dataclass
class Node:
    """An operator and the nodes its output feeds."""

    operator: Operator
    on_error: ErrorPolicy | None = None
    children: list[Node] = field(default_factory=list)
    side: dict[str, list[Node]] = field(default_factory=dict)
    """Nodes fed by the operator's named side outputs (e.g. a window's ``late`` records)."""


def run_node(node: Node, frame: pl.DataFrame, ctx: ProcessingContext, default: ErrorPolicy) -> None:
    """Apply ``node`` to ``frame`` (unless it has no rows) and feed the result to every child,
    depth first, then each side output to its nodes (an operator with side outputs implements ``take_side_outputs()``
    and ``unrouted_side_output(name, rows, ctx)`` for outputs no node reads)."""
    if frame.height == 0:  # nothing to do; and an empty frame may lack columns (a join's
        return             # other side before it had a record) that a select would want
    out = _apply_guarded(node, frame, ctx, node.on_error or default)
    take = getattr(node.operator, "take_side_outputs", None)
    side = take() if take is not None else {}
    for child in node.children:
        run_node(child, out, ctx, default)
    for name, rows in side.items():
        readers = node.side.get(name)
        if not readers:
            node.operator.unrouted_side_output(name, rows, ctx)  # type: ignore[attr-defined]
        for reader in readers or ():
            run_node(reader, rows, ctx, default)


def _apply_guarded(
    node: Node, frame: pl.DataFrame, ctx: ProcessingContext, policy: ErrorPolicy
) -> pl.DataFrame:
    op = node.operator
    prepare = getattr(op, "prepare", None)
    if prepare is not None:  # once per batch, so a row-by-row retry sees what the batch saw
        frame = prepare(frame, ctx)
    try:
        with _state_guard(op, ctx):
            return op.apply(frame, ctx)
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - user code may raise anything; handled by policy
        if policy == "fail":
            raise _operator_error(op, frame, exc) from exc
        if frame.height <= 1:
            _reject(frame, exc, op, ctx, policy)
            return frame.clear()
    survivors = []
    for i in range(frame.height):
        row = frame.slice(i, 1)
        try:
            with _state_guard(op, ctx):
                survivors.append(op.apply(row, ctx))
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001
            _reject(row, exc, op, ctx, policy)
    if not survivors:
        return frame.clear()
    return pl.concat(survivors, how="diagonal_relaxed")


@contextmanager
def _state_guard(op: Operator, ctx: ProcessingContext) -> Iterator[None]:
    """Undo the state writes of ``op`` if it raises (no cost for stateless operators)."""
    caches = getattr(ctx, "caches", None)
    if not getattr(op, "stateful", False) or caches is None:
        yield
        return
    stores = set(op.store_names())
    before = {k: c for k, c in caches.items() if k[0] in stores}
    for cache in before.values():
        cache.savepoint()
    try:
        yield
    except BaseException:
        for cache in before.values():
            cache.rollback()
        for key in [k for k in caches if k[0] in stores and k not in before]:
            caches.pop(key).discard()  # opened by this attempt: holds only its writes
        raise
    else:
        for cache in before.values():
            cache.release()


def _reject(
    rows: pl.DataFrame, exc: BaseException, op: Operator, ctx: ProcessingContext, policy: str
) -> None:
    if policy == "dlq" and rows.height:
        ctx.dead_letter(rows, exc, op.name)


def _operator_error(op: Operator, frame: pl.DataFrame, exc: BaseException) -> OperatorError:
    topic = frame.get_column("_topic")[0] if "_topic" in frame.columns and frame.height else None
    offset = frame.get_column("_offset")[0] if "_offset" in frame.columns and frame.height else None
    return OperatorError(op.name, topic, offset, exc)
