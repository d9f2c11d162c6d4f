"""Stream-table joins: every row of a stream enriched with a table's value for its lookup key.

Per batch, vectorized: the lookup keys of the batch (``on`` cast to text, default ``_key``),
deduplicated, are fetched with **one** ``get_many`` per partition (a co-partitioned table: the
rows of stream partition ``p`` read table store partition ``p``) or one on the global store;
the distinct values found are decoded in **one** call; a Polars join puts them back onto the
rows. The output is the stream's columns plus the table value's columns (a name the stream
already has gets ``suffix``). ``how="left"`` keeps rows without a value (table columns null,
when the table's columns are known from an earlier lookup), ``"inner"`` drops them.

Time (docs/joins.md):

- ``as_of="latest"``: the value in the table when the row is processed (processing order: the
  table's records processed before the row's batch count, those after do not). On a versioned
  table, the version with the newest timestamp.
- ``as_of="event_time"``: the newest version whose timestamp is at or before the row's event
  time (``_timestamp``), so a replay gives the same result whatever the processing order, as
  long as the versions are in the table (within its retention) when the row is processed. Needs
  a versioned table (``topology.table(..., versioned="7d")``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from headwater.errors import HeadwaterError
from headwater.state.manager import StateManager
from headwater.streams.decode import BatchDecoder
from headwater.streams.context import ProcessingContext
from headwater.streams.execution import ErrorPolicy
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, METADATA_COLUMNS, PARTITION, TIMESTAMP, RecordBatch
from headwater.streams.tables import GlobalStore, GlobalTable, Table, decode_versions, root_of
from headwater.streams.topology import Stream, TopologyError

JoinHow = Literal["inner", "left"]
AsOf = Literal["latest", "event_time"]

_LOOKUP, _ROW, _VALUE, _VTS = "__lookup", "__row", "__value", "__version_ts"


class TableValueError(HeadwaterError):
    """A stored table value could not be decoded at lookup (e.g. its schema was deleted or no
    longer resolves to the declared one); the looking-up rows are dead-lettered with it."""


class TableLookups(ABC):
    """What a batch context offers table operators (mixed into ``BatchContext``; the runtime
    and the test driver implement the abstract methods)."""

    stores: StateManager

    @abstractmethod
    def source_decoder(self, topic: str) -> BatchDecoder:
        """The decoder of a (logical) source topic or a global table's topic."""

    @abstractmethod
    def decode_avro(self, values: Sequence[bytes]) -> pl.DataFrame:
        """Decode framed Avro values, each in its writer schema's frame layout (values this
        context encoded with :meth:`encode_avro`), one row each in order.

        Raises:
            StateError: a value cannot be decoded (state the engine wrote: never a record's
                fault).
        """

    @abstractmethod
    def global_store(self, topic: str) -> GlobalStore:
        """The local store of the global table read from ``topic``."""

    def decode_source_values(self, topic: str, values: Sequence[bytes]) -> pl.DataFrame:
        """Decode values as they are on ``topic`` with its source decoder: the user columns
        only, one row per value in order.

        Raises:
            TableValueError: a value cannot be decoded (names the topic and the reason).
        """
        n = len(values)
        batch = RecordBatch(topic, [0] * n, list(range(n)), [0] * n, [None] * n, list(values))
        frame, rejected = self.source_decoder(topic).decode(batch)
        if rejected:
            raise TableValueError(f"a value stored from {topic!r} no longer decodes: "
                                  f"{type(rejected[0].error).__name__}: {rejected[0].error}")
        return frame.drop([c for c in METADATA_COLUMNS if c in frame.columns])

    def row_subject(self, name: str) -> str:
        """The registry subject of rows an operator keeps in state under ``name`` (a stream
        table's values, a join's buffers): ``<application_id>-<name>-value``."""
        return f"{self.stores.application_id}-{name}-value"


class TableJoinError(HeadwaterError):
    """A join's output would have two columns of one name even after suffixing."""


