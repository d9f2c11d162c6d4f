"""``InProcessTestDriver``: run a topology without a broker, deterministically, in-process.

The driver feeds records into the same batch processing the Kafka runtime uses (same decoders,
operators, state caches, tasks, timers, sinks and DLQ records); only the edges differ: topics
are in-memory logs per partition, outputs and dead letters are lists, stores are in memory, Avro
uses an in-memory schema registry, and time is whatever the test sets.

Like production:

- records piped to partition ``p`` go to the task of ``p``; repartition topics have a partition
  count (``partitions``; default: the largest declared source count, else 1) and records are
  routed to them by the Java clients' murmur2 partitioner on the key;
- every ``pipe`` call is one micro-batch of its topic, then each repartition topic's new
  records are one batch, until nothing is left, then a checkpoint (unless
  ``auto_checkpoint=False``);
- a checkpoint runs the production order: wall-clock punctuation, sinks ``pre_commit``, the
  "Kafka commit" (offsets and their metadata into :attr:`committed`), sinks ``commit``, caches
  flushed into the stores;
- ``revoke``/``lose``/``assign`` move tasks; ``crash`` kills the "process" at a checkpoint step
  and restarts it: uncommitted outputs, dead letters and repartition records vanish (an
  aborted transaction), positions go back to the committed offsets, the tasks are assigned
  again (sinks ``recover``) and the records after the committed offsets are processed again.

Example::

    driver = InProcessTestDriver(topology, partitions=4)
    driver.pipe("orders", [{"userId": "u1", "total": 10.0}], keys=["u1"], partition=2)
    assert driver.read_json("orders-per-user") == [{"count": 1, ...}]
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import fastavro
import orjson
import polars as pl

from headwater.connectors.dlq import DeadLetter
from headwater.state.manager import StateManager
from headwater.schemas.layout import frame_schema
from headwater.streams.batch import BatchContext, plain_decoder
from headwater.streams.decode import BatchDecoder, Rejected, with_metadata
from headwater.streams.partitioner import partition_for
from headwater.schemas.layout import frame_schema
from headwater.streams.records import RawRecord, RecordBatch
from headwater.streams.tables import GlobalStore
from headwater.streams.repartition import REPARTITION_SUFFIX
from headwater.streams.task import Committed, TaskId
from headwater.streams.topology import SourceSpec, Topology, TopologyError

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class OutputRecord:
    """A record a topology produced."""

    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    """The record timestamp the topology set (``None`` when it left it to the producer)."""


class _ManualClock:
    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def __call__(self) -> float:
        return self.ms / 1000


class _FrameDecoder:
    """Avro sources in the driver: the test hands dicts; they become a frame directly."""

    def decode(self, batch: RecordBatch) -> tuple[pl.DataFrame, list[Rejected]]:
        rows, good, bad = [], [], []
        for i, value in enumerate(batch.values):
            try:
                rows.append(orjson.loads(value or b""))
                good.append(i)
            except orjson.JSONDecodeError as exc:
                bad.append(Rejected(i, exc))
        body = pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()
        return with_metadata(batch, body, good), bad


class _DriverAvroDecoder:
    """Internal (repartition) topics in the driver: decode what the driver's encoder wrote."""

    def __init__(self, driver: InProcessTestDriver) -> None:
        self._driver = driver

    def decode(self, batch: RecordBatch) -> tuple[pl.DataFrame, list[Rejected]]:
        body = self._driver.decode_avro([v or b"" for v in batch.values])
        return with_metadata(batch, body, None), []


def _decoder(spec: SourceSpec, driver: InProcessTestDriver) -> BatchDecoder:
    if spec.internal:
        return _DriverAvroDecoder(driver)
    return _FrameDecoder() if spec.value_format == "avro" else plain_decoder(spec)


