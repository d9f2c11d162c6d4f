"""Running a compiled topology over one batch, with per-operator error isolation.

When an operator raises on a batch, the policy decides: ``fail`` stops the worker (the batch is
not committed, so nothing is lost); ``dlq`` and ``skip`` re-run the operator on one row at a time
to isolate the rows that fail, send them to the dead-letter topic (``dlq``) or drop them (``skip``),
and continue with the rows that succeed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from headwater.errors import HeadwaterError
from headwater.streams.context import ProcessingContext
from headwater.streams.operators import Operator

ErrorPolicy = Literal["dlq", "fail", "skip"]


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


def run_node(node: Node, frame: pl.DataFrame, ctx: ProcessingContext, default: ErrorPolicy) -> None:
    """Apply ``node`` to ``frame`` and feed the result to every child, depth first."""
    out = _apply_guarded(node, frame, ctx, node.on_error or default)
    for child in node.children:
        run_node(child, out, ctx, default)


def _apply_guarded(
    node: Node, frame: pl.DataFrame, ctx: ProcessingContext, policy: ErrorPolicy
) -> pl.DataFrame:
    op = node.operator
    try:
        return op.apply(frame, ctx)
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
            survivors.append(op.apply(row, ctx))
        except Exception as exc:  # noqa: BLE001
            _reject(row, exc, op, ctx, policy)
    if not survivors:
        return frame.clear()
    return pl.concat(survivors, how="diagonal_relaxed")


def _reject(
    rows: pl.DataFrame, exc: BaseException, op: Operator, ctx: ProcessingContext, policy: str
) -> None:
    if policy == "dlq" and rows.height:
        ctx.dead_letter(rows, exc, op.name)


def _operator_error(op: Operator, frame: pl.DataFrame, exc: BaseException) -> OperatorError:
    topic = frame.get_column("_topic")[0] if "_topic" in frame.columns and frame.height else None
    offset = frame.get_column("_offset")[0] if "_offset" in frame.columns and frame.height else None
    return OperatorError(op.name, topic, offset, exc)
