"""Tables: the latest value per key of a topic or a stream, kept in a state store.

Three kinds, declared on a :class:`~headwater.streams.topology.Topology` or a stream:

- ``topology.table(topic, store=...)``: a table *materialized from a (compacted) topic*. Its
  records upsert the store by record key (the Kafka key bytes); a null value (tombstone) deletes
  the key. The values are stored **as they are on the topic** (no re-encoding) and decoded only
  when a join looks them up, with the topic's own decoder (``ctx.decode_source_values``). Every
  value is still decoded once on arrival, to dead-letter what cannot be decoded (it is not
  stored) and to evaluate ``event_time``. The topic is a source of the topology: its partition
  ``p`` belongs to the task of ``p`` of the sub-topology of the streams joining it, so the store
  is an ordinary store (write-back cache, changelog, restore) and the topic advances that task's
  stream time like any source.
- ``stream.to_table(store)``: the latest row per ``_key`` of any stream (e.g. after an
  aggregate). Rows are stored Avro-encoded with a schema derived from the frame
  (:func:`~headwater.streams.repartition.avro_schema_of`, subject
  ``<application_id>-<store>-value``) and decoded in their writer layout at lookup.
- ``topology.global_table(topic, store=...)``: every worker holds the whole topic (all
  partitions), restored at start and kept up to date by a reader in the worker loop
  (:mod:`headwater.streams.runtime.global_tables`); not a source, owned by no task. Its store
  (:class:`GlobalStore`) is local and not changelogged: the topic is the source of truth.

Versioned tables (``versioned="7d"``) keep, per key, one value holding every version
``(timestamp, value or tombstone)`` sorted by timestamp (see :func:`encode_versions`), so an
as-of lookup is one batched ``get_many`` like a latest lookup. On each write the versions older
than the retention behind the task's stream time are pruned, except the newest of them (it is
still the value in force at the retention bound). Kafka Streams' versioned store instead keeps
the latest value apart from history segments; one value per key is simpler and costs a rewrite
of the key's history per update, which suits reference data (few updates per key).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from headwater.errors import HeadwaterError
from headwater.state.store import KeyValueStore
from headwater.streams.context import ProcessingContext
from headwater.streams.dead_letters import to_dead_letter
from headwater.streams.execution import Node
from headwater.streams.operators import Operator
from headwater.streams.records import KEY, PARTITION, TIMESTAMP, RecordBatch, user_columns
from headwater.streams.repartition import _avro_name, avro_schema_of, storable
from headwater.streams.topology import (
    SourceSpec, StoreSpec, Stream, Topology, TopologyError, ValueFormat,
)
from headwater.streams.windows import parse_duration

if TYPE_CHECKING:
    from headwater.streams.batch import BatchContext
    from headwater.streams.decode import BatchDecoder

RAW_KEY = "__table_key"
"""Writer frame column: the record key bytes (the table key)."""
RAW_VALUE = "__table_value"
"""Writer frame column: the value bytes as on the topic (null: a tombstone)."""

TableKind = Literal["topic", "stream"]


class TableError(HeadwaterError):
    """A table record cannot be applied (e.g. it has no key); its record is dead-lettered."""


@dataclass(frozen=True)
class TableSpec:
    """A co-partitioned table.

    Attributes:
        store: the store holding it (also its name in errors).
        kind: ``"topic"`` (:meth:`Topology.table`) or ``"stream"`` (:meth:`Stream.to_table`).
        topic: the table's topic (kind ``topic``); for a stream table, the source topic of the
            sub-topology that writes it.
        value_format: how a topic table's values are decoded.
        versioned_ms: history retention of a versioned table (``None``: latest only).
        topology: the name of the topology declaring it.
    """

    store: str
    kind: TableKind
    topic: str
    value_format: ValueFormat = "avro"
    versioned_ms: int | None = None
    topology: str = ""


@dataclass(frozen=True)
class GlobalTableSpec:
    """A global table: its topic (decoded like ``source``) and its worker-local store."""

    topic: str
    store: str
    source: SourceSpec
    topology: str = ""


@dataclass(eq=False)
class Table:
    """A co-partitioned table, to join with :meth:`Stream.join_table`.

    ``anchor`` is the source topic whose sub-topology owns the store: a stream joining the table
    is merged into that sub-topology (``Topology._copartition``).
    """

    topology: Topology
    spec: TableSpec
    anchor: str

    def decode(self, ctx: ProcessingContext, values: Sequence[bytes]) -> pl.DataFrame:
        """Decode stored values (one row each, in order)."""
        if self.spec.kind == "topic":
            return ctx.decode_source_values(self.spec.topic, values)  # type: ignore[attr-defined]
        return ctx.decode_avro(values)


@dataclass(eq=False)
class GlobalTable:
    """A global table, to join with :meth:`Stream.join_table` (no co-partitioning)."""

    topology: Topology
    spec: GlobalTableSpec

    def decode(self, ctx: ProcessingContext, values: Sequence[bytes]) -> pl.DataFrame:
        """Decode stored values (one row each, in order) with the topic's decoder."""
        return ctx.decode_source_values(self.spec.topic, values)  # type: ignore[attr-defined]


