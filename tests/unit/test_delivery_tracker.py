"""The worker's delivery reports: records report through builtin dict sinks (no Python frame per
record); a flush's collect turns them into changelog offsets and sticky failures."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError

from headwater.streams.runtime.checkpoint import CheckpointError, DeliveryTracker


@dataclass
class Msg:
    t: str
    p: int
    o: int

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o


def test_the_last_delivered_changelog_record_of_each_partition_gives_its_offset() -> None:
    tracker = DeliveryTracker()
    for offset in (3, 4, 5):
        tracker.changelog_report("app-s-changelog", 0)(None, Msg("app-s-changelog", 0, offset))
    tracker.changelog_report("app-s-changelog", 1)(None, Msg("app-s-changelog", 1, 9))
    tracker.raise_errors()
    assert tracker.changelog_offsets == {("app-s-changelog", 0): 5, ("app-s-changelog", 1): 9}
    tracker.changelog_report("app-s-changelog", 0)(None, Msg("app-s-changelog", 0, 6))
    tracker.raise_errors()
    assert tracker.changelog_offsets[("app-s-changelog", 0)] == 6


@pytest.mark.parametrize("changelog", [True, False])
def test_one_failed_record_among_delivered_ones_fails_every_later_checkpoint(changelog) -> None:
    tracker = DeliveryTracker()
    report = tracker.changelog_report("c", 0) if changelog else tracker.report
    report(None, Msg("c", 0, 1))
    report(KafkaError(KafkaError._MSG_TIMED_OUT), Msg("c", 0, -1))
    report(None, Msg("c", 0, 2))
    with pytest.raises(CheckpointError, match=r"c\[0\]"):
        tracker.raise_errors()
    with pytest.raises(CheckpointError):  # sticky: nothing after a lost record may commit
        tracker.raise_errors()


def test_records_purged_by_an_abort_we_chose_are_no_failure() -> None:
    tracker = DeliveryTracker()
    tracker.report(KafkaError(KafkaError._PURGE_QUEUE), Msg("out", 0, -1))
    tracker.raise_errors()
    assert tracker.failed == 0
