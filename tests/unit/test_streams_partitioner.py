"""The Java clients' murmur2 key partitioner, as the driver routes repartition records."""

from __future__ import annotations

import pytest

from headwater.streams.partitioner import murmur2, partition_for

# Apache Kafka's own expectations for Utils.murmur2 (clients UtilsTest)
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), JAVA_VECTORS.items())
def test_murmur2_matches_the_java_clients(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_partition_is_the_positive_hash_modulo_the_partition_count() -> None:
    assert partition_for(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7
    assert {partition_for(k, 1) for k in JAVA_VECTORS} == {0}
    assert partition_for(None, 12) == 0


def test_keys_spread_over_all_partitions() -> None:
    hit = {partition_for(f"user-{i}".encode(), 4) for i in range(100)}
    assert hit == {0, 1, 2, 3}
