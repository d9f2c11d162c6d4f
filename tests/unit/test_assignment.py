"""Assignments: stores open in the poll loop, not in the assign callback, and a store still
locked by its previous owner (another process closing it) is retried, then fails the worker."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from confluent_kafka import TopicPartition

from headwater.state import StateError, StateManager
from headwater.streams import Topology, agg
from headwater.streams.runtime.assignment import Assignments


class FakeConsumer:
    """Records pause/resume; nothing was ever committed."""

    def __init__(self) -> None:
        self.paused: list[tuple[str, int]] = []
        self.resumed: list[tuple[str, int]] = []

    def pause(self, partitions):
        self.paused += [(tp.topic, tp.partition) for tp in partitions]

    def resume(self, partitions):
        self.resumed += [(tp.topic, tp.partition) for tp in partitions]

    def committed(self, partitions, timeout):
        return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=-1001,
                                metadata=None, error=None) for tp in partitions]

    def seek(self, tp):
        raise AssertionError("no rewind asked")


class OpeningRestorer:
    """Opens the store like ChangelogRestorer.add; the changelog is empty (nothing to restore)."""

    def __init__(self, stores: StateManager) -> None:
        self.stores, self.opened = stores, []

    def add(self, name, partition, topic, ttl_ms=None):
        self.opened.append((name, partition))
        return self.stores.open(name, partition, ttl_ms)

    def step(self, max_records):
        return True

    def pending(self):
        return set()


class Context:
    def __init__(self, topology: Topology) -> None:
        self.topology, self.assigned = topology, []

    def assign_tasks(self, partitions, committed):
        self.assigned += list(partitions)


def setup(tmp_path, timeout_s: float):
    topology = Topology("t")
    topology.source("in", value_format="json").aggregate("counts", n=agg.count())
    stores = StateManager(tmp_path, "app")
    consumer, context = FakeConsumer(), Context(topology)
    assignments = Assignments(consumer, context, OpeningRestorer(stores), stores,
                              {"counts": "app-counts-changelog"}, {"in": "in"}, "earliest",
                              timeout_s)
    return assignments, consumer, context


def test_the_assign_callback_only_pauses_and_the_loop_opens_restores_and_resumes(tmp_path):
    assignments, consumer, context = setup(tmp_path, 30)
    assignments.add([TopicPartition("in", 0)])
    assert consumer.paused == [("in", 0)] and assignments.restorer.opened == []
    assignments.step()
    assert assignments.restorer.opened == [("counts", 0)]
    assert context.assigned == [("in", 0)] and consumer.resumed == [("in", 0)]


def test_a_store_locked_by_its_previous_owner_is_retried_until_released(tmp_path, caplog):
    previous_owner = StateManager(tmp_path, "app")  # another process, still closing
    previous_owner.open("counts", 0)
    assignments, consumer, context = setup(tmp_path, 30)
    assignments.add([TopicPartition("in", 0)])
    with caplog.at_level(logging.INFO, "headwater.worker"):
        assignments.step()
        assignments.step()
    assert context.assigned == [] and consumer.resumed == []
    assert caplog.text.count("still locked") == 1
    previous_owner.close_all()
    assignments.step()
    assert context.assigned == [("in", 0)] and consumer.resumed == [("in", 0)]


def test_a_store_locked_for_longer_than_the_timeout_fails_naming_the_store(tmp_path):
    previous_owner = StateManager(tmp_path, "app")
    previous_owner.open("counts", 0)
    assignments, _, _ = setup(tmp_path, 0.0)
    assignments.add([TopicPartition("in", 0)])
    assignments.step()  # first attempt: noted
    with pytest.raises(StateError, match="still locked") as info:
        assignments.step()
    assert info.value.store == "counts" and info.value.partition == 0
    previous_owner.close_all()


class Message:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._tp = (topic, partition, offset)

    def topic(self):
        return self._tp[0]

    def partition(self):
        return self._tp[1]

    def offset(self):
        return self._tp[2]

    def error(self):
        return None


def test_records_of_a_partition_whose_task_is_not_ready_are_held_back_and_sought_again(tmp_path):
    assignments, consumer, _ = setup(tmp_path, 30)
    sought = []
    consumer.seek = lambda tp: sought.append((tp.topic, tp.partition, tp.offset))
    assignments.add([TopicPartition("in", 1)])  # pending: its store is not open yet
    messages = [Message("in", 0, 7), Message("in", 1, 40), Message("in", 1, 41),
                Message("in", 0, 8)]
    kept = assignments.hold_back(messages)
    assert [(m.partition(), m.offset()) for m in kept] == [(0, 7), (0, 8)]
    assert sought == [("in", 1, 40)]  # fetched again from the first held-back record


def test_a_partition_to_be_rewound_is_not_sought_to_its_held_back_records(tmp_path):
    assignments, consumer, _ = setup(tmp_path, 30)
    sought = []
    consumer.seek = lambda tp: sought.append((tp.topic, tp.partition, tp.offset))
    assignments.add([TopicPartition("in", 1)], rewind=True)
    assert assignments.hold_back([Message("in", 1, 40)]) == []
    assert sought == []  # step() seeks it to the committed offset instead


def test_resuming_partitions_records_when_so_idleness_counts_from_there(tmp_path):
    assignments, _, _ = setup(tmp_path, 30)
    assert assignments.resumed_at == 0.0
    assignments.add([TopicPartition("in", 0)])
    assignments.step()
    assert assignments.resumed_at > 0.0
