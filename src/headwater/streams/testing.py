"""``InProcessTestDriver``: run a topology without a broker, deterministically, in-process.

The driver feeds records straight into the same batch processing the Kafka runtime uses (same
decoders, operators, state caches and DLQ records); only the edges differ: outputs and dead
letters are collected in lists, stores are in memory, Avro uses an in-memory schema registry,
and time is whatever the test sets. Every ``pipe`` call is one micro-batch, followed by a
checkpoint unless ``auto_checkpoint=False``.

Example::

    driver = InProcessTestDriver(topology)
    driver.pipe("orders", [{"userId": "u1", "total": 10.0}], keys=["u1"])
    assert driver.read_json("orders-per-user") == [{"count": 1, ...}]
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import orjson
import polars as pl

from headwater.connectors.dlq import DeadLetter
from headwater.state.manager import StateManager
from headwater.streams.batch import BatchContext, plain_decoder
from headwater.streams.decode import BatchDecoder, Rejected, with_metadata
from headwater.streams.records import RawRecord, RecordBatch
from headwater.streams.repartition import REPARTITION_SUFFIX
from headwater.streams.topology import SourceSpec, Topology


@dataclass(frozen=True)
class OutputRecord:
    """A record a topology produced."""

    topic: str
    key: bytes | None
    value: bytes | None


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
        rows = [self._driver._decode_avro(v or b"") for v in batch.values]
        body = pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()
        return with_metadata(batch, body, None), []


def _decoder(spec: SourceSpec, driver: InProcessTestDriver) -> BatchDecoder:
    if spec.internal:
        return _DriverAvroDecoder(driver)
    return _FrameDecoder() if spec.value_format == "avro" else plain_decoder(spec)


class InProcessTestDriver(BatchContext):
    """Runs a :class:`Topology` in-process, without Kafka (see the module docstring).

    Args:
        topology: the topology under test.
        start_time_ms: the initial processing time.
        auto_checkpoint: checkpoint after each ``pipe`` (flush caches into the stores).
    """

    def __init__(
        self, topology: Topology, start_time_ms: int = 0, auto_checkpoint: bool = True
    ) -> None:
        self._clock = _ManualClock(start_time_ms)
        super().__init__(topology, StateManager(Path("."), topology.name, in_memory=True),
                         self._clock)
        self.auto_checkpoint = auto_checkpoint
        self.outputs: list[OutputRecord] = []
        self.dead_letters: list[DeadLetter] = []
        self._next_offset: dict[tuple[str, int], int] = {}
        self._schema_ids: dict[tuple[str, str], int] = {}
        self._pending: list[tuple[bytes | None, bytes | None, int, str]] = []
        self._decoders: dict[str, BatchDecoder] = {
            topic: _decoder(spec, self) for topic, spec in topology.sources.items()
        }

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
        """Feed one micro-batch to a source topic.

        ``values`` are dicts (encoded as JSON for JSON sources, and taken as decoded rows for Avro
        sources) or raw bytes (e.g. garbage, to exercise the DLQ).
        """
        spec = self._source(topic)
        records = []
        for i, value in enumerate(values):
            key = None if keys is None else keys[i]
            records.append(self._record(
                topic,
                partition,
                key.encode() if isinstance(key, str) else key,
                orjson.dumps(value) if isinstance(value, dict) else value,
                timestamps_ms[i] if timestamps_ms else self.now_ms(),
            ))
        self.process(spec, self._decoders[topic], RecordBatch.from_records(topic, records))
        while self._pending:
            batch, self._pending = self._pending, []
            internal = batch[0][3]
            self.process(self._source(internal), self._decoders[internal], RecordBatch.from_records(
                internal, [self._record(internal, 0, key, value, ts) for key, value, ts, _ in batch]
            ))
        if self.auto_checkpoint:
            self.checkpoint()

    def _record(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, ts: int
    ) -> RawRecord:
        offset = self._next_offset.get((topic, partition), 0)
        self._next_offset[(topic, partition)] = offset + 1
        return RawRecord(topic, partition, offset, ts, key, value)

    def advance_time(self, ms: int) -> None:
        """Move processing time forward."""
        self._clock.ms += ms

    def checkpoint(self) -> None:
        """Flush every write-back cache into its store (what a real checkpoint ends with)."""
        for cache in self.caches.values():
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

    def _decode_avro(self, value: bytes) -> dict[str, Any]:
        schemas = {sid: schema for (_, schema), sid in self._schema_ids.items()}
        assert value[0] == 0
        schema = fastavro.parse_schema(orjson.loads(schemas[int.from_bytes(value[1:5])]))
        return fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)

    def store(self, store_name: str, partition: int = 0) -> dict[bytes, bytes]:
        """A store's checkpointed contents."""
        return dict(self.stores.open(store_name, partition).items())

    # --- BatchContext edges -----------------------------------------------------------------

    def produce(
        self,
        topic: str,
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        timestamps_ms: Sequence[int] | None = None,
    ) -> None:
        if topic in self.topology.sources:  # an internal (repartition) topic: loop it back
            times = timestamps_ms or [self.now_ms()] * len(keys)
            self._pending.extend(zip(keys, values, times, [topic] * len(keys), strict=True))
            return
        self.outputs.extend(OutputRecord(topic, k, v) for k, v in zip(keys, values, strict=True))

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

    def _source(self, topic: str) -> SourceSpec:
        try:
            return self.topology.sources[topic]
        except KeyError:
            raise KeyError(f"{topic!r} is not a source of topology {self.topology.name!r}") from None
