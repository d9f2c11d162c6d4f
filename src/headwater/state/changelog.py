"""Changelog topics: naming, creation, and restoring a store from its changelog partition.

A store's changelog is a compacted topic ``<application_id>-<store>-changelog`` with the same
partition count as the input (store partition ``p`` logs to changelog partition ``p``). Each record
is key = the state key, value = the *stored* value (TTL prefix included), or a tombstone (null
value) for a delete. Compaction keeps the latest record per key, so the topic alone rebuilds the
store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from headwater.state.errors import StateError
from headwater.state.manager import StateManager
from headwater.state.restorer import ChangelogRestorer, _Task
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
    replication_factor: int = -1,
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
        replication_factor: for new topics; -1 (default) takes the broker's
            ``default.replication.factor``. The engine passes
            ``settings.internal_replication_factor``.
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
    state_manager: StateManager | None = None,
) -> int:
    """Bring ``store`` up to date with changelog partition ``topic``/``partition``, blocking.

    A ``ChangelogRestorer`` with this one store partition, stepped until done (see
    ``headwater.state.restorer`` for where a restore starts and stops). Reads from
    ``store.applied_changelog_offset() + 1`` up to the end of the partition as it was when the
    restore started: the high watermark, or under ``read_committed`` the last stable offset
    (records of a transaction still open are not waited for; aborted ones are skipped). A store
    past the last stable offset but not past the high watermark is consistent and left alone.

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
        state_manager: the manager that opened ``store``; with it a store ahead of its changelog
            (topic recreated or truncated) is dropped, reopened empty and restored from scratch
            (get the new instance with ``state_manager.open``). Without it that case raises.

    Returns:
        The number of changelog records applied (tombstones included, markers excluded).

    Raises:
        StateError: the store is ahead of the changelog and no ``state_manager`` was given, an
            offset query or the consumer failed, a record has a null key, or the restore stalled.
    """
    reopen = None
    if state_manager is not None:
        mgr, name, ttl_ms = state_manager, store.name, store.ttl_ms

        def reopen() -> KeyValueStore:
            mgr.drop(name, partition)
            return mgr.open(name, partition, ttl_ms)

    task = _Task(store, topic, partition, reopen, progress)
    with ChangelogRestorer(
        consumer_config, read_committed, state_manager, stall_timeout_s=stall_timeout_s
    ) as restorer:
        restorer._add(task)
        while not restorer.step(batch_size):
            pass
    return task.applied
