"""The worker's Kafka clients: consumer and producer settings, and the worker's stable name.

The stable name ``<application_id>-<host>-<worker index>`` is both the consumer's
``group.instance.id`` (static membership: a restarted worker takes its partitions back without a
rebalance) and the producer's ``transactional.id`` (a restarted worker fences its predecessor and
aborts its open transaction at once).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from headwater.config import Settings

if TYPE_CHECKING:
    from headwater.streams.runtime.worker import WorkerOptions


def member_name(settings: Settings, options: WorkerOptions) -> str:
    """``<application_id>-<host>-<worker index>``."""
    return f"{settings.application_id}-{socket.gethostname()}-{options.worker_id}"


def consumer_config(settings: Settings, options: WorkerOptions) -> dict[str, object]:
    """Manual commits, read_committed, eager rebalancing, generous fetch buffers, optional
    static membership (``kafka_extra`` cannot override these: see Settings)."""
    config: dict[str, object] = {
        **settings.kafka_client_config(),
        "group.id": settings.application_id,
        "client.id": f"{settings.kafka_client_id}-{options.worker_id}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": settings.session_timeout_ms,
        "auto.offset.reset": options.auto_offset_reset,
        "isolation.level": "read_committed",
        # eager rebalancing: the callbacks assign()/unassign() whole assignments and checkpoint
        # before every revocation (cooperative protocols would need incremental_assign)
        "partition.assignment.strategy": "range,roundrobin",
        "queued.max.messages.kbytes": 65536,
        "fetch.max.bytes": 52428800,
    }
    if settings.static_membership:
        config["group.instance.id"] = member_name(settings, options)
    return config


def producer_config(settings: Settings, options: WorkerOptions) -> dict[str, object]:
    """Idempotent, batched, lz4; deliveries retried for ``transient_retry_ms``; transactional
    under exactly-once."""
    timeout_ms = max(settings.transient_retry_ms, 1000)
    config: dict[str, object] = {
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "message.timeout.ms": timeout_ms,
        # the Java clients' partitioner, so keyed outputs co-partition with Kafka Streams/JVM
        # producers (librdkafka's default hashes keys differently)
        "partitioner": "murmur2_random",
    }
    if settings.processing_guarantee == "exactly-once":
        config["transactional.id"] = member_name(settings, options)
        config["transaction.timeout.ms"] = max(60_000, timeout_ms + 10_000)
    return config
