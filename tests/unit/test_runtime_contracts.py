"""Broker-free rules of the runtime: co-partitioning, failpoints, and when the supervisor gives a
failing worker up."""

from __future__ import annotations

import multiprocessing as mp
from types import SimpleNamespace

import pytest

from headwater import failpoints
from headwater.config import Settings
from headwater.streams.runtime import supervisor
from headwater.streams.runtime.topics import (
    TopicError, check_copartitioned, check_sources, partition_counts,
)
from headwater.streams.runtime.worker import WorkerOptions


def test_sources_must_exist_and_the_error_names_the_missing_one() -> None:
    assert check_sources({"a": 4, "b": 2}, ["a"]) == {"a": 4}
    with pytest.raises(TopicError, match="'missing'.*never creates inputs"):
        check_sources({"a": 4}, ["a", "missing"])


class FlakyMetadata:
    """An admin client whose first metadata answers list ``in`` with an error."""

    def __init__(self, bad_answers: int) -> None:
        self.bad_answers, self.calls = bad_answers, 0

    def list_topics(self, timeout: float) -> SimpleNamespace:
        self.calls += 1
        error = "LEADER_NOT_AVAILABLE" if self.calls <= self.bad_answers else None
        topic = SimpleNamespace(error=error, partitions={0: None, 1: None})
        return SimpleNamespace(topics={"in": topic, "other": SimpleNamespace(
            error=None, partitions={0: None})})


def test_a_source_listed_with_a_transient_error_is_asked_for_again_not_called_missing() -> None:
    admin = FlakyMetadata(bad_answers=2)
    assert partition_counts(admin, required=["in"], settle_s=10) == {"in": 2, "other": 1}
    assert admin.calls == 3


def test_a_source_still_missing_after_the_settle_time_is_reported_missing() -> None:
    admin = FlakyMetadata(bad_answers=1_000)
    counts = partition_counts(admin, required=["in"], settle_s=0.6)
    with pytest.raises(TopicError, match="'in'"):
        check_sources(counts, ["in"])
    assert admin.calls >= 2


def test_inputs_of_one_stateful_operator_must_have_equal_partition_counts() -> None:
    check_copartitioned([["orders", "payments"]], {"orders": 4, "payments": 4})
    with pytest.raises(TopicError, match="co-partitioned.*orders=4, payments=2"):
        check_copartitioned([["orders", "payments"]], {"orders": 4, "payments": 2})


def test_a_failpoint_fires_on_its_nth_hit_only_once_across_processes(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(failpoints.ENV, "checkpoint.after_flush=raise@2")
    monkeypatch.setenv(failpoints.FIRED_ENV, str(tmp_path))
    failpoints.reload()
    failpoints.failpoint("checkpoint.after_flush")  # first hit: armed for the second
    failpoints.failpoint("checkpoint.after_changelogs")  # another point: not armed
    with pytest.raises(failpoints.InjectedFault):
        failpoints.failpoint("checkpoint.after_flush")
    failpoints.reload()  # a restarted process: the marker file keeps it from firing again
    failpoints.failpoint("checkpoint.after_flush")
    failpoints.failpoint("checkpoint.after_flush")
    monkeypatch.delenv(failpoints.ENV)
    failpoints.reload()


def test_an_unknown_failpoint_name_is_refused(monkeypatch) -> None:
    monkeypatch.setenv(failpoints.ENV, "checkpoint.nowhere=raise")
    with pytest.raises(ValueError, match="checkpoint.nowhere"):
        failpoints.reload()
    monkeypatch.delenv(failpoints.ENV)
    failpoints.reload()


def _slot(checkpoints: int, exitcode: int) -> supervisor._Slot:
    counter = mp.get_context("spawn").Value("q", checkpoints)
    slot = supervisor._Slot(WorkerOptions(), counter)
    slot.process = SimpleNamespace(exitcode=exitcode)  # type: ignore[assignment]
    return slot


def test_failures_without_a_checkpoint_in_between_are_consecutive_and_back_off_exponentially():
    settings = Settings(max_restarts=3, restart_backoff_ms=1000)
    slot = _slot(checkpoints=0, exitcode=1)
    for _ in range(3):
        assert supervisor._schedule_restart(slot, settings)
    assert slot.consecutive == 3
    assert [supervisor.backoff_s(n, settings) for n in (1, 2, 3, 8)] == [1.0, 2.0, 4.0, 60.0]
    assert not supervisor._schedule_restart(slot, settings)  # the fourth in a row: give up


def test_a_worker_that_completed_a_checkpoint_since_its_last_failure_starts_counting_again():
    settings = Settings(max_restarts=2, restart_backoff_ms=0)
    slot = _slot(checkpoints=0, exitcode=-9)
    assert supervisor._schedule_restart(slot, settings)
    assert supervisor._schedule_restart(slot, settings)
    slot.checkpoints.value = 5  # it made progress before dying again
    assert supervisor._schedule_restart(slot, settings)
    assert slot.consecutive == 1
    assert slot.cause == ""


def test_max_restarts_zero_never_restarts() -> None:
    assert not supervisor._schedule_restart(_slot(0, 1), Settings(max_restarts=0))
