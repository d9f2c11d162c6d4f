"""Topics at start: every topic a run touches is checked (or created) before the first poll.

- sources must exist (the engine never creates its inputs);
- sources that feed one stateful sub-topology must be co-partitioned (equal partition counts);
- outputs are created when missing (``auto_create_topics``, partitions like the input,
  ``internal_replication_factor``) or the run fails at once naming the topic;
- internal topics (DLQ, repartition, changelogs) are created with ``internal_replication_factor``.
  Repartition topics keep data until the engine has committed past it (``retention.ms=-1``) and
  are purged by :func:`purge_repartition` with ``DeleteRecords``, the way Kafka Streams does, so a
  long outage never loses unprocessed repartition records to retention.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from headwater.connectors.readiness import wait_for_leaders
from headwater.errors import StartupError

log = logging.getLogger("headwater.topics")

#: Repartition records keep their event time as the record timestamp, which may lie in the future
#: (a skewed producer clock): the broker must accept any (Kafka 4 rejects more than 1 h ahead by
#: default, which would fail every checkpoint).
REPARTITION_TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1",
                            "message.timestamp.after.max.ms": str(2**63 - 1)}


class TopicError(StartupError):
    """A topic the run needs is missing, mis-partitioned or cannot be created (names it)."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic!r}: {reason}")


def partition_counts(admin: AdminClient, timeout_s: float = 30.0, required: Iterable[str] = (),
                     settle_s: float = 5.0) -> dict[str, int]:
    """Partition count of every topic the cluster lists (topics with errors left out).

    A ``required`` topic that is absent or listed with an error is asked for again for up to
    ``settle_s``: one metadata answer can be transiently incomplete (a leader election, a topic
    still propagating), and a missing topic is a fatal start-up error.
    """
    deadline = time.monotonic() + settle_s
    while True:
        meta = admin.list_topics(timeout=timeout_s)
        counts = {t: len(m.partitions) for t, m in meta.topics.items()
                  if m.error is None and m.partitions}
        unsure = sorted(set(required) - set(counts))
        if not unsure or time.monotonic() >= deadline:
            return counts
        log.info("topic(s) %s not listed cleanly (%s); asking again", ", ".join(unsure),
                 "; ".join(f"{t}: {meta.topics[t].error}" for t in unsure if t in meta.topics)
                 or "absent")
        time.sleep(0.5)


def check_sources(existing: Mapping[str, int], sources: Iterable[str]) -> dict[str, int]:
    """Partition counts of the sources; raises :class:`TopicError` for a missing one."""
    counts = {}
    for topic in sources:
        if topic not in existing:
            raise TopicError(topic, "source topic does not exist (the engine never creates inputs)")
        counts[topic] = existing[topic]
    return counts


def check_copartitioned(groups: Iterable[Iterable[str]], counts: Mapping[str, int]) -> None:
    """Each group's topics must have one partition count (their keys meet in one task)."""
    for group in groups:
        topics = sorted(set(group))
        seen = {t: counts[t] for t in topics if t in counts}
        if len(set(seen.values())) > 1:
            detail = ", ".join(f"{t}={n}" for t, n in seen.items())
            raise TopicError(
                topics[0],
                f"inputs of one stateful operator or co-partitioned table join must be "
                f"co-partitioned, but partition counts differ ({detail}); repartition one side "
                "(key_by), use a global table, or fix the topics",
            )


def internal_count(topic: str, groups: Iterable[Iterable[str]], counts: Mapping[str, int],
                   default: int) -> int:
    """The partition count of an internal (repartition) topic: that of the external topics it
    is co-partitioned with (a table it joins), else ``default`` (the largest source's)."""
    for group in groups:
        members = set(group)
        if topic in members:
            known = [counts[t] for t in sorted(members) if t in counts]
            if known:
                return known[0]
    return default


def ensure_topics(
    admin: AdminClient,
    wanted: Mapping[str, int],
    existing: Mapping[str, int],
    *,
    consumer: Consumer,
    replication_factor: int,
    config: Mapping[str, str] | None = None,
    create: bool = True,
    kind: str = "output",
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics of ``wanted`` (name -> partitions) that do not exist; return them once
    every partition's leader serves (``consumer`` asks for watermarks).

    Raises:
        TopicError: a topic is missing and ``create`` is off, or its creation failed.
    """
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    if not create:
        raise TopicError(missing[0], f"{kind} topic does not exist and auto_create_topics is off")
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=wanted[t], replication_factor=replication_factor,
                  config=dict(config or {})) for t in missing],
        request_timeout=timeout_s,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            log.info("created %s topic %s (%d partitions)", kind, topic, wanted[topic])
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise TopicError(topic, f"cannot create {kind} topic: {exc}") from exc
    try:
        wait_for_leaders(admin, consumer, missing, timeout_s)
    except TimeoutError as exc:
        raise TopicError(missing[0], str(exc)) from exc
    return missing


def purge_repartition(admin: AdminClient, committed: Iterable[TopicPartition]) -> None:
    """Delete repartition records below the committed offsets (best effort, asynchronous).

    Failures are logged, never raised: purging only reclaims disk; the data is already processed.
    """
    targets = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in committed if tp.offset > 0]
    if not targets:
        return
    try:
        futures = admin.delete_records(targets, request_timeout=10)
    except KafkaException as exc:
        log.warning("repartition purge failed: %s", exc)
        return
    for tp, future in futures.items():
        future.add_done_callback(
            lambda f, tp=tp: f.exception() and log.warning(
                "repartition purge of %s[%d] failed: %s", tp.topic, tp.partition, f.exception()
            )
        )
