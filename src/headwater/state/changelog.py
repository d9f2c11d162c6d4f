"""Changelog topics: naming, creation, and restoring a store from its changelog partition.

A store's changelog is a compacted topic ``<application_id>-<store>-changelog`` with the same
partition count as the input (store partition ``p`` logs to changelog partition ``p``). Each record
is key = the state key, value = the *stored* value (TTL prefix included), or a tombstone (null
value) for a delete. Compaction keeps the latest record per key, so the topic alone rebuilds the
store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from headwater.state.errors import StateError
from headwater.state.store import KeyValueStore

_ALREADY_EXISTS = KafkaError.TOPIC_ALREADY_EXISTS

CHANGELOG_TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact",
    # Smaller segments than the 1 GiB default: only closed segments are compacted, so this bounds
    # the uncompacted tail a restore has to read.
    "segment.bytes": str(64 << 20),
    "min.cleanable.dirty.ratio": "0.5",
    # Tombstones stay readable for a day: a store offline for longer and resumed from its local
    # applied offset could miss a delete (documented in docs/state.md).
    "delete.retention.ms": str(24 * 3600 * 1000),
    "message.timestamp.type": "CreateTime",
}
"""Topic configs of a changelog topic created by ``ensure_changelog_topics``."""


def changelog_topic(application_id: str, store_name: str) -> str:
    """The changelog topic of a store: ``f"{application_id}-{store_name}-changelog"``."""
    return f"{application_id}-{store_name}-changelog"


def ensure_changelog_topics(
    admin: AdminClient,
    topics: Mapping[str, int],
    replication_factor: int = 1,
    *,
    config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create the missing changelog topics as compacted topics; check the existing ones.

    Idempotent, and safe when two workers race to create the same topic (``TOPIC_ALREADY_EXISTS``
    counts as success once the partition count is checked). Existing topics' configs are not
    altered.

    Args:
        admin: an AdminClient on the cluster.
        topics: changelog topic name -> required partition count (the input's).
        replication_factor: for new topics.
        config: extra/overriding topic configs on top of ``CHANGELOG_TOPIC_CONFIG``.
        timeout_s: per admin request.

    Raises:
        StateError: a topic exists with another partition count (the store partitions would no
            longer line up with the input), or creating/describing a topic failed.
    """
    if not topics:
        return
    existing = _partition_counts(admin, list(topics), timeout_s)
    missing = [t for t in topics if t not in existing]
    if missing:
        cfg = {**CHANGELOG_TOPIC_CONFIG, **(config or {})}
        futures = admin.create_topics(
            [
                NewTopic(t, num_partitions=topics[t], replication_factor=replication_factor,
                         config=cfg)
                for t in missing
            ],
            request_timeout=timeout_s,
        )
        for topic, future in futures.items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not (isinstance(err, KafkaError) and err.code() == _ALREADY_EXISTS):
                    raise StateError(f"cannot create changelog topic: {exc}", topic=topic) from exc
        existing.update(_partition_counts(admin, missing, timeout_s, wait=True))
    for topic, wanted in topics.items():
        have = existing.get(topic)
        if have != wanted:
            raise StateError(
                f"changelog topic has {have} partitions, the input has {wanted}; "
                "delete it (and the local state) or fix the input's partition count",
                topic=topic,
            )


