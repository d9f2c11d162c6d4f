"""State of stateful operators: stores, the write-back cache, changelogs, restore, TTL.

See docs/state.md. The engine uses it as:
``StateManager.open`` -> restore from the changelog (``ChangelogRestorer`` stepped from the poll
loop, or the blocking ``restore``) -> ``WriteBackCache`` per store during processing -> at a
checkpoint ``dirty()`` to the changelog, then ``flush(last changelog offset)``.
"""

from headwater.state.cache import WriteBackCache
from headwater.state.changelog import (
    CHANGELOG_TOPIC_CONFIG,
    changelog_topic,
    ensure_changelog_topics,
    restore,
)
from headwater.state.errors import StateError, StoreLocked
from headwater.state.manager import StateManager
from headwater.state.restorer import ChangelogRestorer
from headwater.state.rocksdb import RocksDBStore
from headwater.state.store import NO_OFFSET, KeyValueStore, MemoryStore
from headwater.state.ttl import Clock, TtlCodec

__all__ = [
    "CHANGELOG_TOPIC_CONFIG",
    "ChangelogRestorer",
    "NO_OFFSET",
    "Clock",
    "KeyValueStore",
    "MemoryStore",
    "RocksDBStore",
    "StateError",
    "StoreLocked",
    "StateManager",
    "TtlCodec",
    "WriteBackCache",
    "changelog_topic",
    "ensure_changelog_topics",
    "restore",
]
