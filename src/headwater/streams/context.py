"""The services an operator may use while processing a batch.

The Kafka runtime and the in-process test driver each implement :class:`ProcessingContext`; the
operators cannot tell them apart, which is what lets unit tests run the same operators as
production.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import polars as pl

from headwater.state.cache import WriteBackCache
from headwater.streams.task import TaskId

if TYPE_CHECKING:
    from headwater.streams.tables import GlobalStore


class ProcessingContext(Protocol):
    """What the engine offers an operator during one batch (or one timer call)."""

    def produce(
        self,
        topic: str,
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        timestamps_ms: Sequence[int] | None = None,
    ) -> None:
        """Queue output records (sent at once, made durable at the next checkpoint)."""

    def internal_topic(self, store_name: str) -> str:
        """The physical name of the repartition topic feeding ``store_name``."""

    def dead_letter(self, rows: pl.DataFrame, error: BaseException, operator: str) -> None:
        """Send the source records of ``rows`` (traced by their metadata columns) to the DLQ."""

    def state(self, store_name: str, partition: int) -> WriteBackCache:
        """The write-back cache of ``store_name`` for an input partition (opened on demand)."""

    def encode_avro(self, frame: pl.DataFrame, subject: str, schema: str) -> list[bytes]:
        """Encode the frame's user columns as Confluent-framed Avro under ``subject``."""

    def decode_avro(self, values: Sequence[bytes]) -> pl.DataFrame:
        """Decode Confluent-framed Avro (what :meth:`encode_avro` wrote) into a frame in the
        writer schema's layout (user columns only, in input order)."""

    def row_subject(self, name: str) -> str:
        """The registry subject for rows an operator keeps in state under ``name``
        (``<application_id>-<name>-value``)."""

    def now_ms(self) -> int:
        """Processing time (controllable in the test driver)."""

    def task(self, partition: int) -> TaskId:
        """The task of the rows being processed that come from input ``partition``."""

    def stream_time(self, task: TaskId) -> int | None:
        """The task's stream time; during a batch, as it was before the batch."""

    def source_topic_of(self, task: TaskId) -> str:
        """The (first) source topic of the task's sub-topology: what timer rows put in ``_topic``."""

    def decode_source_values(self, topic: str, values: Sequence[bytes]) -> pl.DataFrame:
        """Decode values as stored from ``topic`` (a table's) with that topic's decoder."""

    def global_store(self, topic: str) -> GlobalStore:
        """The worker-local store of the global table read from ``topic``."""