@dataclass
class TableJoin(Operator):
    """Looks up each row's key in a table (see the module docstring)."""

    table: Table | GlobalTable
    on: pl.Expr
    how: JoinHow = "left"
    as_of: AsOf = "latest"
    suffix: str = "_right"
    name: str = "join_table"
    _schema: pl.Schema | None = field(default=None, repr=False)

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        rows = frame.with_columns(self.on.cast(pl.String).alias(_LOOKUP),
                                  pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW))
        values: list[bytes] = []
        index: dict[bytes, int] = {}
        found = self._lookup(rows, ctx, values, index)
        if self.as_of == "event_time":
            joined = rows.sort(TIMESTAMP).join_asof(
                found.sort(_VTS), left_on=TIMESTAMP, right_on=_VTS,
                by=self._by(), strategy="backward", check_sortedness=False).drop(_VTS)
        else:
            joined = rows.join(found, on=self._by(), how="left")
        if self.how == "inner":
            joined = joined.filter(pl.col(_VALUE).is_not_null())
        decoded = self.table.decode(ctx, values) if values else None
        if decoded is not None and decoded.width:
            self._schema = decoded.schema
        elif self._schema is None and getattr(self.table.spec, "kind", "topic") == "topic":
            # nothing found yet: an Avro table with a declared schema still knows its columns
            known = self.table.decode(ctx, [])
            self._schema = known.schema if known.width else None
        if (decoded is None or not decoded.width) and self._schema is not None:
            decoded = pl.DataFrame(schema=self._schema)
        out = joined.sort(_ROW)
        if decoded is not None and decoded.width:
            decoded = decoded.rename(self._renames(frame, decoded))
            decoded = decoded.with_columns(pl.int_range(pl.len(), dtype=pl.Int32).alias(_VALUE))
            out = out.join(decoded, on=_VALUE, how="left", maintain_order="left")
        return out.drop(_LOOKUP, _ROW, _VALUE)

    def _by(self) -> list[str]:
        return [_LOOKUP] if isinstance(self.table, GlobalTable) else [PARTITION, _LOOKUP]

    def _lookup(self, rows: pl.DataFrame, ctx: ProcessingContext, values: list[bytes],
                index: dict[bytes, int]) -> pl.DataFrame:
        """One frame of what the table holds for the batch's keys: (partition,) lookup key,
        (version timestamp,) value index (null: no value). Appends distinct values to
        ``values``."""
        versioned = isinstance(self.table, Table) and self.table.spec.versioned_ms is not None
        per_version = self.as_of == "event_time"
        parts: list[tuple[int | None, pl.DataFrame]]
        if isinstance(self.table, GlobalTable):
            parts = [(None, rows)]
        else:
            parts = [(int(p), part) for (p,), part in rows.group_by(PARTITION)]
        out_p: list[int | None] = []
        out_k: list[str] = []
        out_t: list[int] = []
        out_v: list[int | None] = []

        def value_index(value: bytes | None) -> int | None:
            if value is None:
                return None
            i = index.get(value)
            if i is None:
                i = index[value] = len(values)
                values.append(value)
            return i

        for partition, part in parts:
            keys = part.get_column(_LOOKUP).drop_nulls().unique().to_list()
            if not keys:
                continue
            raw = [k.encode() for k in keys]
            if isinstance(self.table, GlobalTable):
                stored = ctx.global_store(self.table.spec.topic).get_many(raw)
            else:
                stored = ctx.state(self.table.spec.store, partition).get_many(raw)  # type: ignore[arg-type]
            for key, blob in zip(keys, stored):
                if not versioned:
                    entries = [(0, blob)] if blob is not None else []
                else:
                    versions = decode_versions(blob)
                    entries = versions if per_version else versions[-1:]
                for ts, value in entries:
                    out_p.append(partition)
                    out_k.append(key)
                    out_t.append(ts)
                    out_v.append(value_index(value))
        found = pl.DataFrame([
            pl.Series(PARTITION, out_p, pl.Int32), pl.Series(_LOOKUP, out_k, pl.String),
            pl.Series(_VTS, out_t, pl.Int64), pl.Series(_VALUE, out_v, pl.Int32)])
        if isinstance(self.table, GlobalTable):
            found = found.drop(PARTITION)
        if not per_version:
            found = found.drop(_VTS)
        return found

    def _renames(self, frame: pl.DataFrame, decoded: pl.DataFrame) -> dict[str, str]:
        taken = set(frame.columns) | set(METADATA_COLUMNS)
        renames = {}
        for column in decoded.columns:
            if column in taken:
                renamed = column + self.suffix
                if renamed in taken or renamed in decoded.columns:
                    raise TableJoinError(
                        f"{self.name}: table column {column!r} collides with the stream's, and "
                        f"so does {renamed!r}; rename one side or pick another suffix")
                renames[column] = renamed
        return renames


