"""Waiting until new topics are served: a partition's leader must be known *and* answer.

A topic is listed as soon as it is created, but its partitions may have no leader yet, and a
leader shown by the metadata may still answer NOT_LEADER_FOR_PARTITION for a moment (seen on the
local KRaft broker right after creation). Used by the runtime after it creates topics and by the
benchmark harness.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata

# What a partition answers while its leader is still being elected or is not serving yet.
_NOT_READY = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.UNKNOWN_TOPIC_OR_PART}


def wait_for_leaders(admin: AdminClient, consumer: Consumer, topics: list[str],
                     timeout_s: float = 30.0, poll_s: float = 0.1) -> None:
    """Block until every partition of ``topics`` has a leader that serves it.

    A topic is listed as soon as it is created, but its partitions may have no leader yet, and a
    leader shown by the metadata may still answer NOT_LEADER_FOR_PARTITION for a moment (seen on
    the local KRaft broker). So: poll the metadata until every partition shows a leader, then ask
    each partition for its watermarks (through ``consumer``) until all of them answer.

    Raises:
        TimeoutError: some partition (or topic) is still not served after ``timeout_s``.
        KafkaException: a partition answered with an error other than "not ready".
    """
    deadline = time.monotonic() + timeout_s
    while missing := _unserved(admin, consumer, topics, timeout_s):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no serving partition leader after {timeout_s:.0f} s: {', '.join(missing)}")
        time.sleep(poll_s)


def _unserved(admin: AdminClient, consumer: Consumer, topics: list[str], timeout_s: float) -> list[str]:
    metadata = admin.list_topics(timeout=timeout_s)
    return leaderless(metadata, topics) or not_serving(consumer, metadata, topics)


def leaderless(metadata: ClusterMetadata, topics: list[str]) -> list[str]:
    """The topics (``name``) and partitions (``name[p]``) of ``topics`` that ``metadata`` shows
    without a leader; a topic that is missing, in error or has no partitions counts whole."""
    missing: list[str] = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            missing.append(topic)
            continue
        missing += [f"{topic}[{p}]" for p, part in sorted(meta.partitions.items())
                    if part.leader < 0 or part.error is not None]
    return missing


def not_serving(consumer: Consumer, metadata: ClusterMetadata, topics: list[str]) -> list[str]:
    """The partitions (``name[p]``) of ``topics`` whose leader does not answer a watermark request
    yet (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PART)."""
    missing: list[str] = []
    for topic in topics:
        for p in sorted(metadata.topics[topic].partitions):
            try:
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            except KafkaException as exc:
                if exc.args[0].code() not in _NOT_READY:
                    raise
                missing.append(f"{topic}[{p}]")
    return missing


