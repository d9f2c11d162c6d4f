"""Producing one record when librdkafka's local queue may be full: the one retry loop we use;
and which delivery errors are our own doing."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, Producer

from headwater.errors import HeadwaterError


class ProducerQueueFull(HeadwaterError):
    """The producer's local queue stayed full for longer than the allowed wait (transient:
    the broker is slow or unreachable; the worker fails rather than dropping the record)."""

    def __init__(self, topic: str, waited_s: float) -> None:
        self.topic = topic
        super().__init__(f"producer queue full for {waited_s:.0f}s while producing to {topic}")


PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


def purged(err: Any) -> bool:
    """True for the delivery error of a record the worker itself discarded (an aborted
    transaction or ``Producer.purge``): deliberate, not a failure to report."""
    code = getattr(err, "code", None)
    return callable(code) and code() in PURGED


def produce(producer: Producer, topic: str, *, timeout_s: float = 300.0, **kwargs: Any) -> None:
    """``producer.produce(topic, **kwargs)``, serving delivery reports while the queue is full.

    Raises:
        ProducerQueueFull: the queue did not drain within ``timeout_s``.
        KafkaException: the producer refused the record for another reason (e.g. too large).
    """
    try:
        producer.produce(topic, **kwargs)
        return
    except BufferError:
        pass
    deadline = time.monotonic() + timeout_s
    while True:
        producer.poll(0.05)
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            if time.monotonic() >= deadline:
                raise ProducerQueueFull(topic, timeout_s) from None