def join_table(stream: Stream, table: Table | GlobalTable, *, on: str | pl.Expr | None = None,
               how: JoinHow = "left", as_of: AsOf = "latest", suffix: str = "_right",
               name: str = "join_table", on_error: ErrorPolicy | None = None) -> Stream:
    """Join ``stream`` with ``table`` (see the module docstring for the semantics).

    Args:
        on: the lookup key: a column name or expression of the stream's columns, cast to text
            and compared with the table's keys (record keys as UTF-8). Default: ``_key``.
        how: ``"left"`` (default) or ``"inner"``.
        as_of: ``"latest"`` or ``"event_time"`` (versioned tables only).
        suffix: appended to table columns whose name the stream already has.
        on_error: the error policy of the join operator.

    Co-partitioned tables: the stream joins the table's sub-topology, so its partition ``p``
    reads the table's store partition ``p``. When the lookup is not the record key (``on``
    given) or the stream was re-keyed (``key_by``), the stream is first re-keyed by the lookup
    key and written through a repartition topic ``<table store>-<name>-repartition`` with the
    table's partition count (the murmur2 partitioner, like Java producers' default). Output rows
    then carry the lookup key as ``_key``. Global tables need none of this.

    Raises:
        TopologyError: bad ``how``/``as_of``, a table of another topology, ``as_of="event_time"``
            on an unversioned or global table.
    """
    topology = stream._topology
    if how not in ("inner", "left"):
        raise TopologyError(f"{name}: how must be 'inner' or 'left', not {how!r}")
    if as_of not in ("latest", "event_time"):
        raise TopologyError(f"{name}: as_of must be 'latest' or 'event_time', not {as_of!r}")
    if not isinstance(table, Table | GlobalTable):
        raise TopologyError(f"{name}: join_table takes a Table or GlobalTable, got {table!r}")
    if table.topology is not topology:
        raise TopologyError(f"{name}: table {table.spec.store!r} belongs to topology "
                            f"{table.topology.name!r}, not {topology.name!r}")
    if as_of == "event_time" and (isinstance(table, GlobalTable)
                                  or table.spec.versioned_ms is None):
        raise TopologyError(f"{name}: as_of='event_time' needs a versioned table "
                            f"(topology.table(..., versioned='7d')); {table.spec.store!r} is not")
    by_key = on is None or (isinstance(on, str) and on == KEY)
    expr = pl.col(KEY) if on is None else (pl.col(on) if isinstance(on, str) else on)
    if isinstance(table, GlobalTable):
        return stream._then(TableJoin(table, expr, how, as_of, suffix, name), on_error)
    upstream = stream
    if not by_key:
        upstream = stream.key_by(expr, name=f"{name}.key_by")
    if upstream._after_key_by:
        upstream = upstream._partitioned_for(_repartition_name(stream, table, name), False)
    assert upstream._node is not None
    topology._copartition(root_of(topology, upstream._node), table.anchor)
    return upstream._then(TableJoin(table, pl.col(KEY), how, as_of, suffix, name), on_error)


def _repartition_name(stream: Stream, table: Table, name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "-", f"{table.spec.store}-{name}")
    sources = stream._topology._roots
    candidate, n = base, 1
    while f"{candidate}-repartition" in sources:
        n += 1
        candidate = f"{base}-{n}"
    return candidate
