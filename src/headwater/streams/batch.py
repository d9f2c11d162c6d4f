"""One micro-batch through a topology, shared by the Kafka runtime and the in-process test driver.

:class:`BatchContext` holds what both need: the write-back caches of the state stores, the map
from a frame row back to its source record (for dead letters) and the clock. Subclasses say how
records are produced and how dead letters are sent.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence

import polars as pl

from headwater.connectors.dlq import DeadLetter
from headwater.state.cache import WriteBackCache
from headwater.state.manager import StateManager
from headwater.streams.decode import BatchDecoder, JsonDecoder, RawDecoder
from headwater.streams.execution import run_node
from headwater.streams.records import OFFSET, PARTITION, TOPIC, RawRecord, RecordBatch
from headwater.streams.topology import SourceSpec, Topology


class BatchContext(ABC):
    """The :class:`~headwater.streams.context.ProcessingContext` base of runtime and driver."""

    def __init__(
        self,
        topology: Topology,
        stores: StateManager,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topology = topology
        self.stores = stores
        self.clock = clock
        self.caches: dict[tuple[str, int], WriteBackCache] = {}
        self._ttl = {spec.name: spec.ttl_ms for spec in topology.stores}
        self._batch: RecordBatch | None = None

    # --- ProcessingContext ------------------------------------------------------------------

    @abstractmethod
    def produce(
        self,
        topic: str,
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        timestamps_ms: Sequence[int] | None = None,
    ) -> None:
        """Queue output records."""

    @abstractmethod
    def internal_topic(self, store_name: str) -> str:
        """The physical repartition topic of a store."""

    @abstractmethod
    def send_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Deliver dead letters (to the DLQ topic, or a list in the driver)."""

    @abstractmethod
    def encode_avro(self, frame: pl.DataFrame, subject: str, schema: str) -> list[bytes]:
        """Encode the frame as Confluent-framed Avro."""

    def dead_letter(self, rows: pl.DataFrame, error: BaseException, operator: str) -> None:
        """Dead-letter the source records of ``rows`` (each sent once, even if a row repeats)."""
        batch = self._batch
        if batch is None:
            return
        sources = rows.filter(pl.col(TOPIC) == batch.topic).select(PARTITION, OFFSET)
        positions = [batch.position(p, o) for p, o in sources.unique(maintain_order=True).iter_rows()]
        self.send_dead_letters(
            [to_dead_letter(batch.record(i), error, operator) for i in positions if i is not None]
        )

    def state(self, store_name: str, partition: int) -> WriteBackCache:
        """The write-back cache of a store partition, opened on first use."""
        cache = self.caches.get((store_name, partition))
        if cache is None:
            store = self.stores.open(store_name, partition, ttl_ms=self._ttl.get(store_name))
            cache = self.caches[(store_name, partition)] = WriteBackCache(store)
        return cache

    def now_ms(self) -> int:
        """Processing time in epoch milliseconds."""
        return int(self.clock() * 1000)

    # --- batch processing -------------------------------------------------------------------

    def process(self, spec: SourceSpec, decoder: BatchDecoder, batch: RecordBatch) -> None:
        """Decode a batch of one source topic and run it through the topology."""
        self._batch = batch
        frame, rejected = decoder.decode(batch)
        if rejected:
            self.send_dead_letters(
                [to_dead_letter(batch.record(r.index), r.error, "decode") for r in rejected]
            )
        for node in self.topology_children(spec.topic):
            run_node(node, frame, self, self.topology.on_error)
        self._batch = None

    def topology_children(self, topic: str) -> list:
        """The operator nodes fed by a source topic."""
        for spec, children in self.topology.roots():
            if spec.topic == topic:
                return children
        raise KeyError(topic)

    def dirty_caches(self) -> Iterable[tuple[tuple[str, int], WriteBackCache]]:
        """Caches holding changes not yet checkpointed."""
        return ((k, c) for k, c in self.caches.items() if c.dirty())


def plain_decoder(spec: SourceSpec) -> BatchDecoder:
    """The decoder of a JSON or raw source (Avro sources need the registry: see the runtime)."""
    if spec.value_format == "json":
        return JsonDecoder()
    if spec.value_format == "raw":
        return RawDecoder()
    raise ValueError(f"{spec.topic}: {spec.value_format} sources need a schema registry")


def to_dead_letter(record: RawRecord, error: BaseException, operator: str) -> DeadLetter:
    """A dead letter for ``record`` carrying the original bytes and the error."""
    return DeadLetter(
        key=record.key,
        value=record.value,
        headers=record.headers,
        error_class=type(error).__name__,
        error_message=str(error) or repr(error),
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        operator=operator,
        source_timestamp_ms=record.timestamp_ms,
    )
