"""Oversized dead letters against the real broker: the topic's limit is read and respected, the
letter keeps its source coordinates, and replay re-reads the original from the source topic."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import headwater.cli
from headwater.connectors.dlq import (
    DeadLetter,
    DeadLetterDeliveryError,
    DeadLetterWriter,
    SourceReader,
    SourceRecordGone,
    dlq_size_limit,
    read_dead_letters,
)
from tests.integration.test_dlq import read_all

pytestmark = pytest.mark.integration

TOPIC_LIMIT = 20_000


def noise(n: int, seed: int = 1) -> bytes:
    """Incompressible bytes (lz4 cannot shrink them under the limit)."""
    return random.Random(seed).randbytes(n)


@pytest.fixture
def small_dlq(new_topic: Callable[..., str]) -> str:
    return new_topic("dlq", config={"max.message.bytes": str(TOPIC_LIMIT)})


def letter_for(source: str, offset: int, value: bytes, key: bytes = b"order-1") -> DeadLetter:
    return DeadLetter(key=key, value=value, headers=[("trace", b"abc")],
                      error_class="MalformedFraming", error_message="magic byte is 0x76",
                      source_topic=source, source_partition=0, source_offset=offset,
                      operator="decode", source_timestamp_ms=1_700_000_000_000)


def test_the_limit_is_the_smaller_of_the_topic_and_the_producer(
    admin: AdminClient, small_dlq: str, new_topic: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert dlq_size_limit(admin, small_dlq) == TOPIC_LIMIT
    assert "dead letters batched together can be refused" in caplog.text  # 1 MB batches
    assert dlq_size_limit(admin, small_dlq, {"message.max.bytes": "15000"}) == 15_000
    caplog.clear()
    assert dlq_size_limit(admin, new_topic("dlq")) == 1_000_000  # broker default 1048588
    assert caplog.text == ""


def test_an_oversized_letter_is_delivered_without_value_where_a_whole_one_is_refused(
    admin: AdminClient, small_dlq: str, kafka_config: dict[str, str]
) -> None:
    producer = Producer({**kafka_config, "compression.type": "lz4"})
    naive = DeadLetterWriter(producer, small_dlq, max_message_bytes=10**9)
    naive.send([letter_for("orders", 3, noise(30_000))])
    producer.flush(30)
    with pytest.raises(DeadLetterDeliveryError, match="too large"):
        naive.raise_for_delivery_errors()

    writer = DeadLetterWriter(producer, small_dlq,
                              max_message_bytes=dlq_size_limit(admin, small_dlq))
    near = TOPIC_LIMIT - 600  # fits raw, not with the metadata
    writer.send([letter_for("orders", 3, noise(30_000)), letter_for("orders", 4, noise(near)),
                 letter_for("orders", 5, b"\x76" * 100)])
    assert producer.flush(30) == 0
    writer.raise_for_delivery_errors()

    records = list(read_dead_letters(kafka_config, small_dlq, timeout_s=20))
    assert [(r.source_offset, r.dropped, r.value) for r in records] == [
        (3, {"value": 30_000}, None), (4, {"value": near}, None), (5, {}, b"\x76" * 100)]
    assert all(r.key == b"order-1" and r.headers == [("trace", b"abc")] for r in records)


def test_replay_re_reads_the_original_and_reports_what_is_gone(
    admin: AdminClient, new_topic: Callable[..., str], small_dlq: str,
    kafka_config: dict[str, str], kafka_bootstrap: str, capsys: pytest.CaptureFixture[str],
) -> None:
    source = new_topic("orders")
    producer = Producer(dict(kafka_config))
    originals = [b"\x76" * 30_000 + bytes([i]) for i in range(3)]
    for value in originals:
        producer.produce(source, value, b"order-1", headers=[("trace", b"abc")], timestamp=1_000)
    assert producer.flush(10) == 0
    writer = DeadLetterWriter(producer, small_dlq, max_message_bytes=TOPIC_LIMIT)
    writer.send([letter_for(source, i, v) for i, v in enumerate(originals)])
    assert producer.flush(10) == 0 and writer.trimmed == 3
    # offset 0 is deleted from the source, as retention would
    admin.delete_records([TopicPartition(source, 0, 1)])[TopicPartition(source, 0, 1)].result(30)

    with SourceReader(kafka_config) as reader:
        assert reader.fetch(source, 0, 2).value == originals[2]
        with pytest.raises(SourceRecordGone, match="partition now starts at offset 1"):
            reader.fetch(source, 0, 0)
        with pytest.raises(SourceRecordGone, match="ends at offset 3"):
            reader.fetch(source, 0, 3)

    target = new_topic("replayed")
    code = headwater.cli.main(["dlq", "replay", small_dlq, "--to", target,
                               "--bootstrap", kafka_bootstrap])
    out, err = capsys.readouterr()
    assert code == 1
    assert "replayed 2 of 3" in out and "2 re-read from their source" in out
    assert f"not replayable: {small_dlq}:0:0: written without its value; the source record " \
           f"{source}:0:0: deleted" in err
    replayed = read_all(kafka_config, target)
    assert sorted(m.value() for m in replayed) == originals[1:]
    assert all(m.key() == b"order-1" and m.headers()[0] == ("trace", b"abc") for m in replayed)


def test_the_largest_letter_the_estimate_allows_is_accepted_by_the_broker(
    admin: AdminClient, small_dlq: str, kafka_config: dict[str, str]
) -> None:
    producer = Producer({**kafka_config, "compression.type": "lz4", "linger.ms": 50})
    writer = DeadLetterWriter(producer, small_dlq, clock=lambda: 1_700_000_000.0,
                              max_message_bytes=TOPIC_LIMIT)
    low, high = 0, TOPIC_LIMIT
    while low < high:  # the largest value size kept whole
        mid = (low + high + 1) // 2
        _, _, _, dropped = writer.fit(letter_for("orders", 1, noise(mid)), 1_700_000_000_000)
        low, high = (mid, high) if not dropped else (low, mid - 1)
    assert TOPIC_LIMIT * 0.9 < low < TOPIC_LIMIT  # conservative, not absurdly so
    for i in (1, 2):  # one per batch: librdkafka batches up to its own batch.size (docs/dlq.md)
        writer.send([letter_for("orders", i, noise(low, seed=i))])
        assert producer.flush(30) == 0
    writer.raise_for_delivery_errors()
    records = list(read_dead_letters(kafka_config, small_dlq, timeout_s=20))
    assert [r.value for r in records] == [noise(low, seed=1), noise(low, seed=2)]