class InProcessTestDriver(BatchContext):
    """Runs a :class:`Topology` in-process, without Kafka (see the module docstring).

    Args:
        topology: the topology under test.
        start_time_ms: the initial processing (wall-clock) time.
        auto_checkpoint: checkpoint after each ``pipe``, ``advance_time`` and ``assign``.
        partitions: partition counts: one for every topic, or per logical topic name
            (repartition topics as ``<store>-repartition``). A source without a count accepts
            any partition; when every external source has one, all tasks are assigned at once
            (so wall-clock timers fire for partitions without records too).

    Raises:
        TopologyError: declared counts break the topology's co-partitioning requirement.
    """

    def __init__(
        self,
        topology: Topology,
        start_time_ms: int = 0,
        auto_checkpoint: bool = True,
        *,
        partitions: int | Mapping[str, int] | None = None,
    ) -> None:
        self._clock = _ManualClock(start_time_ms)
        super().__init__(topology, StateManager(Path("."), topology.name, in_memory=True),
                         self._clock)
        self.auto_checkpoint = auto_checkpoint
        self.outputs: list[OutputRecord] = []
        self.dead_letters: list[DeadLetter] = []
        self.committed: dict[TopicPartition, Committed] = {}
        """Committed offsets (next to read) and their metadata, per (logical topic, partition)."""
        self._logs: dict[TopicPartition, list[RawRecord]] = {}
        self._read: dict[TopicPartition, int] = {}
        self._revoked: set[TaskId] = set()
        self._marks: tuple[int, int, dict[TopicPartition, int]] = (0, 0, {})
        self._schema_ids: dict[tuple[str, str], int] = {}
        self._decoders: dict[str, BatchDecoder] = {
            topic: _decoder(spec, self) for topic, spec in topology.sources.items()
        }
        self._decoders.update({topic: _decoder(spec.source, self)
                               for topic, spec in topology.global_tables.items()})
        self._globals: dict[str, GlobalStore] = {}
        self._counts = self._partition_counts(partitions)
        external = [t for t, s in topology.sources.items() if not s.internal]
        if all(t in self._counts for t in external):
            everything = [(t, p) for t in topology.sources for p in range(self._counts[t])]
            self.assign_tasks(everything, self.committed)

    # --- feeding ----------------------------------------------------------------------------

    def pipe(
        self,
        topic: str,
        values: Sequence[dict[str, Any] | bytes | None],
        *,
        keys: Sequence[str | bytes | None] | None = None,
        partition: int = 0,
        timestamps_ms: Sequence[int] | None = None,
    ) -> None:
        """Append records to partition ``partition`` of a source topic and process them.

        Records piped to a global table's topic are applied to the global table before any
        further stream batch (a ``None`` value is a tombstone, for tables too).

        ``values`` are dicts (encoded as JSON for JSON sources, and taken as decoded rows for Avro
        sources) or raw bytes (e.g. garbage, to exercise the DLQ). ``timestamps_ms`` are the
        record timestamps (the event time); default: the current processing time. Records of
        a revoked or lost partition wait in the topic until it is assigned again.
        """
        if topic in self.topology.global_tables:
            spec = self.topology.global_tables[topic].source
        else:
            spec = self._source(topic)
        if spec.internal:
            raise ValueError(f"{topic!r} is a repartition topic; pipe to its upstream source")
        count = self._counts.get(topic)
        if partition < 0 or (count is not None and partition >= count):
            raise ValueError(f"{topic!r} has no partition {partition} (partitions: {count})")
        for i, value in enumerate(values):
            key = None if keys is None else keys[i]
            self._append(topic, partition, key.encode() if isinstance(key, str) else key,
                         orjson.dumps(value) if isinstance(value, dict) else value,
                         timestamps_ms[i] if timestamps_ms else self.now_ms())
        self._run()
        if self.auto_checkpoint:
            self.checkpoint()

    def advance_time(self, ms: int) -> None:
        """Move wall-clock time forward and punctuate (wall-clock timers fire, their rows are
        processed), then checkpoint if ``auto_checkpoint``."""
        self._clock.ms += ms
        self.punctuate(self.now_ms())
        self._run()
        if self.auto_checkpoint:
            self.checkpoint()

    def caught_up(self, task: TaskId) -> bool:
        """Whether every record piped to the task's partitions has been processed."""
        return all(self._read.get(tp, 0) >= len(self._logs.get(tp, ()))
                   for tp in self.partitions_of(task))

    # --- checkpoints, rebalances and crashes ------------------------------------------------

    def checkpoint(self) -> None:
        """A checkpoint in production order: punctuate, sinks pre-commit, "Kafka commit" (into
        :attr:`committed`), sinks commit, caches flushed into the stores."""
        self._checkpoint(until="done")

    def revoke(self, partitions: Iterable[TopicPartition]) -> set[TaskId]:
        """Revoke the tasks of ``partitions`` (eager protocol: checkpoint, then release)."""
        tasks = self.tasks_for(partitions) & set(self.tasks)
        self.checkpoint()
        self.release_tasks(tasks, discard=False)
        self._revoked |= tasks
        return tasks

    def lose(self, partitions: Iterable[TopicPartition]) -> set[TaskId]:
        """Lose the tasks of ``partitions`` without a checkpoint: their uncommitted state and
        sink buffers are discarded and their partitions rewind to the committed offsets (what
        they already produced stays in :attr:`outputs`)."""
        tasks = self.tasks_for(partitions) & set(self.tasks)
        self.release_tasks(tasks, discard=True)
        self._revoked |= tasks
        for task in tasks:
            for tp in self.partitions_of(task):
                self._read[tp] = self._committed_offset(tp)
        return tasks

    def assign(self, partitions: Iterable[TopicPartition]) -> set[TaskId]:
        """Assign the tasks of ``partitions`` (state restored, stream time and sinks recovered
        from :attr:`committed`), then process what waits in their partitions."""
        tasks = self.tasks_for(partitions)
        self._revoked -= tasks
        self.assign_tasks([tp for t in sorted(tasks) for tp in self.partitions_of(t)],
                          self.committed)
        self._run()
        if self.auto_checkpoint:
            self.checkpoint()
        return tasks

    def crash(self, after: Literal["processing", "pre_commit", "commit"] = "processing") -> None:
        """Kill the process during a checkpoint and restart it with the same tasks.

        ``after``: the last step that completed: ``"processing"`` (no checkpoint began),
        ``"pre_commit"`` (sinks staged, no Kafka commit) or ``"commit"`` (Kafka commit done,
        sinks not yet told). Then everything uncommitted is gone and the tasks are recovered.
        """
        if after != "processing":
            self._checkpoint(until=after)
        outputs, letters, internal = self._marks
        del self.outputs[outputs:], self.dead_letters[letters:]
        for tp, log in self._logs.items():
            if tp in internal or self.topology.decoding_spec(tp[0]).internal:
                del log[internal.get(tp, 0):]
        tasks = set(self.tasks)
        self.release_tasks(tasks, discard=True)
        self._read = {tp: self._committed_offset(tp) for tp in self._logs}
        self._wall_ms, self._checkpoint_id = None, 0
        self.assign_tasks([tp for t in sorted(tasks) for tp in self.partitions_of(t)],
                          self.committed)
        self._run()

    def _checkpoint(self, until: Literal["pre_commit", "commit", "done"]) -> None:
        self.punctuate(self.now_ms())
        self._run()
        prepared = self.pre_commit()
        if until == "pre_commit":
            return
        self.committed.update(prepared.offsets)
        internal = {tp: len(log) for tp, log in self._logs.items()
                    if self.topology.decoding_spec(tp[0]).internal}
        self._marks = (len(self.outputs), len(self.dead_letters), internal)
        if until == "done":
            self.commit(prepared)
        for cache in self.caches.values():  # (after a crash: what restore brings back)
            cache.flush(None)

    # --- inspecting -------------------------------------------------------------------------

    def read(self, topic: str) -> list[OutputRecord]:
        """Records produced to ``topic`` so far, in order."""
        return [r for r in self.outputs if r.topic == topic]

    def read_json(self, topic: str) -> list[dict[str, Any]]:
        """Values produced to a JSON topic, parsed."""
        return [orjson.loads(r.value) for r in self.read(topic) if r.value is not None]

    def read_avro(self, topic: str) -> list[dict[str, Any]]:
        """Values produced to an Avro topic, decoded with the schema they were written with."""
        return [self._decode_avro(r.value or b"") for r in self.read(topic)]

    def records(self, topic: str, partition: int) -> list[RawRecord]:
        """The records in a partition of a source or repartition topic (logical name)."""
        return list(self._logs.get((topic, partition), []))

    def _decode_avro(self, value: bytes) -> dict[str, Any]:
        schemas = {sid: schema for (_, schema), sid in self._schema_ids.items()}
        assert value[0] == 0
        schema = fastavro.parse_schema(orjson.loads(schemas[int.from_bytes(value[1:5])]))
        return fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)

    def store(self, store_name: str, partition: int = 0) -> dict[bytes, bytes]:
        """A store's checkpointed contents."""
        return dict(self.stores.open(store_name, partition, ttl_ms=self._ttl.get(store_name)).items())

    # --- BatchContext edges -----------------------------------------------------------------

    def produce(
        self,
        topic: str,
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        timestamps_ms: Sequence[int] | None = None,
    ) -> None:
        if topic in self.topology.sources:  # an internal (repartition) topic: route by key
            times = timestamps_ms or [self.now_ms()] * len(keys)
            count = self._counts[topic]
            for key, value, ts in zip(keys, values, times, strict=True):
                self._append(topic, partition_for(key, count), key, value, ts)
            return
        stamps: Sequence[int | None] = timestamps_ms or [None] * len(keys)
        self.outputs.extend(OutputRecord(topic, k, v, t)
                            for k, v, t in zip(keys, values, stamps, strict=True))

    def internal_topic(self, store_name: str) -> str:
        return f"{store_name}{REPARTITION_SUFFIX}"

    def send_dead_letters(self, letters: list[DeadLetter]) -> None:
        self.dead_letters.extend(letters)

    def encode_avro(self, frame: pl.DataFrame, subject: str, schema: str) -> list[bytes]:
        schema_id = self._schema_ids.setdefault((subject, schema), len(self._schema_ids) + 1)
        parsed = fastavro.parse_schema(orjson.loads(schema))
        out = []
        for row in frame.to_dicts():
            buf = io.BytesIO()
            buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
            fastavro.schemaless_writer(buf, parsed, row)
            out.append(buf.getvalue())
        return out

    # --- internals --------------------------------------------------------------------------

    def _run(self) -> None:
        """Consume: global tables first (every partition, to its end), then per topic in
        declaration order, the unread records of its assigned partitions as one batch; again
        until no assigned partition has unread records."""
        self._apply_global_tables()
        progress = True
        while progress:
            progress = False
            for topic, spec in self.topology.sources.items():
                sub = self.topology.subtopology_of(topic)
                records: list[RawRecord] = []
                for tp in sorted(tp for tp in self._logs if tp[0] == topic):
                    log, position = self._logs[tp], self._read.get(tp, 0)
                    task = TaskId(sub, tp[1])
                    if position >= len(log) or task in self._revoked:
                        continue
                    if task not in self.tasks:
                        self.assign_tasks(self.partitions_of(task), self.committed)
                    records += log[position:]
                    self._read[tp] = len(log)
                if records:
                    self.process(spec, self._decoders[topic], RecordBatch.from_records(topic, records))
                    progress = True

    def _apply_global_tables(self) -> None:
        """Apply the unread records of every global table's topic, in offset order per
        partition (what the worker's reader does before each batch)."""
        from headwater.streams.tables import table_frame

        for topic in self.topology.global_tables:
            store = self.global_store(topic)
            records = [r for tp in sorted(tp for tp in self._logs if tp[0] == topic)
                       for r in self._logs[tp][store.offsets.get(tp[1], 0):]]
            if not records:
                continue
            batch = RecordBatch.from_records(topic, records)
            spec = self.topology.decoding_spec(topic)
            applied = table_frame(self, replace(spec, table=topic), self._decoders[topic], batch)
            keep = set(zip(applied.get_column("_partition").to_list(),
                           applied.get_column("_offset").to_list()))
            skip = {i for i, r in enumerate(records) if (r.partition, r.offset) not in keep}
            store.apply(batch.partitions, batch.offsets, batch.keys, batch.values, skip)

    def global_store(self, topic: str) -> GlobalStore:
        store = self._globals.get(topic)
        if store is None:
            spec = self.topology.global_tables[topic]
            store = self._globals[topic] = GlobalStore(self.stores.open(spec.store, -1))
        return store

    def source_decoder(self, topic: str) -> BatchDecoder:
        return self._decoders[topic]

    def decode_avro(self, values: Sequence[bytes]) -> pl.DataFrame:
        """Decode what :meth:`encode_avro` wrote, in the writer schemas' frame layouts (exact
        dtypes, as the runtime's decoder gives them)."""
        if not values:
            return pl.DataFrame()
        schemas = {sid: schema for (_, schema), sid in self._schema_ids.items()}
        frames: list[pl.DataFrame] = []
        start = 0
        for i in range(1, len(values) + 1):
            if i < len(values) and values[i][1:5] == values[start][1:5]:
                continue
            writer = orjson.loads(schemas[int.from_bytes(values[start][1:5])])
            parsed = fastavro.parse_schema(writer)
            rows = [fastavro.schemaless_reader(io.BytesIO(v[5:]), parsed)
                    for v in values[start:i]]
            frames.append(pl.from_dicts(rows, schema=frame_schema(writer)))
            start = i
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")

    def _append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                ts: int) -> None:
        log = self._logs.setdefault((topic, partition), [])
        log.append(RawRecord(topic, partition, len(log), ts, key, value))

    def _committed_offset(self, tp: TopicPartition) -> int:
        committed = self.committed.get(tp)
        return 0 if committed is None else committed.offset

    def _partition_counts(self, partitions: int | Mapping[str, int] | None) -> dict[str, int]:
        sources = self.topology.sources
        if isinstance(partitions, int):
            counts = {t: partitions for t in sources}
        else:
            counts = {t: n for t, n in (partitions or {}).items() if t in sources}
            unknown = set(partitions or {}) - set(sources)
            if unknown:
                raise TopologyError(f"partition counts for topics that are not sources: {unknown}")
        default = max((n for t, n in counts.items() if not sources[t].internal), default=1)
        for topic, spec in sources.items():
            if spec.internal:  # co-partitioned with an external topic (a table): its count
                group = next((g for g in self.topology.copartition_groups() if topic in g), ())
                external = [counts[t] for t in group if not sources[t].internal and t in counts]
                counts.setdefault(topic, external[0] if external else default)
        for group in self.topology.copartition_groups():
            declared = {counts[t] for t in group if t in counts}
            if len(declared) > 1:
                raise TopologyError(f"co-partitioned topics {sorted(group)} differ in partitions")
        return counts

    def _source(self, topic: str) -> SourceSpec:
        try:
            return self.topology.sources[topic]
        except KeyError:
            raise KeyError(f"{topic!r} is not a source of topology {self.topology.name!r}") from None
