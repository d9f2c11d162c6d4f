"""Changelog topics and restore against the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from headwater.state import (
    CHANGELOG_TOPIC_CONFIG,
    RocksDBStore,
    StateError,
    StateManager,
    changelog_topic,
    ensure_changelog_topics,
    restore,
)

pytestmark = pytest.mark.integration

Entry = tuple[bytes, bytes | None]


@pytest.fixture
def topics_to_delete(admin: AdminClient) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001 - cleanup
                pass


def _topic_config(admin: AdminClient, topic: str) -> dict[str, str]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([res])[res].result(timeout=30)
    return {k: v.value for k, v in entries.items()}


def _partitions(admin: AdminClient, topic: str) -> int:
    return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def _produce(config: dict[str, str], topic: str, partition: int, entries: list[Entry]) -> None:
    p = Producer({**config, "enable.idempotence": True})
    for key, value in entries:
        p.produce(topic, value=value, key=key, partition=partition)
    assert p.flush(30) == 0


def _txn_producer(config: dict[str, str]) -> Producer:
    p = Producer({**config, "transactional.id": f"test-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    return p


def _txn(p: Producer, topic: str, partition: int, entries: list[Entry], commit: bool) -> None:
    p.begin_transaction()
    for key, value in entries:
        p.produce(topic, value=value, key=key, partition=partition)
    p.flush(30)
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


def _apply(state: dict[bytes, bytes], entries: list[Entry]) -> None:
    for key, value in entries:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value


def test_ensure_changelog_topics_creates_compacted_topics(
    admin: AdminClient, unique_name: Callable[[str], str], topics_to_delete: list[str]
) -> None:
    app = unique_name("app")
    a, b = changelog_topic(app, "counts"), changelog_topic(app, "last-seen")
    assert a == f"{app}-counts-changelog"
    topics_to_delete += [a, b]
    ensure_changelog_topics(admin, {a: 3, b: 1})
    assert (_partitions(admin, a), _partitions(admin, b)) == (3, 1)
    cfg = _topic_config(admin, a)
    assert cfg["cleanup.policy"] == "compact"
    assert cfg["segment.bytes"] == CHANGELOG_TOPIC_CONFIG["segment.bytes"]
    ensure_changelog_topics(admin, {a: 3, b: 1})  # idempotent
    with pytest.raises(StateError) as info:
        ensure_changelog_topics(admin, {a: 4, b: 1})
    assert info.value.topic == a and "3 partitions" in str(info.value)
    assert _partitions(admin, a) == 3


def test_ensure_changelog_topics_tolerates_concurrent_creation(
    kafka_config: dict[str, str], unique_name: Callable[[str], str], topics_to_delete: list[str]
) -> None:
    topic = changelog_topic(unique_name("app"), "race")
    topics_to_delete.append(topic)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        client = AdminClient(dict(kafka_config))  # one client per "worker process"
        barrier.wait()
        try:
            ensure_changelog_topics(client, {topic: 2})
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


@pytest.fixture
def changelog(new_topic: Callable[..., str]) -> str:
    return new_topic("changelog", partitions=2, config={"cleanup.policy": "compact"})


def test_restore_exact_contents_idempotent_resumable_and_after_dir_loss(
    kafka_config: dict[str, str], changelog: str, tmp_path: Path
) -> None:
    part = 1
    expected: dict[bytes, bytes] = {}
    plain: list[Entry] = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(50)]
    plain += [(b"k3", None), (b"k4", b"v4-new"), (b"k5", None), (b"k5", b"back"), (b"empty", b"")]
    _produce(kafka_config, changelog, part, plain)
    _apply(expected, plain)
    _produce(kafka_config, changelog, 0, [(b"other-partition", b"x")])
    txp = _txn_producer(kafka_config)
    committed: list[Entry] = [(b"t1", b"c1"), (b"k6", None), (b"k7", b"tx")]
    _txn(txp, changelog, part, committed, commit=True)
    _apply(expected, committed)
    _txn(txp, changelog, part, [(b"aborted", b"no"), (b"k8", None), (b"k9", b"no")], commit=False)
    txp.flush(10)

    mgr = StateManager(tmp_path, "app")
    store = mgr.open("s", part)
    seen: list[tuple[int, int]] = []
    n = restore(store, dict(kafka_config), changelog, part, read_committed=True,
                progress=lambda done, total: seen.append((done, total)), batch_size=7)
    assert n == len(plain) + len(committed)
    assert dict(store.items()) == expected
    assert seen and seen[-1][0] == n and len(seen) > 1  # several write batches of <= 7
    end_offset = store.applied_changelog_offset()
    # plain + committed + 2 txn markers + the aborted batch's 3 records
    assert end_offset == len(plain) + len(committed) + 1 + 3 + 1 - 1

    started = time.monotonic()
    assert restore(store, dict(kafka_config), changelog, part, read_committed=True) == 0
    assert time.monotonic() - started < 5
    assert store.applied_changelog_offset() == end_offset

    more: list[Entry] = [(b"k10", None), (b"new", b"n"), (b"t1", b"c2")]
    _produce(kafka_config, changelog, part, more)
    _apply(expected, more)
    assert restore(store, dict(kafka_config), changelog, part, read_committed=True) == len(more)
    assert dict(store.items()) == expected

    mgr.close_all()
    mgr.wipe()  # the local state dir is lost
    fresh = mgr.open("s", part)
    assert fresh.applied_changelog_offset() == -1
    total = len(plain) + len(committed) + len(more)
    assert restore(fresh, dict(kafka_config), changelog, part, read_committed=True) == total
    assert dict(fresh.items()) == expected
    mgr.close_all()


def test_restore_read_uncommitted_applies_aborted_records(
    kafka_config: dict[str, str], changelog: str
) -> None:
    from headwater.state import MemoryStore

    txp = _txn_producer(kafka_config)
    _txn(txp, changelog, 0, [(b"a", b"1")], commit=True)
    _txn(txp, changelog, 0, [(b"b", b"2")], commit=False)
    committed, uncommitted = MemoryStore("s", 0), MemoryStore("s", 0)
    assert restore(committed, dict(kafka_config), changelog, 0, read_committed=True) == 1
    assert restore(uncommitted, dict(kafka_config), changelog, 0, read_committed=False) == 2
    assert dict(committed.items()) == {b"a": b"1"}
    assert dict(uncommitted.items()) == {b"a": b"1", b"b": b"2"}


def test_restore_does_not_wait_for_an_open_transaction(
    kafka_config: dict[str, str], changelog: str
) -> None:
    from headwater.state import MemoryStore

    _produce(kafka_config, changelog, 0, [(b"a", b"1"), (b"b", b"2")])
    txp = _txn_producer(kafka_config)
    txp.begin_transaction()
    txp.produce(changelog, key=b"c", value=b"3", partition=0)
    txp.flush(30)  # written, not committed: the LSO stays at 2
    store = MemoryStore("s", 0)
    started = time.monotonic()
    assert restore(store, dict(kafka_config), changelog, 0, read_committed=True) == 2
    assert time.monotonic() - started < 10
    assert store.applied_changelog_offset() == 1
    txp.commit_transaction(30)
    assert restore(store, dict(kafka_config), changelog, 0, read_committed=True) == 1
    assert dict(store.items()) == {b"a": b"1", b"b": b"2", b"c": b"3"}
    assert store.applied_changelog_offset() == 3  # past the commit marker


def test_restore_refuses_store_ahead_of_changelog(
    kafka_config: dict[str, str], changelog: str, tmp_path: Path
) -> None:
    _produce(kafka_config, changelog, 0, [(b"a", b"1")])
    store = RocksDBStore(tmp_path / "s", "s", 0)
    store.write_batch({b"a": b"1"}, 100)  # e.g. the topic was deleted and recreated
    with pytest.raises(StateError, match="ahead|recreated") as info:
        restore(store, dict(kafka_config), changelog, 0, read_committed=False)
    assert info.value.topic == changelog and info.value.path == str(tmp_path / "s")
    store.close()
