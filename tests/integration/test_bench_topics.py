"""The bench's topic creation returns only once every partition can be used."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient

from headwater.bench import kafka_io
from headwater.connectors.readiness import leaderless

pytestmark = pytest.mark.integration


@pytest.fixture
def bench_topics(admin: AdminClient, unique_name: Callable[[str], str]) -> Iterator[list[str]]:
    names = [unique_name(f"bench-{i}") for i in range(6)]
    yield names
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except Exception:  # noqa: BLE001 - cleanup must not mask the test's own result
            pass


def test_created_topics_answer_for_every_partition_at_once(
    kafka_config: dict[str, str], admin: AdminClient, bench_topics: list[str]
) -> None:
    # Before the wait probed each partition, watermarks asked for right after creation failed now
    # and then with NOT_LEADER_FOR_PARTITION although the metadata already showed every leader.
    for pair in (bench_topics[i:i + 2] for i in range(0, len(bench_topics), 2)):
        kafka_io.create_topics(kafka_config, pair, partitions=8)
        assert leaderless(admin.list_topics(timeout=30), pair) == []
        for topic in pair:
            assert kafka_io.end_offsets(kafka_config, topic) == {p: 0 for p in range(8)}
