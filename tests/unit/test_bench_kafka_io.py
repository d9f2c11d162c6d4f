"""The bench waits for partition leaders after creating topics (no broker: metadata is faked)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from headwater.bench.kafka_io import leaderless, wait_for_leaders


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


def test_leaderless_names_missing_topics_and_partitions_without_leader() -> None:
    meta = metadata(a={0: 1, 1: -1, 2: 1}, b={0: 1}, empty={})
    assert leaderless(meta, ["a", "b", "gone", "empty"]) == ["a[1]", "gone", "empty"]
    assert leaderless(meta, ["b"]) == []


def test_a_partition_in_error_counts_as_leaderless() -> None:
    meta = metadata(a={0: 1})
    meta.topics["a"].partitions[0].error = "LEADER_NOT_AVAILABLE"
    assert leaderless(meta, ["a"]) == ["a[0]"]


def test_waits_until_every_partition_has_a_leader() -> None:
    admin = Admin(metadata(), metadata(t={0: -1, 1: -1}), metadata(t={0: 1, 1: -1}), metadata(t={0: 1, 1: 1}))
    wait_for_leaders(admin, ["t"], poll_s=0)  # type: ignore[arg-type]
    assert admin.calls == 4


def test_times_out_naming_what_has_no_leader() -> None:
    admin = Admin(metadata(t={0: 1, 1: -1}))
    with pytest.raises(TimeoutError, match=r"t\[1\]"):
        wait_for_leaders(admin, ["t"], timeout_s=0.05, poll_s=0.01)  # type: ignore[arg-type]
    assert admin.calls >= 2