def _partition_counts(
    admin: AdminClient, topics: list[str], timeout_s: float, wait: bool = False
) -> dict[str, int]:
    """Partition counts of the listed topics that exist; with ``wait``, poll until all show up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            meta = admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise StateError(f"cannot list topics: {exc}", topic=",".join(topics)) from exc
        found = {
            t: len(meta.topics[t].partitions)
            for t in topics
            if t in meta.topics and meta.topics[t].error is None and meta.topics[t].partitions
        }
        if not wait or len(found) == len(topics) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def restore(
    store: KeyValueStore,
    consumer_config: dict,
    topic: str,
    partition: int,
    *,
    read_committed: bool,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 10_000,
    stall_timeout_s: float = 60.0,
) -> int:
    """Bring ``store`` up to date with changelog partition ``topic``/``partition``.

    Reads from ``store.applied_changelog_offset() + 1`` up to the end of the partition as it was
    when the restore started: the high watermark, or under ``read_committed`` the last stable
    offset (records of a transaction still open are not waited for; aborted ones are skipped by the
    consumer). Each consumed batch is applied with one ``store.write_batch(puts, last_offset)``, so
    an interrupted restore resumes where it stopped. Tombstones delete. At the end the applied
    offset is advanced past trailing transaction markers too, so a store that is already current
    costs one watermark query and no fetch.

    Args:
        store: the store to fill; its stored values are written as the changelog has them.
        consumer_config: librdkafka config (at least ``bootstrap.servers``); group, commit, offset
            reset and isolation settings are overridden here.
        topic: the changelog topic.
        partition: the changelog partition (= the store's input partition).
        read_committed: read only committed transactional records (use with exactly-once).
        progress: called as ``progress(applied_so_far, records_to_read_estimate)`` after each batch.
        batch_size: max records per consume call and per write batch.
        stall_timeout_s: give up when no record and no end-of-partition arrive for this long.

    Returns:
        The number of changelog records applied (tombstones included, markers excluded).

    Raises:
        StateError: the local store is ahead of the changelog (the topic was recreated or
            truncated: wipe the store and restore again), the consumer failed, a record has a null
            key, or the restore stalled.
    """
    start = store.applied_changelog_offset() + 1
    tp = TopicPartition(topic, partition)
    conf = {
        **consumer_config,
        "group.id": f"headwater-restore-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
    }

    def fail(reason: str, exc: BaseException | None = None) -> StateError:
        err = StateError(
            reason, store=store.name, partition=partition, path=store.path, topic=topic
        )
        if exc is not None:
            err.__cause__ = exc
        return err

    consumer = Consumer(conf)
    try:
        try:
            low, end = consumer.get_watermark_offsets(tp, timeout=stall_timeout_s, cached=False)
        except KafkaException as exc:
            raise fail(f"cannot read changelog watermarks: {exc}", exc) from exc
        if start > end:
            raise fail(
                f"local store applied changelog offset {start - 1} but the changelog ends at "
                f"{end}: the topic was recreated or truncated; wipe the local store and restore"
            )
        if start >= end:
            return 0
        consumer.assign([TopicPartition(topic, partition, max(start, low))])
        applied = 0
        total = end - max(start, low)
        last_progress = time.monotonic()
        position = start
        while position < end:
            # Asking for no more than what is left lets consume() return as soon as the tail has
            # arrived instead of waiting out its timeout (markers and EOF count as messages too).
            msgs = consumer.consume(num_messages=min(batch_size, end - position), timeout=0.2)
            puts: dict[bytes, bytes | None] = {}
            last = -1
            eof = False
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof = True
                        continue
                    raise fail(f"changelog consume failed: {err}")
                key = msg.key()
                if key is None:
                    raise fail(f"changelog record at offset {msg.offset()} has a null key")
                puts[key] = msg.value()
                last = msg.offset()
                applied += 1
            if last >= 0:
                store.write_batch(puts, last)
                position = last + 1
            if msgs:
                last_progress = time.monotonic()
                pos = consumer.position([tp])[0].offset
                if pos >= 0:
                    position = max(position, pos)
                if progress is not None:
                    progress(applied, total)
            if eof:
                break
            if time.monotonic() - last_progress > stall_timeout_s:
                raise fail(f"changelog restore stalled at offset {position} (end {end})")
        # Every offset below the consumer's position is applied or is a transaction marker /
        # aborted record: record that, so the next restore starts past them.
        pos = consumer.position([tp])[0].offset
        final = max(position, pos) - 1
        if final > store.applied_changelog_offset():
            store.write_batch({}, final)
        return applied
    finally:
        consumer.close()
