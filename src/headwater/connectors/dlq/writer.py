"""Writing dead letters: the topic, its size limit, and a writer on the worker's producer."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from headwater.connectors.dlq.errors import DeadLetterDeliveryError, DeadLetterTopicError
from headwater.connectors.dlq.records import (
    DROPPABLE,
    DeadLetter,
    Header,
    dlq_headers,
    header_bytes,
)
from headwater.connectors.produce import ProducerQueueFull, produce, purged
from headwater.errors import ConfigError

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
DEFAULT_RETENTION_MS = 14 * 24 * 3600 * 1000
"""Dead letters are kept 14 days by default: time to notice, fix and replay."""
DEFAULT_BUFFER_FULL_TIMEOUT_S = 60.0
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``: the limit a writer assumes until told better."""
RECORD_OVERHEAD_BYTES = 128
"""Record batch header (61 bytes) plus the record's own varints (at most 41), rounded up."""
HEADER_OVERHEAD_BYTES = 10
"""Per header: the two length varints."""

_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_MAX_TOPIC_LEN = 249


def dlq_topic(application_id: str) -> str:
    """The dead-letter topic of an application: ``<application_id>.dlq``.

    Raises:
        ConfigError: ``application_id`` would not make a legal topic name.
    """
    name = f"{application_id}{DLQ_SUFFIX}"
    if not _TOPIC_CHARS.fullmatch(application_id) or len(name) > _MAX_TOPIC_LEN:
        raise ConfigError(
            "application_id",
            f"{application_id!r} cannot name the dead-letter topic (use A-Z a-z 0-9 . _ -, "
            f"at most {_MAX_TOPIC_LEN - len(DLQ_SUFFIX)} characters)",
        )
    return name


def ensure_dlq_topic(
    admin: AdminClient,
    topic: str,
    partitions: int = 1,
    retention_ms: int = DEFAULT_RETENTION_MS,
    replication_factor: int = -1,
    timeout_s: float = 30.0,
) -> bool:
    """Create the dead-letter topic unless it exists (idempotent, safe to race).

    An existing topic is left as it is (its partitions and config are not checked or altered).
    Returns once the topic shows up in the cluster metadata, so it can be produced to at once.

    Args:
        admin: admin client on the cluster.
        topic: the topic name (see :func:`dlq_topic`).
        partitions: partition count for a new topic.
        retention_ms: ``retention.ms`` of a new topic (``cleanup.policy=delete``).
        replication_factor: for a new topic; ``-1`` is the broker's ``default.replication.factor``.
        timeout_s: how long to wait for the broker (blocks up to about twice this).

    Returns:
        True if this call created the topic, False if it already existed.

    Raises:
        DeadLetterTopicError: the broker refused or did not answer in time.
    """
    new = NewTopic(
        topic,
        num_partitions=partitions,
        replication_factor=replication_factor,
        config={"cleanup.policy": "delete", "retention.ms": str(retention_ms)},
    )
    future = admin.create_topics([new], operation_timeout=timeout_s)[topic]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise DeadLetterTopicError(topic, f"cannot create: {exc}") from exc
    except Exception as exc:  # concurrent.futures.TimeoutError and friends
        raise DeadLetterTopicError(topic, f"cannot create: {exc!r}") from exc
    _await_metadata(admin, topic, timeout_s)
    return True


def _await_metadata(admin: AdminClient, topic: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            return
        if time.monotonic() >= deadline:
            raise DeadLetterTopicError(topic, f"created but not in metadata after {timeout_s:g}s")
        time.sleep(0.1)


def estimated_message_size(
    key: bytes | None, value: bytes | None, headers: Sequence[Header] | None
) -> int:
    """A conservative bound of what one record costs against ``max.message.bytes``.

    Its key, value and headers plus the record-batch and per-record framing, plus 1/64 + 256
    bytes for what compression can add to incompressible data (lz4, zstd, gzip and snappy add
    well under that).
    """
    raw = (RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"") + header_bytes(headers)
           + HEADER_OVERHEAD_BYTES * len(headers or ()))
    return raw + raw // 64 + 256


