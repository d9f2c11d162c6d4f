"""Changelog topics and restore against the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from headwater.state import (
    CHANGELOG_TOPIC_CONFIG,
    ChangelogRestorer,
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
    # replication_factor -1 (the default): the broker's default.replication.factor
    meta = admin.list_topics(a, timeout=10)
    broker = ConfigResource(ResourceType.BROKER, str(next(iter(meta.brokers))))
    default_rf = admin.describe_configs([broker])[broker].result(timeout=30)
    replicas = {len(p.replicas) for p in meta.topics[a].partitions.values()}
    assert replicas == {int(default_rf["default.replication.factor"].value)}
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


# --- ahead of the changelog, past the LSO, incremental restore -----------------------------------


def _restore_all(restorer: ChangelogRestorer, max_records: int) -> int:
    """Step until done; returns the number of steps."""
    steps = 1
    while not restorer.step(max_records):
        steps += 1
    return steps


def test_store_ahead_of_a_recreated_changelog_is_wiped_and_restored(
    kafka_config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    changelog = new_topic("changelog", partitions=1, config={"cleanup.policy": "compact"})
    entries: list[Entry] = [(b"a", b"new-1"), (b"b", b"new-2")]
    _produce(kafka_config, changelog, 0, entries)
    mgr = StateManager(tmp_path, "app")
    # the store applied 100 records of the topic's previous life; the new topic has 2
    mgr.open("s", 0).write_batch({b"a": b"old", b"stale": b"x"}, 99)
    with ChangelogRestorer(dict(kafka_config), True, mgr) as restorer, caplog.at_level("WARNING"):
        restorer.add("s", 0, changelog)
        assert _restore_all(restorer, 100) >= 1
    store = mgr.open("s", 0)
    assert dict(store.items()) == {b"a": b"new-1", b"b": b"new-2"}
    assert store.applied_changelog_offset() == 1
    assert "wiping the store partition" in caplog.text
    # the blocking form does the same with a state manager, and refuses without one
    mgr.open("s", 0).write_batch({b"stale": b"x"}, 500)
    assert restore(mgr.open("s", 0), dict(kafka_config), changelog, 0, read_committed=False,
                   state_manager=mgr) == 2
    assert dict(mgr.open("s", 0).items()) == {b"a": b"new-1", b"b": b"new-2"}
    mgr.open("s", 0).write_batch({}, 500)
    with pytest.raises(StateError, match="recreated or truncated") as info:
        restore(mgr.open("s", 0), dict(kafka_config), changelog, 0, read_committed=True)
    assert info.value.topic == changelog and info.value.store == "s"
    mgr.close_all()


def test_store_past_the_lso_of_an_open_transaction_is_left_alone(
    kafka_config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """The crash-loop case: a killed worker's transaction is still open (holding the LSO back)
    while the new owner committed records after it and applied them to its store."""
    changelog = new_topic("changelog", partitions=1, config={"cleanup.policy": "compact"})
    first, zombie, owner = (_txn_producer(kafka_config) for _ in range(3))
    _txn(first, changelog, 0, [(b"a", b"1"), (b"b", b"2")], commit=True)  # offsets 0-1, marker 2
    zombie.begin_transaction()
    zombie.produce(changelog, key=b"z", value=b"never", partition=0)  # offset 3, stays open
    zombie.flush(30)
    try:
        mgr = StateManager(tmp_path, "app")
        store = mgr.open("s", 0)
        assert restore(store, dict(kafka_config), changelog, 0, read_committed=True) == 2
        assert store.applied_changelog_offset() == 2  # stops at the LSO (3)
        # the new owner commits offsets 4-5 (marker 6) and writes them to its store, as a
        # checkpoint does, under the last record's offset
        _txn(owner, changelog, 0, [(b"b", b"owner"), (b"c", b"3")], commit=True)
        store.write_batch({b"b": b"owner", b"c": b"3"}, 5)
        expected = {b"a": b"1", b"b": b"owner", b"c": b"3"}

        assert restore(store, dict(kafka_config), changelog, 0, read_committed=True) == 0
        assert store.applied_changelog_offset() == 5 and dict(store.items()) == expected
        with ChangelogRestorer(dict(kafka_config), True, mgr) as restorer:
            assert restorer.add("s", 0, changelog) is store
            assert restorer.step(100) is True and restorer.pending() == set()
        assert mgr.open("s", 0) is store  # not wiped
        assert store.applied_changelog_offset() == 5 and dict(store.items()) == expected
    finally:
        zombie.abort_transaction(30)
    # once the zombie is aborted, the next restore only moves past the markers
    assert restore(store, dict(kafka_config), changelog, 0, read_committed=True) == 0
    assert dict(store.items()) == expected
    assert store.applied_changelog_offset() == 7  # past the zombie's abort marker
    mgr.close_all()


def _fill(kafka_config: dict[str, str], changelog: str, partitions: int) -> dict[int, dict]:
    """Records with overwrites, tombstones, a committed and an aborted transaction per partition;
    returns the expected contents per partition."""
    expected: dict[int, dict[bytes, bytes]] = {}
    txp = _txn_producer(kafka_config)
    for p in range(partitions):
        plain: list[Entry] = [(f"k{i % 40}".encode(), f"p{p}-v{i}".encode()) for i in range(120)]
        plain += [(b"k3", None), (b"k7", None)]
        _produce(kafka_config, changelog, p, plain)
        committed: list[Entry] = [(b"k8", None), (b"tx", f"p{p}".encode())]
        _txn(txp, changelog, p, committed, commit=True)
        _txn(txp, changelog, p, [(b"k9", None), (b"aborted", b"x")], commit=False)
        expected[p] = {}
        _apply(expected[p], plain + committed)
    return expected


def test_incremental_restore_in_steps_equals_a_blocking_restore(
    kafka_config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    changelog = new_topic("changelog", partitions=3, config={"cleanup.policy": "compact"})
    other = new_topic("changelog", partitions=3, config={"cleanup.policy": "compact"})
    expected = _fill(kafka_config, changelog, 3)
    _produce(kafka_config, other, 1, [(b"x", b"1"), (b"y", b"2")])

    blocking = StateManager(tmp_path / "blocking", "app")
    for p in range(3):
        restore(blocking.open("s", p), dict(kafka_config), changelog, p, read_committed=True)
        restore(blocking.open("o", p), dict(kafka_config), other, p, read_committed=True)

    stepped = StateManager(tmp_path / "stepped", "app")
    with ChangelogRestorer(dict(kafka_config), True, stepped) as restorer:
        for p in range(3):
            restorer.add("s", p, changelog)
            restorer.add("o", p, other)
        assert restorer.pending() == {0, 1, 2}
        with pytest.raises(StateError, match="already being restored"):
            restorer.add("s", 0, changelog)
        steps = _restore_all(restorer, 25)
        assert restorer.pending() == set()
    assert steps > (3 * 124) // 25  # really bounded: at most 25 records per step
    for p in range(3):
        for name in ("s", "o"):
            a, b = blocking.open(name, p), stepped.open(name, p)
            assert dict(a.items()) == dict(b.items())
            assert a.applied_changelog_offset() == b.applied_changelog_offset()
        assert dict(stepped.open("s", p).items()) == expected[p]
    assert dict(stepped.open("o", 1).items()) == {b"x": b"1", b"y": b"2"}
    assert stepped.open("o", 0).applied_changelog_offset() == -1  # empty partition: no-op
    blocking.close_all()
    stepped.close_all()


def test_remove_partition_mid_restore_keeps_a_consistent_prefix(
    kafka_config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    changelog = new_topic("changelog", partitions=2, config={"cleanup.policy": "compact"})
    entries = {p: [(f"k{i}".encode(), f"v{i}".encode()) for i in range(300)] for p in (0, 1)}
    for p, e in entries.items():
        _produce(kafka_config, changelog, p, e)
    mgr = StateManager(tmp_path, "app")
    with ChangelogRestorer(dict(kafka_config), False, mgr) as restorer:
        restorer.add("s", 0, changelog)
        restorer.add("s", 1, changelog)
        store1 = mgr.open("s", 1)
        while store1.applied_changelog_offset() < 0:  # until partition 1 has started
            assert not restorer.step(10)
        restorer.remove_partition(1)
        assert restorer.pending() <= {0}  # partition 0 may have finished first
        stopped_at = store1.applied_changelog_offset()
        assert 0 <= stopped_at < 299
        _restore_all(restorer, 50)
        assert store1.applied_changelog_offset() == stopped_at  # nothing more was applied
        # exactly the records up to the applied offset: a prefix, resumable
        assert dict(store1.items()) == dict(entries[1][: stopped_at + 1])
        assert dict(mgr.open("s", 0).items()) == dict(entries[0])
        restorer.add("s", 1, changelog)  # assigned again later: resumes where it stopped
        assert restorer.pending() == {1}
        _restore_all(restorer, 1000)
    assert dict(mgr.open("s", 1).items()) == dict(entries[1])
    assert mgr.open("s", 1).applied_changelog_offset() == 299
    mgr.close_all()


def test_log_start_above_the_applied_offset_is_read_from_the_log_start(
    kafka_config: dict[str, str], admin: AdminClient, new_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    """Compaction/retention removed records the store never applied: not an error, read on."""
    changelog = new_topic("changelog", partitions=1)
    entries: list[Entry] = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(10)]
    _produce(kafka_config, changelog, 0, entries)
    deleted = admin.delete_records([TopicPartition(changelog, 0, 6)], request_timeout=30)
    for future in deleted.values():
        future.result(timeout=30)
    mgr = StateManager(tmp_path, "app")
    store = mgr.open("s", 0)
    store.write_batch({b"k0": b"v0", b"k1": b"v1", b"k2": b"v2"}, 2)  # applied up to 2; low is 6
    assert restore(store, dict(kafka_config), changelog, 0, read_committed=True,
                   state_manager=mgr) == 4
    assert mgr.open("s", 0) is store  # not wiped
    assert dict(store.items()) == {b"k0": b"v0", b"k1": b"v1", b"k2": b"v2"} | dict(entries[6:])
    assert store.applied_changelog_offset() == 9
    mgr.close_all()


def test_a_failing_step_loses_nothing_of_the_other_partitions(
    kafka_config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    changelog = new_topic("changelog", partitions=2)  # not compacted: it takes a null key
    good: list[Entry] = [(f"k{i}".encode(), b"v") for i in range(50)]
    _produce(kafka_config, changelog, 0, good)
    p = Producer(dict(kafka_config))
    p.produce(changelog, key=b"ok", value=b"1", partition=1)
    p.produce(changelog, value=b"keyless", partition=1)  # not a changelog record: offset 1
    assert p.flush(30) == 0
    mgr = StateManager(tmp_path, "app")
    with ChangelogRestorer(dict(kafka_config), True, mgr) as restorer:
        restorer.add("s", 0, changelog)
        restorer.add("s", 1, changelog)
        failures = 0
        while 1 in restorer.pending():
            try:
                restorer.step(1000)
            except StateError as exc:
                assert exc.partition == 1 and "null key" in str(exc) and exc.topic == changelog
                failures += 1
                if failures == 2:  # it fails again on retry: give up on that partition
                    restorer.remove_partition(1)
        assert failures == 2
        _restore_all(restorer, 1000)
    assert dict(mgr.open("s", 0).items()) == dict(good)  # records fetched in failed steps too
    assert mgr.open("s", 1).applied_changelog_offset() <= 0
    mgr.close_all()