# --- declarations ---------------------------------------------------------------------------


def declare_table(topology: Topology, topic: str, *, store: str, value_format: ValueFormat,
                  reader_schema: str | None = None, versioned: str | int | None = None,
                  event_time: str | pl.Expr | None = None) -> Table:
    """Declare a table materialized from ``topic`` (see the module docstring).

    Args:
        topic: the (compacted) topic; its record key is the table key.
        store: the store keeping the table (unique in the topology).
        value_format: ``avro``, ``json`` or ``raw``, as for a source.
        reader_schema: Avro values are resolved to it (default: the subject's latest).
        versioned: keep history within this retention (``"7d"`` or ms) for
            ``as_of="event_time"`` joins.
        event_time: the version timestamp and the event time advancing stream time (as for a
            source); default the record timestamp. Tombstones always use the record timestamp.

    Raises:
        TopologyError: the store or topic is used already, or ``versioned`` is no duration.
    """
    versioned_ms = None
    if versioned is not None:
        try:
            versioned_ms = parse_duration(versioned, f"table {store!r}: versioned")
        except ValueError as exc:  # WindowDefinitionError
            raise TopologyError(str(exc)) from exc
        if versioned_ms <= 0:
            raise TopologyError(f"table {store!r}: versioned retention must be positive")
    _check_store_free(topology, store)
    spec = TableSpec(store, "topic", topic, value_format, versioned_ms, topology.name)
    stream = topology._add_source(SourceSpec(topic, value_format, reader_schema, table=store))
    if event_time is not None:
        topology._event_time[topic] = pl.col(event_time) if isinstance(event_time, str) else event_time
    writer = TableWriter(store, versioned_ms, f"table:{store}")
    stream._then(writer, None)
    topology._add_store(StoreSpec(store, writer.name))
    topology._tables[store] = spec
    return Table(topology, spec, topic)


def declare_global_table(topology: Topology, topic: str, *, store: str,
                         value_format: ValueFormat, reader_schema: str | None = None
                         ) -> GlobalTable:
    """Declare a global table over every partition of ``topic`` (see the module docstring).

    Raises:
        TopologyError: the topic is read already, or the store name is used.
    """
    if topic in topology._roots or topic in topology._globals:
        raise TopologyError(f"topic {topic!r} is declared as a source twice")
    _check_store_free(topology, store)
    if any(g.store == store for g in topology._globals.values()):
        raise TopologyError(f"store {store!r} is used by two global tables")
    spec = GlobalTableSpec(topic, store, SourceSpec(topic, value_format, reader_schema),
                           topology.name)
    topology._globals[topic] = spec
    topology._plan = None
    return GlobalTable(topology, spec)


