"""Dead letters larger than the DLQ topic allows are written without their largest parts, keep
their source coordinates, and are replayed from the source (or reported as not replayable)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from headwater.cli import dlq_cmd
from headwater.connectors.dlq import (
    HEADERS_DROPPED,
    REPLAYED_FROM,
    VALUE_DROPPED,
    VALUE_SIZE,
    DeadLetter,
    DeadLetterDeliveryError,
    DeadLetterWriter,
    SourceRecord,
    SourceRecordGone,
    estimated_message_size,
    parse_dead_letter,
    replay_dead_letters,
)
from tests.unit.test_dlq_writer_replay import FakeProducer

LIMIT = 20_000


def big(value: int = 50_000, key: int = 8, headers: int = 10, **fields: Any) -> DeadLetter:
    return DeadLetter(
        key=b"k" * key, value=b"v" * value, headers=[("trace", b"t" * headers)],
        error_class="MalformedFraming", error_message="magic byte is 0x76",
        source_topic="orders", source_partition=2, source_offset=77, operator="decode",
        source_timestamp_ms=1234, **fields)


def written(producer: FakeProducer, i: int = -1) -> Any:
    topic, kwargs = producer.produced[i]
    return parse_dead_letter(dlq_topic=topic, dlq_partition=0, dlq_offset=5, key=kwargs["key"],
                             value=kwargs["value"], headers=kwargs["headers"])


def writer_with(producer: FakeProducer) -> DeadLetterWriter:
    return DeadLetterWriter(producer, "app.dlq", max_message_bytes=LIMIT)  # type: ignore[arg-type]


def test_the_estimate_is_above_the_raw_bytes() -> None:
    headers = [("a", b"x" * 100), ("b", None)]
    raw = 3 + 1000 + 2 + 100
    assert estimated_message_size(b"abc", b"v" * 1000, headers) > raw + 61


def test_a_letter_that_fits_is_written_whole() -> None:
    producer = FakeProducer()
    writer = writer_with(producer)
    writer.send([big(value=10_000)])
    record = written(producer)
    assert record.value == b"v" * 10_000 and record.dropped == {} and not record.value_dropped
    assert writer.trimmed == 0


def test_an_oversized_value_is_dropped_and_the_source_coordinates_kept() -> None:
    producer = FakeProducer()
    writer = writer_with(producer)
    writer.send([big(value=LIMIT)])
    kwargs = producer.produced[0][1]
    assert kwargs["value"] is None and kwargs["key"] == b"k" * 8
    assert (VALUE_DROPPED, b"true") in kwargs["headers"]
    assert (VALUE_SIZE, b"%d" % LIMIT) in kwargs["headers"]
    assert estimated_message_size(kwargs["key"], kwargs["value"], kwargs["headers"]) <= LIMIT
    record = written(producer)
    assert record.value_dropped and record.dropped == {"value": LIMIT}
    assert (record.source_topic, record.source_partition, record.source_offset) == ("orders", 2, 77)
    assert record.headers == [("trace", b"t" * 10)] and record.error_class == "MalformedFraming"
    assert writer.trimmed == 1 and writer.counts == {"MalformedFraming": 1}


def test_the_largest_part_goes_first_so_a_small_value_survives_huge_headers() -> None:
    producer = FakeProducer()
    writer_with(producer).send([big(value=100, headers=LIMIT)])
    record = written(producer)
    assert record.dropped == {"headers": LIMIT + len("trace")}
    assert record.value == b"v" * 100 and record.headers == []
    assert (HEADERS_DROPPED, b"true") in producer.produced[0][1]["headers"]


def test_everything_droppable_goes_when_needed() -> None:
    producer = FakeProducer()
    writer_with(producer).send([big(value=LIMIT, key=LIMIT, headers=LIMIT)])
    assert set(written(producer).dropped) == {"value", "key", "headers"}
    assert producer.produced[0][1]["key"] is None


class RefusingProducer(FakeProducer):
    """Refuses messages with a value or key as librdkafka does above message.max.bytes."""

    def __init__(self, code: int = KafkaError.MSG_SIZE_TOO_LARGE) -> None:
        super().__init__()
        self.code = code

    def produce(self, topic: str, **kwargs: Any) -> None:
        if kwargs["value"] is not None or kwargs["key"] is not None:
            raise KafkaException(KafkaError(self.code))
        super().produce(topic, **kwargs)


def test_a_size_refusal_by_the_producer_writes_the_letter_without_its_parts() -> None:
    producer = RefusingProducer()
    writer = DeadLetterWriter(producer, "app.dlq")  # type: ignore[arg-type]
    writer.send([big(value=10)])  # fits the estimate, refused anyway
    assert set(written(producer).dropped) == {"value", "key", "headers"}
    assert writer.trimmed == 1


def test_other_producer_refusals_are_delivery_errors_naming_the_record() -> None:
    writer = DeadLetterWriter(RefusingProducer(KafkaError._INVALID_ARG), "app.dlq")  # type: ignore[arg-type]
    with pytest.raises(DeadLetterDeliveryError, match=r"orders:2:77"):
        writer.send([big(value=10)])


def test_a_size_delivery_error_explains_itself() -> None:
    producer = FakeProducer()
    writer = writer_with(producer)
    writer.send([big(value=10)])
    producer.produced[0][1]["on_delivery"](KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    with pytest.raises(DeadLetterDeliveryError, match=r"fits the 20000 bytes read when"):
        writer.raise_for_delivery_errors()


class FakeSource:
    def __init__(self, records: dict[tuple[str, int, int], SourceRecord]) -> None:
        self.records = records
        self.asked: list[tuple[str, int, int]] = []

    def __call__(self, topic: str, partition: int, offset: int) -> SourceRecord:
        self.asked.append((topic, partition, offset))
        if (topic, partition, offset) not in self.records:
            raise SourceRecordGone(f"{topic}:{partition}:{offset}", "deleted (the partition now "
                                   "starts at offset 90)")
        return self.records[(topic, partition, offset)]


def dropped_record(value: int = LIMIT) -> Any:
    producer = FakeProducer()
    writer_with(producer).send([big(value=value)])
    return written(producer)


ORIGINAL = SourceRecord(b"k" * 8, b"v" * LIMIT, [("trace", b"t" * 10)], 1234)


def test_replay_of_a_letter_without_value_republishes_the_original_from_the_source() -> None:
    producer = FakeProducer({"orders": 4})
    source = FakeSource({("orders", 2, 77): ORIGINAL})
    result = replay_dead_letters([dropped_record()], producer, "orders",  # type: ignore[arg-type]
                                 source=source)
    assert (result.replayed, result.from_source, result.not_replayable) == (1, 1, [])
    kwargs = producer.produced[0][1]
    assert (kwargs["key"], kwargs["value"], kwargs["partition"], kwargs["timestamp"]) == (
        ORIGINAL.key, ORIGINAL.value, 2, 1234)
    assert kwargs["headers"] == [("trace", b"t" * 10), (REPLAYED_FROM, b"app.dlq:0:5")]


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ({}, "the source record orders:2:77: deleted"),
        ({("orders", 2, 77): SourceRecord(b"k" * 8, b"other", [], 1)}, "is another one"),
        ({("orders", 2, 77): SourceRecord(b"x", b"v" * LIMIT, [], 1)}, "its key differs"),
    ],
)
def test_a_letter_whose_original_is_gone_or_different_is_reported_not_skipped(
    records: dict, reason: str
) -> None:
    producer = FakeProducer({"orders": 4})
    result = replay_dead_letters([dropped_record()], producer, "orders",  # type: ignore[arg-type]
                                 source=FakeSource(records))
    assert (result.replayed, result.skipped, producer.produced) == (0, 0, [])
    [(location, why)] = result.not_replayable
    assert location == "app.dlq:0:5" and "written without its value" in why and reason in why


def test_without_a_source_reader_a_letter_without_value_is_not_replayable() -> None:
    result = replay_dead_letters([dropped_record()], FakeProducer({"orders": 1}), "orders")  # type: ignore[arg-type]
    assert result.replayed == 0 and "no source reader" in result.not_replayable[0][1]


def test_a_dry_run_checks_the_source_too() -> None:
    source = FakeSource({})
    result = replay_dead_letters([dropped_record()], FakeProducer({"orders": 1}), "orders",  # type: ignore[arg-type]
                                 dry_run=True, source=source)
    assert source.asked == [("orders", 2, 77)] and len(result.not_replayable) == 1


def test_inspect_shows_what_was_left_out_and_where_the_original_is() -> None:
    block = dlq_cmd._block(dropped_record())
    assert f"  value:    (not in the dead letter: {LIMIT} bytes, too large for the DLQ; replay " \
           "re-reads it from orders:2:77)" in block
    assert '"dropped":{"value":20000}' in dlq_cmd._json_line(dropped_record())
