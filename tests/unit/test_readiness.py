"""The bench waits after creating topics until every partition's leader serves it (no broker:
metadata and watermark answers are faked)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from headwater.connectors.readiness import leaderless, not_serving, wait_for_leaders


def metadata(**topics: dict[int, int]) -> SimpleNamespace:
    """Cluster metadata where each topic maps partition -> leader id (-1: no leader yet)."""
    return SimpleNamespace(topics={
        name: SimpleNamespace(error=None, partitions={
            p: SimpleNamespace(leader=leader, error=None) for p, leader in parts.items()})
        for name, parts in topics.items()})


class Admin:
    """Answers list_topics with the given snapshots in turn (the last one repeats)."""

    def __init__(self, *snapshots: SimpleNamespace) -> None:
        self.snapshots, self.calls = list(snapshots), 0

    def list_topics(self, timeout: float) -> SimpleNamespace:
        self.calls += 1
        return self.snapshots[min(self.calls, len(self.snapshots)) - 1]


class Consumer:
    """get_watermark_offsets fails with ``errors[(topic, p)]`` codes in turn, then answers."""

    def __init__(self, errors: dict[tuple[str, int], list[int]] | None = None) -> None:
        self.errors, self.asked = errors or {}, []

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked.append((tp.topic, tp.partition))
        pending = self.errors.get((tp.topic, tp.partition))
        if pending:
            raise KafkaException(KafkaError(pending.pop(0)))
        return 0, 0


def test_leaderless_names_missing_topics_and_partitions_without_leader() -> None:
    meta = metadata(a={0: 1, 1: -1, 2: 1}, b={0: 1}, empty={})
    assert leaderless(meta, ["a", "b", "gone", "empty"]) == ["a[1]", "gone", "empty"]
    assert leaderless(meta, ["b"]) == []


def test_a_partition_in_error_counts_as_leaderless() -> None:
    meta = metadata(a={0: 1})
    meta.topics["a"].partitions[0].error = "LEADER_NOT_AVAILABLE"
    assert leaderless(meta, ["a"]) == ["a[0]"]


def test_a_leader_answering_not_leader_is_not_serving_yet() -> None:
    consumer = Consumer({("a", 1): [KafkaError.NOT_LEADER_FOR_PARTITION]})
    meta = metadata(a={0: 1, 1: 1})
    assert not_serving(consumer, meta, ["a"]) == ["a[1]"]  # type: ignore[arg-type]
    assert not_serving(consumer, meta, ["a"]) == []  # type: ignore[arg-type]


def test_other_partition_errors_are_raised() -> None:
    consumer = Consumer({("a", 0): [KafkaError.TOPIC_AUTHORIZATION_FAILED]})
    with pytest.raises(KafkaException):
        not_serving(consumer, metadata(a={0: 1}), ["a"])  # type: ignore[arg-type]


def test_waits_until_every_partition_has_a_leader_that_serves_it() -> None:
    admin = Admin(metadata(), metadata(t={0: -1, 1: -1}), metadata(t={0: 1, 1: -1}), metadata(t={0: 1, 1: 1}))
    consumer = Consumer({("t", 0): [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE]})
    wait_for_leaders(admin, consumer, ["t"], poll_s=0)  # type: ignore[arg-type]
    assert admin.calls == 6  # 3 without leaders, 2 with partition 0 not serving, 1 all served
    assert consumer.asked[-2:] == [("t", 0), ("t", 1)]


def test_times_out_naming_what_has_no_leader() -> None:
    admin = Admin(metadata(t={0: 1, 1: -1}))
    with pytest.raises(TimeoutError, match=r"t\[1\]"):
        wait_for_leaders(admin, Consumer(), ["t"], timeout_s=0.05, poll_s=0.01)  # type: ignore[arg-type]
    assert admin.calls >= 2