def stream_to_table(stream: Stream, store: str, name: str = "to_table") -> Table:
    """The latest row per ``_key`` of ``stream`` as a table in ``store`` (module docstring).

    Raises:
        TopologyError: the store name is used already.
    """
    topology = stream._topology
    _check_store_free(topology, store)
    upstream = stream._partitioned_for(store, False)
    out = upstream._then(ToTable(store, name), None)
    topology._add_store(StoreSpec(store, out._node.operator.name))
    assert out._node is not None
    anchor = root_of(topology, out._node)
    spec = TableSpec(store, "stream", anchor, "avro", None, topology.name)
    topology._tables[store] = spec
    return Table(topology, spec, anchor)


def root_of(topology: Topology, node: Node) -> str:
    """The source topic whose operator tree contains ``node``."""
    for topic, (_, root) in topology._roots.items():
        stack = [root]
        while stack:
            current = stack.pop()
            if current is node:
                return topic
            stack.extend(current.children)
            stack.extend(n for side in current.side.values() for n in side)
    raise TopologyError(f"operator {node.operator.name!r} is not in topology {topology.name!r}")


def _check_store_free(topology: Topology, store: str) -> None:
    if store in topology._stores or any(g.store == store for g in topology._globals.values()):
        raise TopologyError(f"store {store!r} is used twice in topology {topology.name!r}")


# --- versions -------------------------------------------------------------------------------

_VERSION = struct.Struct(">qi")
Version = tuple[int, bytes | None]


def encode_versions(versions: Sequence[Version]) -> bytes:
    """One stored value holding ``versions`` (sorted by timestamp): per version an 8-byte
    big-endian timestamp, a 4-byte length (-1: tombstone) and the value bytes."""
    parts = []
    for ts, value in versions:
        parts.append(_VERSION.pack(ts, -1 if value is None else len(value)))
        if value is not None:
            parts.append(value)
    return b"".join(parts)


def decode_versions(blob: bytes | None) -> list[Version]:
    """The versions of :func:`encode_versions` (``[]`` for ``None``)."""
    out: list[Version] = []
    if not blob:
        return out
    view, i = memoryview(blob), 0
    while i < len(blob):
        ts, size = _VERSION.unpack_from(view, i)
        i += _VERSION.size
        if size < 0:
            out.append((ts, None))
        else:
            out.append((ts, bytes(view[i:i + size])))
            i += size
    return out


def add_version(versions: list[Version], ts: int, value: bytes | None) -> None:
    """Insert a version in timestamp order; one with the same timestamp is replaced."""
    i = len(versions)
    while i and versions[i - 1][0] > ts:
        i -= 1
    if i and versions[i - 1][0] == ts:
        versions[i - 1] = (ts, value)
    else:
        versions.insert(i, (ts, value))


def prune_versions(versions: list[Version], cutoff: int) -> list[Version]:
    """The versions a lookup at or after ``cutoff`` may need: those at or after it, plus the
    newest before it (in force at ``cutoff``) unless that one is a tombstone."""
    keep = 0
    while keep + 1 < len(versions) and versions[keep + 1][0] <= cutoff:
        keep += 1
    kept = versions[keep:]
    if kept and kept[0][0] < cutoff and kept[0][1] is None:
        kept = kept[1:]
    return kept


def version_as_of(versions: Sequence[Version], ts: int | None) -> bytes | None:
    """The value in force at ``ts`` (the newest version at or before it; ``None`` for a
    tombstone or nothing); ``ts=None`` means the newest version."""
    if ts is None:
        return versions[-1][1] if versions else None
    found = None
    for at, value in versions:
        if at > ts:
            break
        found = value
    return found


# --- operators ------------------------------------------------------------------------------


