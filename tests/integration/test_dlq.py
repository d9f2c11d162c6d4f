"""Dead-letter queue against the real broker: write, read back, inspect, replay."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

import headwater.cli
from headwater.connectors.dlq import (
    REPLAYED_FROM,
    DeadLetter,
    DeadLetterTopicError,
    DeadLetterWriter,
    ensure_dlq_topic,
    read_dead_letters,
)

pytestmark = pytest.mark.integration

FIXED_NOW_S = 1_700_000_123.456


def letters() -> list[DeadLetter]:
    """Five dead letters: 3 x UnknownSchemaId from orders, 2 x ValueError from payments."""
    made = []
    for i in range(5):
        framed = i % 2 == 0
        made.append(DeadLetter(
            key=None if i == 4 else f"user-{i}".encode(),
            value=(b"\x00\x00\x00\x03\xe7" + bytes([i]) * 20) if framed else b"\xde\xad" + bytes([i]),
            headers=[("traceparent", f"00-{i:032x}-01".encode()), ("nullable", None)] if i else None,
            error_class="UnknownSchemaId" if framed else "ValueError",
            error_message=f"schema id 999 not registered ({i})" if framed else f"bad row {i}",
            source_topic="orders" if framed else "payments",
            source_partition=i % 3,
            source_offset=1000 + i,
            operator="decode" if framed else "map_rows:enrich",
            source_timestamp_ms=1_600_000_000_000 + i,
        ))
    return made


@pytest.fixture
def dlq(new_topic: Callable[..., str], kafka_config: dict[str, str]) -> str:
    """A 2-partition dead-letter topic holding :func:`letters`, written transactionally."""
    topic = new_topic("dlq", partitions=2)
    # random partitioner: spread the letters over both partitions
    producer = Producer({**kafka_config, "transactional.id": f"tx-{topic}", "partitioner": "random"})
    producer.init_transactions(30)
    producer.begin_transaction()
    writer = DeadLetterWriter(producer, topic, clock=lambda: FIXED_NOW_S)
    assert writer.send(letters()) == 5
    producer.commit_transaction(30)
    writer.raise_for_delivery_errors()
    assert writer.counts == {"UnknownSchemaId": 3, "ValueError": 2}
    await_commit_markers(kafka_config, topic)
    return topic


def await_commit_markers(kafka_config: dict[str, str], topic: str, timeout_s: float = 20) -> None:
    """Wait until the committed end (LSO) reaches the log end: commit markers are written
    asynchronously after ``commit_transaction`` returns."""
    clients = [Consumer({**kafka_config, "group.id": "t", "isolation.level": level})
               for level in ("read_committed", "read_uncommitted")]
    try:
        deadline = time.monotonic() + timeout_s
        partitions = clients[0].list_topics(topic, timeout=10).topics[topic].partitions
        while True:
            ends = [[c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                     for p in partitions] for c in clients]
            if ends[0] == ends[1]:
                return
            assert time.monotonic() < deadline, f"commit markers not visible: {ends}"
            time.sleep(0.05)
    finally:
        for c in clients:
            c.close()


@pytest.fixture
def cli(kafka_bootstrap: str) -> Callable[..., int]:
    """Run ``headwater <argv> --bootstrap <broker>`` in-process."""

    def run(*argv: str) -> int:
        return headwater.cli.main([*argv, "--bootstrap", kafka_bootstrap])

    return run


def read_all(kafka_config: dict[str, str], topic: str) -> list[Any]:
    """Every message of ``topic`` (partition 0..n, to the high watermark)."""
    consumer = Consumer({**kafka_config, "group.id": "t", "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps, ends = [], {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                tps.append(TopicPartition(topic, p, low))
                ends[p] = high
        consumer.assign(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 20
        while ends:
            assert time.monotonic() < deadline, f"timed out reading {topic}"
            for msg in consumer.consume(100, timeout=0.2):
                assert msg.error() is None
                out.append(msg)
                if msg.offset() >= ends.get(msg.partition(), 0) - 1:
                    ends.pop(msg.partition(), None)
        return out
    finally:
        consumer.close()


def committed_groups(admin: AdminClient, prefix: str) -> list[str]:
    groups = admin.list_consumer_groups().result(timeout=10).valid
    return [g.group_id for g in groups if g.group_id.startswith(prefix)]


def test_read_back_gives_exact_fields(dlq: str, kafka_config: dict[str, str]) -> None:
    records = list(read_dead_letters(kafka_config, dlq, timeout_s=20))
    assert len(records) == 5
    by_offset = {r.source_offset: r for r in records}
    for sent in letters():
        got = by_offset[sent.source_offset]
        assert got.is_dead_letter
        assert (got.key, got.value, got.headers) == (sent.key, sent.value, list(sent.headers or []))
        assert (got.error_class, got.error_message, got.operator) == (
            sent.error_class, sent.error_message, sent.operator)
        assert (got.source_topic, got.source_partition, got.source_timestamp_ms) == (
            sent.source_topic, sent.source_partition, sent.source_timestamp_ms)
        assert got.dead_lettered_at_ms == int(FIXED_NOW_S * 1000)
        assert got.dlq_topic == dlq and got.dlq_partition in (0, 1)
    assert len({(r.dlq_partition, r.dlq_offset) for r in records}) == 5


def test_read_limit_tail_and_missing_topic(dlq: str, kafka_config: dict[str, str],
                                           unique_name: Callable[[str], str]) -> None:
    assert len(list(read_dead_letters(kafka_config, dlq, limit=2))) == 2
    everything = list(read_dead_letters(kafka_config, dlq))
    per_partition: dict[int, list[int]] = {}
    for r in everything:
        per_partition.setdefault(r.dlq_partition, []).append(r.dlq_offset)
    for n in (1, 2):
        newest = list(read_dead_letters(kafka_config, dlq, limit=n, from_beginning=False))
        expected = sorted((p, o) for p, offs in per_partition.items() for o in sorted(offs)[-n:])
        assert sorted((r.dlq_partition, r.dlq_offset) for r in newest) == expected
    with pytest.raises(DeadLetterTopicError, match="does not exist"):
        list(read_dead_letters(kafka_config, unique_name("missing"), timeout_s=5))


def test_ensure_dlq_topic_is_idempotent(admin: AdminClient, unique_name: Callable[[str], str]) -> None:
    topic = unique_name("app") + ".dlq"
    try:
        assert ensure_dlq_topic(admin, topic, partitions=3, retention_ms=3_600_000) is True
        assert ensure_dlq_topic(admin, topic, partitions=3) is False
        meta = admin.list_topics(topic, timeout=10).topics[topic]
        assert len(meta.partitions) == 3
        config = admin.describe_configs([ConfigResource("topic", topic)])
        entries = next(iter(config.values())).result(timeout=10)
        assert entries["retention.ms"].value == "3600000"
        assert entries["cleanup.policy"].value == "delete"
    finally:
        admin.delete_topics([topic])


def test_inspect_lists_entries_and_summary(dlq: str, cli: Callable[..., int],
                                           capsys: pytest.CaptureFixture[str],
                                           admin: AdminClient) -> None:
    assert cli("dlq", "inspect", dlq) == 0
    out = capsys.readouterr().out
    assert out.count(f"{dlq}:") == 5
    assert "  source:   orders:0:1000  (record time 2020-09-13T12:26:40.000Z)" in out
    assert "  operator: map_rows:enrich" in out
    assert "  error:    ValueError: bad row 3" in out
    assert "Confluent framing: schema id 999" in out
    assert '  key:      "user-1"' in out and "  key:      (null)" in out
    assert "    hex:    de ad 03" in out
    assert f"5 of 5 entries read from {dlq} shown" in out
    assert "  UnknownSchemaId  3\n  ValueError       2\n" in out
    # inspection moves nothing: no group of ours committed anything
    assert committed_groups(admin, "headwater-dlq-inspect-") == []


def test_inspect_filters_and_limit(dlq: str, cli: Callable[..., int],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("dlq", "inspect", dlq, "--error-class", "ValueError") == 0
    out = capsys.readouterr().out
    assert out.count("  error:    ValueError") == 2 and "UnknownSchemaId" not in out
    assert cli("dlq", "inspect", dlq, "--source-topic", "orders", "--limit", "2") == 0
    out = capsys.readouterr().out
    assert out.count("  source:   orders:") == 2 and "2 of" in out


def test_inspect_json(dlq: str, cli: Callable[..., int], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("dlq", "inspect", dlq, "--json") == 0
    captured = capsys.readouterr()
    docs = [orjson.loads(line) for line in captured.out.splitlines()]
    assert len(docs) == 5
    sent = {s.source_offset: s for s in letters()}
    for doc in docs:
        original = sent[doc["source_offset"]]
        assert base64.b64decode(doc["value_b64"]) == original.value
        assert doc["error_class"] == original.error_class
        assert doc["schema_id"] == (999 if original.error_class == "UnknownSchemaId" else None)
    assert "5 of 5 entries" in captured.err  # the summary stays off stdout


def test_inspect_missing_topic_fails_in_one_line(cli: Callable[..., int], unique_name: Callable[[str], str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("dlq", "inspect", unique_name("nope"), "--timeout", "5") == 1
    err = capsys.readouterr().err
    assert err.startswith("headwater: dead-letter topic 'nope.") and "does not exist" in err
    assert err.count("\n") == 1


def test_replay_republishes_exact_originals(dlq: str, cli: Callable[..., int],
                                            new_topic: Callable[..., str],
                                            kafka_config: dict[str, str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    target = new_topic("replayed", partitions=3)
    assert cli("dlq", "replay", dlq, "--to", target, "--error-class", "UnknownSchemaId") == 0
    out = capsys.readouterr().out
    assert f"replayed 3 of 5 entries read from {dlq} to {target}; skipped 2" in out
    got = read_all(kafka_config, target)
    sent = {s.key: s for s in letters() if s.error_class == "UnknownSchemaId"}
    assert sorted(m.key() or b"" for m in got) == sorted(k or b"" for k in sent)
    for msg in got:
        original = sent[msg.key()]
        headers = msg.headers() or []
        assert msg.value() == original.value
        assert headers[:-1] == list(original.headers or [])
        name, origin = headers[-1]
        assert name == REPLAYED_FROM and origin.decode().startswith(f"{dlq}:")
        assert msg.timestamp()[1] == original.source_timestamp_ms


def test_replay_source_filter_limit_and_dry_run(dlq: str, cli: Callable[..., int],
                                                new_topic: Callable[..., str],
                                                kafka_config: dict[str, str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    target = new_topic("replayed")
    assert cli("dlq", "replay", dlq, "--to", target, "--dry-run") == 0
    assert "would replay 5 of 5" in capsys.readouterr().out
    assert cli("dlq", "replay", dlq, "--to", target, "--source-topic", "payments",
               "--limit", "1") == 0
    assert "replayed 1 of" in capsys.readouterr().out
    got = read_all(kafka_config, target)  # only the non-dry run wrote
    assert len(got) == 1
    assert got[0].value() in {s.value for s in letters() if s.source_topic == "payments"}


def test_replay_into_the_dlq_itself_terminates(dlq: str, cli: Callable[..., int],
                                               kafka_config: dict[str, str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("dlq", "replay", dlq, "--to", dlq) == 0
    assert "replayed 5 of 5" in capsys.readouterr().out
    records = list(read_dead_letters(kafka_config, dlq))
    assert len(records) == 10
    assert sum(not r.is_dead_letter for r in records) == 5  # the replayed originals
    # a second replay skips them (they carry no dead-letter metadata)
    assert cli("dlq", "replay", dlq, "--to", dlq, "--dry-run") == 0
    assert "would replay 5 of 10 entries" in capsys.readouterr().out


def test_replay_to_a_missing_topic_fails(dlq: str, cli: Callable[..., int],
                                         unique_name: Callable[[str], str],
                                         capsys: pytest.CaptureFixture[str],
                                         admin: AdminClient) -> None:
    target = unique_name("missing")
    assert cli("dlq", "replay", dlq, "--to", target) == 1
    assert f"headwater: replay target '{target}': does not exist" in capsys.readouterr().err
    assert target not in admin.list_topics(timeout=10).topics  # not auto-created


def test_replay_into_the_source_topic_restores_partitions(new_topic: Callable[..., str],
                                                          kafka_config: dict[str, str],
                                                          cli: Callable[..., int],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    source = new_topic("orders", partitions=3)
    dlq = new_topic("dlq")
    producer = Producer(dict(kafka_config))
    writer = DeadLetterWriter(producer, dlq)
    sent = [DeadLetter(key=b"same-key", value=b"v%d" % p, headers=None, error_class="E",
                       error_message="m", source_topic=source, source_partition=p,
                       source_offset=7, operator="decode") for p in range(3)]
    writer.send(sent)
    assert producer.flush(10) == 0
    assert cli("dlq", "replay", dlq, "--to", source) == 0
    assert "replayed 3 of 3" in capsys.readouterr().out
    got = read_all(kafka_config, source)
    # one key, yet each record is back on the partition it came from
    assert sorted((m.partition(), m.value()) for m in got) == [(p, b"v%d" % p) for p in range(3)]
