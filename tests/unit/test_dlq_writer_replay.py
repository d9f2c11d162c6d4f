"""DeadLetterWriter, replay and the inspect rendering against a fake producer (no broker)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from headwater.cli import dlq_cmd
from headwater.connectors.dlq import (
    ERROR_CLASS,
    REPLAYED_FROM,
    TIME,
    DeadLetter,
    DeadLetterDeliveryError,
    DeadLetterFilter,
    DeadLetterTopicError,
    DeadLetterWriter,
    dlq_headers,
    parse_dead_letter,
    replay_dead_letters,
)


class FakeProducer:
    """Records produce() calls; can refuse with BufferError or fail deliveries."""

    def __init__(self, topics: dict[str, int] | None = None, full_times: int = 0,
                 fail_delivery: bool = False, undelivered: int = 0) -> None:
        self.produced: list[tuple[str, dict[str, Any]]] = []
        self.topics = topics or {}
        self.full_times = full_times
        self.fail_delivery = fail_delivery
        self.undelivered = undelivered
        self.polls = 0
        self._callbacks: list[Any] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self.full_times:
            self.full_times -= 1
            raise BufferError("queue full")
        self.produced.append((topic, kwargs))
        self._callbacks.append(kwargs.get("on_delivery"))

    def poll(self, _timeout: float) -> int:
        self.polls += 1
        return self._serve()

    def flush(self, _timeout: float) -> int:
        self._serve()
        return self.undelivered

    def _serve(self) -> int:
        served = len(self._callbacks)
        for callback in self._callbacks:
            if callback is not None:
                callback("Broker: Message too large" if self.fail_delivery else None, None)
        self._callbacks.clear()
        return served

    def list_topics(self, topic: str, timeout: float) -> Any:
        parts = self.topics.get(topic)
        meta = None if parts is None else SimpleNamespace(
            error=None, partitions={p: None for p in range(parts)})
        return SimpleNamespace(topics={topic: meta} if meta else {})


def letter(i: int, error_class: str = "ValueError", source_topic: str = "orders") -> DeadLetter:
    return DeadLetter(
        key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"%d" % i)], error_class=error_class,
        error_message=f"bad {i}", source_topic=source_topic, source_partition=i % 2,
        source_offset=100 + i, operator="map_rows:enrich", source_timestamp_ms=1000 + i)


def as_record(sent: DeadLetter, offset: int):
    return parse_dead_letter(
        dlq_topic="app.dlq", dlq_partition=0, dlq_offset=offset, key=sent.key, value=sent.value,
        headers=dlq_headers(sent, 5000))


def test_writer_produces_originals_with_metadata_and_counts_per_class() -> None:
    producer = FakeProducer()
    writer = DeadLetterWriter(producer, "app.dlq", clock=lambda: 1_700_000_000.5)  # type: ignore[arg-type]
    assert writer.send([letter(0), letter(1, "UnknownSchemaId"), letter(2)]) == 3
    assert writer.send([]) == 0
    assert writer.counts == {"ValueError": 2, "UnknownSchemaId": 1}
    topic, kwargs = producer.produced[1]
    assert topic == "app.dlq"
    assert (kwargs["key"], kwargs["value"], kwargs["timestamp"]) == (b"k1", b"v1", 1_700_000_000_500)
    assert kwargs["headers"][0] == ("h", b"1")
    assert (ERROR_CLASS, b"UnknownSchemaId") in kwargs["headers"]
    assert (TIME, b"1700000000500") in kwargs["headers"]
    assert producer.polls == 0  # no flush, no poll: the engine flushes at checkpoint


def test_writer_waits_while_the_queue_is_full() -> None:
    producer = FakeProducer(full_times=3)
    writer = DeadLetterWriter(producer, "app.dlq")  # type: ignore[arg-type]
    assert writer.send([letter(0)]) == 1
    assert producer.polls == 3 and len(producer.produced) == 1


def test_writer_gives_up_when_the_queue_stays_full() -> None:
    producer = FakeProducer(full_times=10**9)
    writer = DeadLetterWriter(producer, "app.dlq", buffer_full_timeout_s=0.2)  # type: ignore[arg-type]
    with pytest.raises(DeadLetterDeliveryError, match="queue full"):
        writer.send([letter(0)])


def test_writer_reports_failed_deliveries_once() -> None:
    producer = FakeProducer(fail_delivery=True)
    writer = DeadLetterWriter(producer, "app.dlq")  # type: ignore[arg-type]
    writer.send([letter(0), letter(1)])
    writer.raise_for_delivery_errors()  # nothing reported yet
    producer.flush(1)
    assert writer.delivery_failures == 2
    with pytest.raises(DeadLetterDeliveryError, match="2 record.*Message too large") as info:
        writer.raise_for_delivery_errors()
    assert info.value.failed == 2 and info.value.topic == "app.dlq"
    writer.raise_for_delivery_errors()  # reset


def test_filter() -> None:
    record = as_record(letter(0, "E1", "orders"), 0)
    assert DeadLetterFilter()(record)
    assert DeadLetterFilter("E1", "orders")(record)
    assert not DeadLetterFilter("E2")(record)
    assert not DeadLetterFilter(source_topic="payments")(record)


def test_replay_publishes_originals_back_to_their_partition_with_original_time() -> None:
    producer = FakeProducer({"orders": 4, "other": 1})
    records = [as_record(letter(i), i) for i in range(3)]
    result = replay_dead_letters(records, producer, "orders")  # type: ignore[arg-type]
    assert (result.scanned, result.replayed, result.skipped) == (3, 3, 0)
    topic, kwargs = producer.produced[1]
    assert topic == "orders"
    assert (kwargs["key"], kwargs["value"]) == (b"k1", b"v1")
    assert kwargs["headers"] == [("h", b"1"), (REPLAYED_FROM, b"app.dlq:0:1")]
    assert (kwargs["partition"], kwargs["timestamp"]) == (1, 1001)


def test_replay_elsewhere_lets_the_partitioner_choose_and_can_restamp() -> None:
    producer = FakeProducer({"other": 1})
    replay_dead_letters([as_record(letter(1), 0)], producer, "other",  # type: ignore[arg-type]
                        keep_timestamps=False)
    kwargs = producer.produced[0][1]
    assert "partition" not in kwargs and "timestamp" not in kwargs


def test_replay_filters_limits_and_skips_foreign_messages() -> None:
    producer = FakeProducer({"orders": 2})
    foreign = parse_dead_letter(dlq_topic="app.dlq", dlq_partition=0, dlq_offset=9, key=None,
                                value=b"x", headers=None)
    records = [foreign] + [as_record(letter(i, "E1" if i % 2 else "E2"), i) for i in range(6)]
    seen: list[int] = []
    result = replay_dead_letters(records, producer, "orders",  # type: ignore[arg-type]
                                 select=DeadLetterFilter("E1"), limit=2,
                                 on_progress=lambda r: seen.append(r.scanned))
    assert [kw["key"] for _, kw in producer.produced] == [b"k1", b"k3"]
    assert (result.scanned, result.replayed, result.skipped) == (5, 2, 3)
    assert result.by_error_class == {"E1": 2}
    assert seen == [1, 2, 3, 4, 5]


def test_dry_run_publishes_nothing() -> None:
    producer = FakeProducer({"orders": 1})
    result = replay_dead_letters([as_record(letter(0), 0)], producer, "orders",  # type: ignore[arg-type]
                                 dry_run=True)
    assert result.replayed == 1 and producer.produced == []


def test_replay_to_a_missing_topic_is_an_error() -> None:
    with pytest.raises(DeadLetterTopicError, match="replay target 'nope': does not exist"):
        replay_dead_letters([], FakeProducer(), "nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"fail_delivery": True}, {"undelivered": 1}])
def test_replay_fails_when_not_delivered(kwargs: dict[str, Any]) -> None:
    producer = FakeProducer({"orders": 1}, **kwargs)
    with pytest.raises(DeadLetterDeliveryError, match="replay target 'orders': 1 record"):
        replay_dead_letters([as_record(letter(0), 0)], producer, "orders")  # type: ignore[arg-type]


def test_inspect_block_shows_source_error_and_framed_value() -> None:
    sent = DeadLetter(key=b"user-1", value=b"\x00\x00\x00\x03\xe7\x02hi",
                      headers=[("bin", b"\xff\x00")], error_class="UnknownSchemaId",
                      error_message="id 999\nnot registered", source_topic="orders",
                      source_partition=3, source_offset=10452, operator="decode",
                      source_timestamp_ms=0)
    block = dlq_cmd._block(as_record(sent, 12))
    assert block.startswith("app.dlq:0:12  1970-01-01T00:00:05.000Z\n")
    assert "  source:   orders:3:10452  (record time 1970-01-01T00:00:00.000Z)" in block
    assert "  operator: decode" in block
    assert "  error:    UnknownSchemaId: id 999\n            not registered" in block
    assert '  key:      "user-1"' in block
    assert "  value:    8 bytes, Confluent framing: schema id 999" in block
    assert "    hex:    00 00 00 03 e7 02 68 69" in block
    assert "    text:   ......hi" in block
    assert "  headers:  bin=0xff00" in block


def test_inspect_block_for_foreign_and_null_values() -> None:
    record = parse_dead_letter(dlq_topic="t", dlq_partition=1, dlq_offset=2, key=None,
                               value=None, headers=None)
    block = dlq_cmd._block(record)
    assert "no hw.dlq.* metadata" in block and "key:      (null)" in block
    assert "value:    (null)" in block


def test_json_line_round_trips_bytes() -> None:
    import base64

    sent = letter(3)
    doc = orjson.loads(dlq_cmd._json_line(as_record(sent, 4)))
    assert doc["dlq_offset"] == 4 and doc["error_class"] == "ValueError"
    assert base64.b64decode(doc["value_b64"]) == sent.value
    assert doc["key_text"] == "k3"
    assert doc["headers"] == [["h", base64.b64encode(b"3").decode()]]
    assert doc["dead_lettered_at"] == "1970-01-01T00:00:05.000Z"
