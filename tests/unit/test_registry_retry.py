"""Transient registry failures are retried with bounded backoff and never become record errors;
only a real "not found" does."""

from __future__ import annotations

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from headwater.schemas import (
    AvroSerde,
    SchemaCache,
    SchemaRegistryRejected,
    SchemaRegistryUnavailable,
    SubjectNotFound,
    UnknownSchemaId,
)
from tests.unit.serde_support import ORDER_V1, FakeRegistry, encode, order


class FakeTime:
    """A monotonic clock that only moves when the cache sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def cache_over(registry: FakeRegistry, budget_ms: int = 30_000) -> tuple[SchemaCache, FakeTime]:
    time = FakeTime()
    return SchemaCache(registry, transient_retry_ms=budget_ms, clock=time.clock,
                       sleep=time.sleep), time


def registry_with_order(*failures: Exception) -> FakeRegistry:
    registry = FakeRegistry()
    registry.add(7, ORDER_V1, subject="orders-value")
    registry.fail_next = list(failures)
    return registry


TRANSIENT = [
    ConnectionError("[Errno 111] Connection refused"),
    TimeoutError("read timed out"),
    SchemaRegistryError(503, -1, "Service Unavailable"),
    SchemaRegistryError(500, 50001, "Error in the backend data store"),
    SchemaRegistryError(429, -1, "Too Many Requests"),
]


@pytest.mark.parametrize("failure", TRANSIENT, ids=type)
def test_transient_failures_are_retried_with_exponential_backoff_until_answered(
    failure: Exception,
) -> None:
    registry = registry_with_order(*[failure] * 4)
    cache, time = cache_over(registry)
    assert cache.writer(7).schema_id == 7
    assert registry.calls == [("get_schema", 7)] * 5
    assert time.sleeps == [0.05, 0.1, 0.2, 0.4]


def test_backoff_is_capped_and_the_budget_bounds_the_total_wait() -> None:
    registry = registry_with_order(*[ConnectionError("refused")] * 1000)
    cache, time = cache_over(registry, budget_ms=10_000)
    with pytest.raises(SchemaRegistryUnavailable, match=r"get schema 7: refused \(\d+ attempt"):
        cache.writer(7)
    assert max(time.sleeps) == 2.0
    assert time.now == pytest.approx(10.0)
    assert len(registry.calls) == len(time.sleeps) + 1


def test_an_outage_is_never_cached_as_an_unknown_id() -> None:
    registry = registry_with_order(*[ConnectionError("refused")] * 3)
    cache, _ = cache_over(registry, budget_ms=0)
    for _ in range(3):
        with pytest.raises(SchemaRegistryUnavailable):
            cache.writer(7)
    assert cache.writer(7).schema_id == 7  # asked again, not answered from a negative cache


def test_zero_budget_tries_once() -> None:
    registry = registry_with_order(ConnectionError("refused"))
    cache, time = cache_over(registry, budget_ms=0)
    with pytest.raises(SchemaRegistryUnavailable, match="1 attempt"):
        cache.writer(7)
    assert time.sleeps == [] and len(registry.calls) == 1


def test_not_found_is_unknown_at_once_and_negatively_cached() -> None:
    registry = registry_with_order()
    cache, time = cache_over(registry)
    for _ in range(2):
        with pytest.raises(UnknownSchemaId, match="Schema 99 not found"):
            cache.writer(99)
    assert registry.calls == [("get_schema", 99)] and time.sleeps == []


def test_other_refusals_are_not_record_errors_and_not_retried() -> None:
    registry = registry_with_order(SchemaRegistryError(401, 40101, "Unauthorized"))
    cache, time = cache_over(registry)
    with pytest.raises(SchemaRegistryUnavailable, match="Unauthorized"):
        cache.writer(7)
    assert time.sleeps == []


def test_latest_distinguishes_a_missing_subject_from_an_outage() -> None:
    registry = registry_with_order(SchemaRegistryError(502, -1, "Bad Gateway"))
    cache, time = cache_over(registry)
    assert cache.latest("orders-value").schema_id == 7
    assert time.sleeps == [0.05]
    with pytest.raises(SubjectNotFound) as info:
        cache.latest("nothing-value")
    assert isinstance(info.value, SchemaRegistryRejected) and info.value.http_status == 404
    registry.fail_next = [ConnectionError("refused")] * 100
    with pytest.raises(SchemaRegistryUnavailable, match="get latest of orders-value"):
        cache_over(registry, budget_ms=1_000)[0].latest("orders-value")


def test_register_retries_transient_failures() -> None:
    registry = registry_with_order(ConnectionError("refused"), ConnectionError("refused"))
    cache, time = cache_over(registry)
    assert cache.register("out-value", ORDER_V1) == 1000
    assert time.sleeps == [0.05, 0.1]


def test_a_batch_decoded_during_an_outage_raises_and_rejects_nothing() -> None:
    registry = registry_with_order(*[ConnectionError("refused")] * 50)
    cache, _ = cache_over(registry, budget_ms=2_000)
    serde = AvroSerde(cache)
    payloads = [encode(ORDER_V1, 7, order(i)) for i in range(40)]
    with pytest.raises(SchemaRegistryUnavailable):
        serde.decode_batch(payloads)
    registry.fail_next.clear()
    batch = serde.decode_batch(payloads)
    assert (batch.frame.height, batch.rejected) == (40, [])