def dlq_size_limit(
    admin: AdminClient,
    topic: str,
    producer_config: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> int:
    """The largest dead letter that can be written: the smaller of the topic's
    ``max.message.bytes`` (its effective value, broker default included) and the producer's
    ``message.max.bytes`` (from ``producer_config``, librdkafka's default when absent).

    The broker applies the topic's limit to a whole record batch and librdkafka batches up to
    ``min(batch.size, message.max.bytes)``: when that exceeds the topic's limit, several dead
    letters produced together can be refused although each fits; this is logged as a warning.

    Raises:
        DeadLetterTopicError: the topic's configuration could not be read.
    """
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(
            timeout=timeout_s)
        topic_limit = int(configs["max.message.bytes"].value)
    except KafkaException as exc:
        raise DeadLetterTopicError(topic, f"cannot read max.message.bytes: {exc}") from exc
    except Exception as exc:  # timeouts, a missing entry: still about this topic
        raise DeadLetterTopicError(topic, f"cannot read max.message.bytes: {exc!r}") from exc
    config = producer_config or {}
    producer_limit = int(config.get("message.max.bytes", DEFAULT_MAX_MESSAGE_BYTES))
    batch_limit = min(producer_limit, int(config.get("batch.size", DEFAULT_MAX_MESSAGE_BYTES)))
    if batch_limit > topic_limit:
        log.warning("dead-letter topic %s accepts batches of at most %d bytes (max.message.bytes) "
                    "but the producer batches up to %d: dead letters batched together can be "
                    "refused; raise the topic's max.message.bytes to at least %d",
                    topic, topic_limit, batch_limit, batch_limit)
    return min(topic_limit, producer_limit)


class DeadLetterWriter:
    """Sends dead letters through the worker's producer.

    Using the worker's own producer makes dead letters part of its transaction under
    exactly-once (they appear iff the batch's offsets are committed) and part of the checkpoint's
    producer flush under at-least-once. :meth:`send` only enqueues; it does not flush.

    Each message gets the original key/value/headers plus the ``hw.dlq.*`` headers of
    :func:`dlq_headers`; its Kafka timestamp is the dead-lettering time (so topic retention
    counts from when the record failed, not from when it was first written).

    Oversized dead letters: a letter whose :func:`estimated_message_size` exceeds
    :attr:`max_message_bytes` is written without its largest part (usually the value; then the
    next largest of value, original headers and key, until it fits), with
    ``hw.dlq.<part>-dropped``/``-size`` headers; its source coordinates stay, so ``dlq replay``
    re-reads the original from the source topic. Should the producer still refuse one as too
    large, it is written with all three dropped.

    Not thread-safe: use it from the thread that owns the producer.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        clock: Callable[[], float] = time.time,
        buffer_full_timeout_s: float = DEFAULT_BUFFER_FULL_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        """
        Args:
            producer: the worker's producer (transactional or not).
            topic: the dead-letter topic (must exist: see :func:`ensure_dlq_topic`).
            clock: seconds since the epoch; ``hw.dlq.time`` and the message timestamp.
            buffer_full_timeout_s: how long :meth:`send` waits (serving delivery reports) while
                the producer's local queue is full before giving up.
            max_message_bytes: the size limit of a dead letter; set it from
                :func:`dlq_size_limit` once the topic exists.
        """
        self._producer = producer
        self._topic = topic
        self._clock = clock
        self._buffer_full_timeout_s = buffer_full_timeout_s
        self.max_message_bytes = max_message_bytes
        self._counts: Counter[str] = Counter()
        self._trimmed = 0
        self._failed = 0
        self._first_error: str | None = None
        self._too_large = False

    @property
    def topic(self) -> str:
        """The dead-letter topic written to."""
        return self._topic

    @property
    def counts(self) -> dict[str, int]:
        """Dead letters sent (enqueued) so far, per error class (a copy; for metrics)."""
        return dict(self._counts)

    @property
    def trimmed(self) -> int:
        """Dead letters sent without their value, headers or key because of their size."""
        return self._trimmed

    @property
    def delivery_failures(self) -> int:
        """Dead letters whose delivery report was an error (since the last check)."""
        return self._failed

    def send(self, letters: Iterable[DeadLetter]) -> int:
        """Enqueue ``letters`` on the producer; return how many. Does not flush.

        Blocks only while the producer's queue is full (serving delivery reports with
        ``poll``), at most ``buffer_full_timeout_s`` per letter.

        Raises:
            DeadLetterDeliveryError: the queue stayed full, or the producer refused a message
                for another reason than its size.
        """
        now_ms = int(self._clock() * 1000)
        sent = 0
        for letter in letters:
            self._produce(letter, now_ms)
            self._counts[letter.error_class] += 1
            sent += 1
        return sent

    def raise_for_delivery_errors(self) -> None:
        """Raise if a dead letter failed delivery since the last call (call after a flush).

        Raises:
            DeadLetterDeliveryError: with the count and the first error; the count is reset.
        """
        if self._failed:
            failed, first, self._failed, self._first_error = self._failed, self._first_error, 0, None
            if self._too_large:
                first = (f"{first}: the broker refused a dead letter as too large although it "
                         f"fits the {self.max_message_bytes} bytes read when the writer was "
                         "set up (was the topic's max.message.bytes lowered since?)")
            self._too_large = False
            raise DeadLetterDeliveryError(self._topic, failed, first or "unknown")

    def fit(self, letter: DeadLetter, now_ms: int) -> tuple[bytes | None, bytes | None,
                                                           list[Header], dict[str, int]]:
        """``(key, value, headers, dropped)`` of the message for ``letter`` within the limit.

        The largest non-empty part of :data:`~headwater.connectors.dlq.records.DROPPABLE`
        (value, original headers, key) is left out until :func:`estimated_message_size` is
        within :attr:`max_message_bytes`; ``dropped`` maps each to its original size in bytes.
        """
        sizes = {"value": len(letter.value or b""), "key": len(letter.key or b""),
                 "headers": header_bytes(letter.headers)}
        dropped: dict[str, int] = {}
        while True:
            key = None if "key" in dropped else letter.key
            value = None if "value" in dropped else letter.value
            headers = dlq_headers(letter, now_ms, dropped)
            if estimated_message_size(key, value, headers) <= self.max_message_bytes:
                return key, value, headers, dropped
            left = [p for p in DROPPABLE if p not in dropped and sizes[p]]
            if not left:  # the metadata alone is too large: let the producer say so
                return key, value, headers, dropped
            part = max(left, key=lambda p: sizes[p])  # the largest; ties in DROPPABLE order
            dropped[part] = sizes[part]

    def _produce(self, letter: DeadLetter, now_ms: int) -> None:
        key, value, headers, dropped = self.fit(letter, now_ms)
        try:
            self._enqueue(key, value, headers, now_ms)
        except KafkaException as exc:
            if _code(exc.args[0] if exc.args else None) != KafkaError.MSG_SIZE_TOO_LARGE:
                raise self._refused(letter, exc) from exc
            dropped = {"value": len(letter.value or b""), "headers": header_bytes(letter.headers),
                       "key": len(letter.key or b"")}
            try:
                self._enqueue(None, None, dlq_headers(letter, now_ms, dropped), now_ms)
            except KafkaException as again:
                raise self._refused(letter, again) from again
        if dropped:
            self._trimmed += 1

    def _enqueue(self, key: bytes | None, value: bytes | None, headers: list[Header],
                 now_ms: int) -> None:
        try:
            produce(self._producer, self._topic, timeout_s=self._buffer_full_timeout_s, key=key,
                    value=value, headers=headers, timestamp=now_ms, on_delivery=self._on_delivery)
        except ProducerQueueFull as exc:
            raise DeadLetterDeliveryError(self._topic, 1, str(exc)) from exc

    def _refused(self, letter: DeadLetter, exc: KafkaException) -> DeadLetterDeliveryError:
        return DeadLetterDeliveryError(
            self._topic, 1,
            f"{exc} ({letter.source_topic}:{letter.source_partition}:{letter.source_offset})")

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None and not purged(err):
            self._failed += 1
            self._too_large = self._too_large or _code(err) == KafkaError.MSG_SIZE_TOO_LARGE
            if self._first_error is None:
                self._first_error = str(err)


def _code(err: Any) -> int | None:
    code = getattr(err, "code", None)
    return code() if callable(code) else None