@dataclass
class TableWriter(Operator):
    """Applies a table topic's records to its store (in record order per partition).

    Its input is the frame :func:`table_frame` builds: metadata plus the raw key and value.
    """

    store: str
    versioned_ms: int | None = None
    name: str = "table"
    stateful: bool = True

    def store_names(self) -> list[str]:
        return [self.store]

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        if frame.height == 0:
            return frame
        for (partition,), part in frame.group_by(PARTITION, maintain_order=True):
            cache = ctx.state(self.store, int(partition))
            keys = part.get_column(RAW_KEY).to_list()
            values = part.get_column(RAW_VALUE).to_list()
            if self.versioned_ms is None:
                latest = dict(zip(keys, values))
                put = [k for k, v in latest.items() if v is not None]
                cache.put_many(put, [latest[k] for k in put])
                cache.delete_many([k for k, v in latest.items() if v is None])
                continue
            stamps = part.get_column(TIMESTAMP).to_list()
            before = ctx.stream_time(ctx.task(int(partition)))
            cutoff = max(max(stamps), before if before is not None else max(stamps))
            cutoff -= self.versioned_ms
            distinct = list(dict.fromkeys(keys))
            history = {k: decode_versions(b) for k, b in zip(distinct, cache.get_many(distinct))}
            for key, value, ts in zip(keys, values, stamps):
                add_version(history[key], ts, value)
            writes, deletes = [], []
            for key, versions in history.items():
                kept = prune_versions(versions, cutoff)
                (writes if kept else deletes).append((key, kept))
            cache.put_many([k for k, _ in writes], [encode_versions(v) for _, v in writes])
            cache.delete_many([k for k, _ in deletes])
        return frame


@dataclass
class ToTable(Operator):
    """Keeps the latest row per ``_key`` of a stream, Avro-encoded, in ``store``."""

    store: str
    name: str = "to_table"
    stateful: bool = True

    def store_names(self) -> list[str]:
        return [self.store]

    def apply(self, frame: pl.DataFrame, ctx: ProcessingContext) -> pl.DataFrame:
        if frame.height == 0:
            return frame
        keyless = frame.filter(pl.col(KEY).is_null())
        if keyless.height:
            ctx.dead_letter(keyless, TableError(f"table {self.store!r} needs a key; the row has "
                                                "none"), self.name)
            frame = frame.filter(pl.col(KEY).is_not_null())
        last = frame.unique(subset=[PARTITION, KEY], keep="last", maintain_order=True)
        if last.height == 0:
            return frame
        body = storable(last.select(user_columns(last)))
        schema = json.dumps(avro_schema_of(body.schema, f"Table_{_avro_name(self.store)}"))
        values = ctx.encode_avro(body, ctx.row_subject(self.store), schema)
        parts = last.get_column(PARTITION).to_numpy()
        keys = [k.encode() for k in last.get_column(KEY).to_list()]
        for partition in np.unique(parts):
            rows = np.flatnonzero(parts == partition).tolist()
            ctx.state(self.store, int(partition)).put_many([keys[i] for i in rows],
                                                           [values[i] for i in rows])
        return frame


# --- ingest ---------------------------------------------------------------------------------


def take(batch: RecordBatch, rows: Sequence[int]) -> RecordBatch:
    """The records of ``batch`` at ``rows`` (in that order) as a batch of their own."""
    def pick(values: list) -> list:
        return [values[i] for i in rows]

    return RecordBatch(
        batch.topic, pick(batch.partitions), pick(batch.offsets), pick(batch.timestamps),
        pick(batch.keys), pick(batch.values),
        headers=None if batch.headers is None else pick(batch.headers),
        messages=None if batch.messages is None else pick(list(batch.messages)),
    )


