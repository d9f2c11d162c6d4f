"""ChangelogRestorer decisions and stall detection, with a fake broker (no Kafka needed).

The real-broker behaviour (transactions, EOF, compaction, several partitions) is specified in
tests/integration/test_state_changelog.py.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import IsolationLevel, TopicPartition
from confluent_kafka.admin import OffsetSpec

from headwater.state import ChangelogRestorer, StateError, StateManager
from headwater.state import restorer as restorer_module


class FakeBroker:
    """Offsets per partition; consumers that never receive anything (a stalled broker)."""

    def __init__(self, low: int, hw: int, lso: int) -> None:
        self.low, self.hw, self.lso = low, hw, lso
        self.consumers: list[FakeConsumer] = []

    def admin(self, config: dict[str, Any]) -> FakeAdmin:
        return FakeAdmin(self)

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        consumer = FakeConsumer()
        self.consumers.append(consumer)
        return consumer


class FakeAdmin:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    def list_offsets(self, query: dict, isolation_level: IsolationLevel, request_timeout: float):
        b = self.broker
        out = {}
        for tp, spec in query.items():
            latest = b.lso if isolation_level == IsolationLevel.READ_COMMITTED else b.hw
            offset = b.low if isinstance(spec, type(OffsetSpec.earliest())) else latest
            future: Future = Future()
            future.set_result(SimpleNamespace(offset=offset))
            out[tp] = future
        return out


class FakeConsumer:
    def __init__(self) -> None:
        self.assigned: list[tuple[str, int, int]] = []

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self.assigned += [(tp.topic, tp.partition, tp.offset) for tp in tps]

    def incremental_unassign(self, tps: list[TopicPartition]) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list:
        return []

    def close(self) -> None:
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker(low=0, hw=10, lso=10)
    monkeypatch.setattr(restorer_module, "AdminClient", fake.admin)
    monkeypatch.setattr(restorer_module, "Consumer", fake.consumer)
    return fake


def make(
    tmp_path: Path, clock: FakeClock | None = None
) -> tuple[ChangelogRestorer, StateManager]:
    mgr = StateManager(tmp_path, "app", in_memory=True)
    restorer = ChangelogRestorer(
        {"bootstrap.servers": "fake:9092"}, True, mgr, stall_timeout_s=60, poll_timeout_s=0.0,
        clock=clock or FakeClock(),
    )
    return restorer, mgr


def test_a_restore_that_receives_nothing_fails_after_the_stall_timeout(
    broker: FakeBroker, tmp_path: Path
) -> None:
    clock = FakeClock()
    restorer, _ = make(tmp_path, clock)
    restorer.add("counts", 3, "app-counts-changelog")
    assert restorer.step() is False  # assigned, nothing yet: not a stall
    clock.now += 59
    assert restorer.step() is False
    clock.now += 2
    with pytest.raises(StateError, match="stalled") as info:
        restorer.step()
    err = info.value
    assert (err.store, err.partition, err.topic) == ("counts", 3, "app-counts-changelog")
    assert "counts[3] at 0 of 10" in str(err)
    assert restorer.pending() == {3}
    restorer.close()


def test_store_past_the_lso_but_not_the_hw_is_left_alone_without_fetching(
    broker: FakeBroker, tmp_path: Path
) -> None:
    broker.lso = 5  # an open transaction from offset 5 on
    restorer, mgr = make(tmp_path)
    store = mgr.open("s", 0)
    store.write_batch({b"k": b"committed later than the open transaction"}, 7)
    restorer.add("s", 0, "t")
    assert restorer.step() is True and restorer.pending() == set()
    assert broker.consumers == []  # decided from the offsets alone
    assert mgr.open("s", 0) is store and store.applied_changelog_offset() == 7
    assert dict(store.items()) == {b"k": b"committed later than the open transaction"}


def test_store_at_or_past_the_hw_is_wiped_and_read_from_the_start(
    broker: FakeBroker, tmp_path: Path
) -> None:
    restorer, mgr = make(tmp_path)
    mgr.open("s", 1).write_batch({b"stale": b"x"}, 10)  # applied 10, the log ends at 10
    restorer.add("s", 1, "t")
    assert restorer.step() is False
    fresh = mgr.open("s", 1)
    assert fresh.applied_changelog_offset() == -1 and list(fresh.items()) == []
    assert broker.consumers[0].assigned == [("t", 1, 0)]
    restorer.remove_partition(1)
    assert restorer.pending() == set() and restorer.step() is True
    restorer.close()
    with pytest.raises(StateError, match="closed"):
        restorer.step()


def test_store_at_the_end_minus_one_is_current(broker: FakeBroker, tmp_path: Path) -> None:
    restorer, mgr = make(tmp_path)
    mgr.open("s", 0).write_batch({b"k": b"v"}, 9)
    restorer.add("s", 0, "t")
    assert restorer.step() is True and broker.consumers == []
    assert dict(mgr.open("s", 0).items()) == {b"k": b"v"}
