"""The bench's topic creation returns only once every partition can be used."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient

from headwater.bench import kafka_io

pytestmark = pytest.mark.integration


@pytest.fixture
def bench_topics(admin: AdminClient, unique_name: Callable[[str], str]) -> Iterator[list[str]]:
    names = [unique_name("bench-a"), unique_name("bench-b")]
    yield names
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except Exception:  # noqa: BLE001 - cleanup must not mask the test's own result
            pass


def test_created_topics_have_a_leader_for_every_partition_at_once(
    kafka_config: dict[str, str], admin: AdminClient, bench_topics: list[str]
) -> None:
    kafka_io.create_topics(kafka_config, bench_topics, partitions=8)
    assert kafka_io.leaderless(admin.list_topics(timeout=30), bench_topics) == []
    for topic in bench_topics:  # watermarks, like producing, need every partition's leader
        assert kafka_io.end_offsets(kafka_config, topic) == {p: 0 for p in range(8)}