def table_frame(ctx: BatchContext, spec: SourceSpec, decoder: BatchDecoder,
                batch: RecordBatch) -> pl.DataFrame:
    """The frame a table topic's batch applies to its store (:class:`TableWriter`).

    Values are decoded (the frame of decoded columns is only used for ``event_time``):
    records that fail to decode, whose event time is invalid or that have no key are
    dead-lettered and not applied. Tombstones skip the decoder (which rejects them) and keep
    their record timestamp. Rows stay in batch order (offset order per partition).
    """
    keyless = [i for i, k in enumerate(batch.keys) if k is None]
    if keyless:
        ctx.send_dead_letters([to_dead_letter(batch.record(i), TableError(
            f"table {spec.table!r}: a record without a key cannot be stored"), "table")
            for i in keyless])
    keyed = [i for i, k in enumerate(batch.keys) if k is not None]
    present = [i for i in keyed if batch.values[i] is not None]
    tombstones = [i for i in keyed if batch.values[i] is None]
    decoded, rejected = decoder.decode(take(batch, present))
    if rejected:
        ctx.send_dead_letters([to_dead_letter(batch.record(present[r.index]), r.error, "decode")
                               for r in rejected])
    bad = {present[r.index] for r in rejected}
    accepted = [i for i in present if i not in bad]
    decoded = decoded.with_columns(
        pl.Series(RAW_KEY, [batch.keys[i] for i in accepted], pl.Binary),
        pl.Series(RAW_VALUE, [batch.values[i] for i in accepted], pl.Binary),
    )
    decoded = ctx.timed(spec, decoded)
    columns = [*batch.metadata([]).columns, RAW_KEY, RAW_VALUE]
    deletes = batch.metadata(tombstones).with_columns(
        pl.Series(RAW_KEY, [batch.keys[i] for i in tombstones], pl.Binary),
        pl.Series(RAW_VALUE, [None] * len(tombstones), pl.Binary),
    )
    frame = pl.concat([decoded.select(columns), deletes.select(columns)], how="vertical_relaxed")
    order = {(p, o): n for n, (p, o) in enumerate(zip(batch.partitions, batch.offsets))}
    rank = [order[(p, o)] for p, o in zip(frame.get_column(PARTITION).to_list(),
                                          frame.get_column("_offset").to_list())]
    return frame.with_columns(pl.Series("__rank", rank)).sort("__rank").drop("__rank")


# --- global tables --------------------------------------------------------------------------

_DATA = b"d"
_OFFSET = b"o"


@dataclass(eq=False)
class GlobalStore:
    """A global table's worker-local store: the table's values (as on the topic) and, in the
    same atomic write, the next offset to read per topic partition, so a restarted worker
    resumes where it stopped instead of rereading the topic. Keys are namespaced (``d`` +
    record key, ``o`` + partition) so the two never collide."""

    store: KeyValueStore
    _offsets: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.store.prefix(_OFFSET):
            self._offsets[int.from_bytes(key[1:], "big")] = int.from_bytes(value, "big")

    @property
    def offsets(self) -> dict[int, int]:
        """Next offset to read per partition (partitions never read are absent)."""
        return dict(self._offsets)

    def apply(self, partitions: Sequence[int], offsets: Sequence[int],
              keys: Sequence[bytes | None], values: Sequence[bytes | None],
              skip: set[int] | frozenset[int] = frozenset()) -> None:
        """Apply records in offset order (null value: delete); the records at indexes in
        ``skip`` (undecodable, keyless) only advance the offsets. One atomic write."""
        puts: dict[bytes, bytes | None] = {}
        for i, (partition, offset, key, value) in enumerate(zip(partitions, offsets, keys, values)):
            if i not in skip and key is not None:
                puts[_DATA + key] = value
            self._offsets[partition] = max(self._offsets.get(partition, 0), offset + 1)
        for partition, offset in self._offsets.items():
            puts[_OFFSET + partition.to_bytes(4, "big")] = offset.to_bytes(8, "big")
        if puts:
            self.store.write_batch(puts, None)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The values of ``keys`` (``None``: absent), one multi-get."""
        return self.store.get_many([_DATA + k for k in keys])

    def close(self) -> None:
        """Close the underlying store."""
        self.store.close()

