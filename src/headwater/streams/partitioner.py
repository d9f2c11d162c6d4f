"""The Java clients' default key partitioner (murmur2), for records the engine routes itself.

The worker's producer uses librdkafka's ``murmur2_random``, which is this function for non-null
keys; the in-process test driver routes repartition records with it, so a key lands on the same
partition as in production (and as with a JVM producer).
"""

from __future__ import annotations

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` as a signed 32-bit int (seed ``0x9747b28c``)."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    body = length & ~3
    for i in range(0, body, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[body + 2] << 16
        if rest >= 2:
            h ^= data[body + 1] << 8
        h ^= data[body]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes | None, partitions: int) -> int:
    """The partition the Java default partitioner picks for ``key`` (``None`` keys: 0 here;
    librdkafka picks a random partition for them)."""
    if key is None:
        return 0
    return (murmur2(key) & 0x7FFFFFFF) % partitions
