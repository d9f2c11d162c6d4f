"""Writing dead letters: the topic, and a writer on the worker's producer."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from headwater.connectors.dlq.errors import DeadLetterDeliveryError, DeadLetterTopicError
from headwater.connectors.dlq.records import DeadLetter, dlq_headers
from headwater.errors import ConfigError

DLQ_SUFFIX = ".dlq"
DEFAULT_RETENTION_MS = 14 * 24 * 3600 * 1000
"""Dead letters are kept 14 days by default: time to notice, fix and replay."""
DEFAULT_BUFFER_FULL_TIMEOUT_S = 60.0

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


class DeadLetterWriter:
    """Sends dead letters through the worker's producer.

    Using the worker's own producer makes dead letters part of its transaction under
    exactly-once (they appear iff the batch's offsets are committed) and part of the checkpoint's
    producer flush under at-least-once. :meth:`send` only enqueues; it does not flush.

    Each message gets the original key/value/headers plus the ``hw.dlq.*`` headers of
    :func:`dlq_headers`; its Kafka timestamp is the dead-lettering time (so topic retention
    counts from when the record failed, not from when it was first written).

    Not thread-safe: use it from the thread that owns the producer.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        clock: Callable[[], float] = time.time,
        buffer_full_timeout_s: float = DEFAULT_BUFFER_FULL_TIMEOUT_S,
    ) -> None:
        """
        Args:
            producer: the worker's producer (transactional or not).
            topic: the dead-letter topic (must exist: see :func:`ensure_dlq_topic`).
            clock: seconds since the epoch; ``hw.dlq.time`` and the message timestamp.
            buffer_full_timeout_s: how long :meth:`send` waits (serving delivery reports) while
                the producer's local queue is full before giving up.
        """
        self._producer = producer
        self._topic = topic
        self._clock = clock
        self._buffer_full_timeout_s = buffer_full_timeout_s
        self._counts: Counter[str] = Counter()
        self._failed = 0
        self._first_error: str | None = None

    @property
    def topic(self) -> str:
        """The dead-letter topic written to."""
        return self._topic

    @property
    def counts(self) -> dict[str, int]:
        """Dead letters sent (enqueued) so far, per error class (a copy; for metrics)."""
        return dict(self._counts)

    @property
    def delivery_failures(self) -> int:
        """Dead letters whose delivery report was an error (since the last check)."""
        return self._failed

    def send(self, letters: Iterable[DeadLetter]) -> int:
        """Enqueue ``letters`` on the producer; return how many. Does not flush.

        Blocks only while the producer's queue is full (serving delivery reports with
        ``poll``), at most ``buffer_full_timeout_s`` per letter.

        Raises:
            DeadLetterDeliveryError: the queue stayed full, or the producer rejected a message
                (e.g. larger than ``message.max.bytes``).
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
            raise DeadLetterDeliveryError(self._topic, failed, first or "unknown")

    def _produce(self, letter: DeadLetter, now_ms: int) -> None:
        kwargs: dict[str, Any] = {
            "key": letter.key,
            "value": letter.value,
            "headers": dlq_headers(letter, now_ms),
            "timestamp": now_ms,
            "on_delivery": self._on_delivery,
        }
        deadline = time.monotonic() + self._buffer_full_timeout_s
        while True:
            try:
                self._producer.produce(self._topic, **kwargs)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise DeadLetterDeliveryError(
                        self._topic, 1, "producer queue full"
                    ) from None
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise DeadLetterDeliveryError(
                    self._topic, 1, f"{exc} ({letter.source_topic}:"
                    f"{letter.source_partition}:{letter.source_offset})"
                ) from exc

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._failed += 1
            if self._first_error is None:
                self._first_error = str(err)
